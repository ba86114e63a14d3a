"""The kinds a layer's ops are counted in, shared by the cost-model graph and the module's trace.

A layer runs two sorts of ops: launched kernels, which read and write device memory, and host-only
ops (views, transposes, reshapes that alias, expands), which change a tensor's metadata and cost
only host time. Kernels are counted by kind (``KINDS``), host-only ops as ``VIEW``. Each kind has
a host cost class (``HOST_CLASS``): what the host pays to issue one op of it. The layer's Python also
calls modules (``CALL``: the layer itself, each ``nn.Linear``, ...): no aten op, host time only.

| kind        | aten ops (overload packets; ``ATEN_KINDS`` has them all)       | host class  |
| ----------- | -------------------------------------------------------------- | ----------- |
| view        | view, _unsafe_view, t, transpose, permute, expand, slice, ...  | view        |
| matmul      | mm, bmm, addmm, baddbmm                                        | matmul      |
| conv        | convolution, convolution_backward                              | matmul      |
| sdpa        | _scaled_dot_product_* and their backwards                      | sdpa        |
| index       | gather, index, index_select                                    | index       |
| scatter     | scatter, scatter_add, index_put, index_add, index_copy         | index       |
| topk        | topk, sort                                                     | index       |
| softmax     | _softmax, _safe_softmax, _softmax_backward_data                | elementwise |
| scan        | cumsum                                                         | elementwise |
| reduction   | sum, mean, amax, max, norm                                     | elementwise |
| copy        | clone, copy_, _to_copy, cat, stack, slice_backward             | elementwise |
| elementwise | add, mul, div, exp, where, masked_fill (any pointwise op)      | elementwise |
| fill        | zeros, empty, full, arange, ones, fill_, randn_like            | elementwise |
| other       | anything else, listed by name                                  | elementwise |
| call        | (not an aten op) an ``nn.Module`` call: the layer, each Linear | call        |

The graph side (``graph_kind``): a fused attention kernel is ``sdpa``; any other kernel takes the
kind of its op (``GRAPH_KINDS``), and the gradient of a gather is a scatter. A graph's host-only ops
(``Graph.views``) count as views, its module calls (``Graph.calls``) as calls; the autograd engine's
op of a training graph (``Graph.autograd``, ``AUTOGRAD``) is priced but not compared: the trace has no
op of it (``add_backward`` counts its nodes). Plain Python: no torch here (the profiler imports this
table).
"""

from dataclasses import dataclass, field
from typing import Optional

from .analysis import BACKWARD_PREFIX, Kernel, analyse
from .graph import Graph

VIEW = "view"
CALL = "call"  # a module's __call__ (nn.Module): host time only, no aten op
AUTOGRAD = "autograd"  # the backward call and the autograd nodes it runs (their count: Graph.autograd)
HOST_ONLY = (VIEW, CALL, AUTOGRAD)
OTHER = "other"
KINDS = ("matmul", "sdpa", "softmax", "topk", "index", "scatter", "scan", "reduction", "copy", "elementwise",
         "fill", "conv", OTHER)
HOST_CLASSES = (VIEW, "elementwise", "matmul", "sdpa", "index", CALL, AUTOGRAD)
HOST_CLASS = {VIEW: VIEW, CALL: CALL, AUTOGRAD: AUTOGRAD, "matmul": "matmul", "conv": "matmul", "sdpa": "sdpa",
              "index": "index", "scatter": "index", "topk": "index", **{k: "elementwise" for k in (
                  "softmax", "scan", "reduction", "copy", "elementwise", "fill", OTHER)}}
BYTES_TOLERANCE = 0.02  # graph and trace bytes of a kind agree within this share of the graph's

# aten overload packets by kind. Views are recognised by their schema in the profiler (an alias
# without a write); VIEW lists them too, with the metadata-only ops their schema does not mark.
ATEN_KINDS = {
    VIEW: ("view", "_unsafe_view", "_reshape_alias", "reshape", "t", "transpose", "permute", "expand",
           "expand_as", "slice", "select", "narrow", "unsqueeze", "squeeze", "split", "split_with_sizes",
           "unbind", "chunk", "alias", "detach", "as_strided", "diagonal", "unfold", "lift_fresh",
           "view_as", "view_as_real", "view_as_complex", "movedim", "t_", "transpose_", "squeeze_",
           "unsqueeze_", "as_strided_"),
    "matmul": ("mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "linear", "dot", "mv", "addmv", "_int_mm"),
    "conv": ("convolution", "_convolution", "conv1d", "conv2d", "convolution_backward", "_conv_depthwise2d",
             "mkldnn_convolution"),
    "sdpa": ("_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_fused_attention_overrideable", "_flash_attention_forward",
             "_efficient_attention_forward", "_scaled_dot_product_flash_attention_backward",
             "_scaled_dot_product_flash_attention_for_cpu_backward",
             "_scaled_dot_product_efficient_attention_backward", "_scaled_dot_product_cudnn_attention_backward",
             "_scaled_dot_product_fused_attention_overrideable_backward", "_flash_attention_backward",
             "_efficient_attention_backward"),
    "softmax": ("_softmax", "_safe_softmax", "_log_softmax", "_softmax_backward_data",
                "_log_softmax_backward_data"),
    "topk": ("topk", "sort", "kthvalue"),
    "index": ("gather", "index", "index_select", "take", "embedding"),
    "scatter": ("scatter", "scatter_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_",
                "index_put", "index_put_", "_index_put_impl_", "index_add", "index_add_", "index_copy",
                "index_copy_", "index_fill", "index_fill_", "masked_scatter", "embedding_dense_backward"),
    "scan": ("cumsum", "cumsum_", "cumprod", "cummax", "cummin", "_cummax_helper", "_cummin_helper",
             "logcumsumexp"),
    "reduction": ("sum", "mean", "amax", "amin", "max", "min", "norm", "linalg_vector_norm", "prod", "var",
                  "std", "var_mean", "std_mean", "argmax", "argmin", "any", "all", "logsumexp", "aminmax"),
    "copy": ("clone", "copy_", "_to_copy", "_copy_from", "_copy_from_and_resize", "cat", "stack",
             "slice_backward", "select_backward", "constant_pad_nd", "repeat", "flip", "roll", "lift_fresh_copy",
             "expand_copy", "view_copy", "permute_copy", "transpose_copy", "unfold_backward"),
    "fill": ("zeros", "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full",
             "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "arange", "fill_", "zero_",
             "scalar_tensor", "randn", "randn_like", "rand", "rand_like", "normal_", "uniform_", "eye",
             "linspace"),
    "elementwise": ("add", "sub", "rsub", "mul", "div", "neg", "exp", "log", "relu", "where", "masked_fill",
                    "threshold_backward", "tril", "triu", "eq", "ne", "lt", "le", "gt", "ge", "pow", "sqrt",
                    "rsqrt", "abs", "maximum", "minimum", "clamp", "clamp_min", "sigmoid", "tanh", "silu",
                    "gelu", "reciprocal", "logical_and", "logical_or", "logical_not", "bitwise_and", "sign",
                    "lerp", "addcmul", "addcdiv", "square", "sigmoid_backward", "tanh_backward", "gelu_backward",
                    "silu_backward", "sin", "cos"),
}
ATEN_KIND = {name: kind for kind, names in ATEN_KINDS.items() for name in names}
# in-place ops that overwrite their tensor without reading it
WRITE_ONLY = frozenset(("copy_", "fill_", "zero_", "normal_", "uniform_"))

# Kind of a graph op (``Op.kind``) that runs as a kernel of its own.
GRAPH_KINDS = {"matmul": "matmul", "conv": "conv", "softmax": "softmax", "topk": "topk", "gather": "index",
               "scan": "scan", "reduction": "reduction", "copy": "copy", "elementwise": "elementwise", "fill": "fill",
               VIEW: VIEW, CALL: CALL, AUTOGRAD: AUTOGRAD}
_BACKWARD_KINDS = {"index": "scatter"}  # the gradient of a gather adds into the rows it read


def aten_kind(name: str, pointwise: bool = False) -> str:
    """The kind of an aten op by its overload packet name (``"mm"``, ``"add_"``): the table, then its
    out-of-place name, then ``elementwise`` for an op torch tags pointwise, else ``other``."""
    kind = ATEN_KIND.get(name) or (ATEN_KIND.get(name[:-1]) if name.endswith("_") else None)
    if kind is not None:
        return kind
    return "elementwise" if pointwise else OTHER


def graph_kind(kernel: Kernel) -> str:
    """The kind of one kernel of ``analysis.analyse``: ``sdpa`` for a fused attention kernel, else its
    first op's kind that is not element-wise (the gradient of a gather: ``scatter``)."""
    if kernel.kind == "attention":
        return "sdpa"
    op = next((o for o in kernel.ops if o.kind != "elementwise"), kernel.ops[0])
    kind = GRAPH_KINDS.get(op.kind, OTHER)
    if op.name.startswith(BACKWARD_PREFIX):
        kind = _BACKWARD_KINDS.get(kind, kind)
    return kind


# -- summaries and their comparison --------------------------------------------------------

@dataclass(slots=True)
class KindTotal:
    """Kernels of one kind: how many, and the bytes they read and write."""

    count: int = 0
    bytes: float = 0.0


@dataclass
class OpSummary:
    """A layer's ops counted by kind: launched kernels (``kernels``: kind -> KindTotal), host-only
    ops (``views``), module calls (``calls``), and the names of the ops of kind ``other``."""

    kernels: dict = field(default_factory=dict)
    views: int = 0
    other: dict = field(default_factory=dict)
    calls: int = 0

    def add(self, kind: str, nbytes: float = 0.0, name: str = "", count: int = 1) -> None:
        """Count ``count`` ops of ``kind`` moving ``nbytes`` in all (a view or a call moves none)."""
        if kind == VIEW:
            self.views += count
            return
        if kind == CALL:
            self.calls += count
            return
        total = self.kernels.setdefault(kind, KindTotal())
        total.count += count
        total.bytes += nbytes
        if kind == OTHER:
            self.other[name] = self.other.get(name, 0) + 1

    @property
    def kernel_count(self) -> int:
        return sum(t.count for t in self.kernels.values())

    def model_dump(self) -> dict:
        return {"kernels": {k: {"count": t.count, "bytes": t.bytes} for k, t in self.kernels.items()},
                "views": self.views, "calls": self.calls, "other": dict(self.other)}


def graph_summary(g: Graph) -> OpSummary:
    """The kernels of ``g`` (``analysis.analyse``, fused bytes) counted by ``graph_kind``; its host-only
    ops (``Op.kind`` "view", "call") as views and module calls."""
    out = OpSummary()
    for k in analyse(g).kernels:
        kind = graph_kind(k)
        if kind == AUTOGRAD:  # no op of the trace's: the engine's nodes are counted by rule (Graph.autograd)
            continue
        if kind in HOST_ONLY:
            out.add(kind, count=int(k.ops[0].elems))
        else:
            out.add(kind, k.bytes, k.name)
    return out


@dataclass(slots=True)
class KindRow:
    """One kind in the graph and in the trace (the ``view`` row counts host-only ops, 0 bytes)."""

    kind: str
    graph_count: int
    trace_count: int
    graph_bytes: float
    trace_bytes: float
    tolerance: float = BYTES_TOLERANCE

    @property
    def bytes_diff(self) -> Optional[float]:
        """(trace - graph) / graph; None where the graph has no bytes of this kind."""
        return (self.trace_bytes - self.graph_bytes) / self.graph_bytes if self.graph_bytes else None

    @property
    def agree(self) -> bool:
        """The same count, and bytes within ``tolerance`` of the graph's."""
        if self.graph_count != self.trace_count:
            return False
        diff = self.bytes_diff
        return self.trace_bytes == 0 if diff is None else abs(diff) <= self.tolerance

    def model_dump(self) -> dict:
        return {"kind": self.kind, "graph_count": self.graph_count, "trace_count": self.trace_count,
                "graph_bytes": self.graph_bytes, "trace_bytes": self.trace_bytes, "agree": self.agree}


@dataclass
class OpComparison:
    """A layer's graph beside its trace, kind by kind (``KINDS`` order, then ``view``)."""

    rows: list

    @property
    def agree(self) -> bool:
        return all(r.agree for r in self.rows)

    @property
    def disagreements(self) -> list:
        return [r for r in self.rows if not r.agree]


def compare(graph: OpSummary, trace: OpSummary, tolerance: float = BYTES_TOLERANCE) -> OpComparison:
    """Every kind that either side has, and the view row, graph beside trace."""
    rows = []
    for kind in KINDS:
        a, b = graph.kernels.get(kind), trace.kernels.get(kind)
        if a is None and b is None:
            continue
        a, b = a or KindTotal(), b or KindTotal()
        rows.append(KindRow(kind, a.count, b.count, a.bytes, b.bytes, tolerance))
    rows.append(KindRow(VIEW, graph.views, trace.views, 0.0, 0.0, tolerance))
    rows.append(KindRow(CALL, graph.calls, trace.calls, 0.0, 0.0, tolerance))
    return OpComparison(rows)
