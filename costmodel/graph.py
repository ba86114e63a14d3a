"""An attention layer as an ordered list of ops over named tensors.

Each variant builds a ``Graph``: tensors (inputs, weights, KV cache, activations) and the ops that
read and write them, each op tagged with the kernel (fused group) it runs in. Everything else is
derived from it in one place (``analysis.py``): FLOPs, bytes moved, peak live memory for the unfused
path (every op writes its output to memory) and for the fused one (tensors that never leave a
kernel never touch memory), and the backward pass for ``train``.
"""

from dataclasses import dataclass, field
from typing import Literal, Optional

from .units import ELEMENT_FLOPS, INDEX_BYTES

Role = Literal["input", "weight", "buffer", "cache", "act", "index", "wgrad", "view"]  # view: of another tensor
ACTIVATION_ROLES = frozenset(("input", "act", "index"))  # what counts as activation memory
Part = Literal["proj", "core", "other"]

_KIND_OF = {
    "softmax": "softmax",
    "topk": "topk",
    "gather": "gather",
    "cumsum": "scan",
    "mean": "reduction",
    "max": "reduction",
    "square_sum": "reduction",
    "copy": "copy",
}


@dataclass(slots=True)
class Tensor:
    name: str
    elems: float
    itemsize: int
    role: Role
    nbytes: float = 0.0

    def __post_init__(self):
        self.nbytes = self.elems * self.itemsize


@dataclass(slots=True)
class Op:
    """One operation. ``flops`` include the 2 x ``macs`` of matmul-like ops; ``mm`` is
    (batch, m, k, n) for matmuls; ``fn`` is the ELEMENT_FLOPS key of non-matmul ops."""

    name: str
    kind: str
    part: Part
    flops: float
    macs: float
    reads: tuple
    out: str
    kernel: str
    out_elems: float
    mm: Optional[tuple] = None
    fn: Optional[str] = None
    recompute: bool = False  # recomputed (not saved) by the backward of its fused kernel
    fraction: float = 1.0  # share of the dense work done (causal fused kernels skip masked tiles)
    elems: float = 0.0  # elements processed by a non-matmul op
    row: float = 0.0  # elements per row of a row-wise op (softmax, topk: its candidates); 0: timing.row_lengths
    grad_copy: tuple = ()  # positions of the reads whose gradient autograd copies back into their tensor's layout
    backward: str = ""  # autograd's formula where ``fn`` covers several ops: "sub" (a - b), "sub_alpha"
    # (torch.sub(a, b, alpha=c)), "sum" (a mean's sum), "sum_kept" (a sum keeping its dimension), "pass"
    # (the gradient itself: a scan along a dimension of one element); of a matmul, "bmm": batched operands;
    # of a group of views, "none": their backward runs no view
    group: float = 1.0  # of an attention matmul: the query heads whose rows it runs over one K/V head


@dataclass(slots=True)
class Graph:
    itemsize: int
    tensors: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    kv_per_token: float = 0.0  # cache elements per token per sequence
    kv_tokens: float = 0.0  # tokens the cache holds per sequence
    kv_fixed: float = 0.0  # cache (recurrent state) elements per sequence, independent of T

    def kv_cache(self, *, per_token: float = 0.0, tokens: float = 0.0, fixed: float = 0.0) -> None:
        """Declare what the layer keeps between decode steps, per sequence."""
        self.kv_per_token, self.kv_tokens, self.kv_fixed = per_token, tokens, fixed

    # -- tensors -------------------------------------------------------------------------
    def _add(self, name: str, elems: float, role: Role, itemsize: Optional[int] = None) -> str:
        if name in self.tensors:
            raise ValueError(f"tensor {name!r} defined twice")
        self.tensors[name] = Tensor(name, elems * 1.0, itemsize or self.itemsize, role)  # float(elems), traceable
        return name

    def input(self, name: str, elems: float) -> str:
        return self._add(name, elems, "input")

    def weight(self, name: str, elems: float, trainable: bool = True) -> str:
        return self._add(name, elems, "weight" if trainable else "buffer")

    def cache(self, name: str, elems: float) -> str:
        """A KV cache (or recurrent state) read by a decode step; reported apart from activations."""
        return self._add(name, elems, "cache")

    def output(self, name: str) -> str:
        self.outputs.append(name)
        return name

    # -- ops -----------------------------------------------------------------------------
    def matmul(self, name, a, b, *, batch=1, m, k, n, part: Part = "core", kernel=None,
               fraction=1.0, recompute=False, grad_copy=(), group=1) -> str:
        """(batch x) (m x k) @ (k x n): 2*batch*m*k*n*fraction FLOPs, output batch*m*n. ``grad_copy``:
        the inputs (0: a, 1: b) read through a view their gradient, written in this op's layout, cannot
        be viewed back through (a head view of a token-major tensor): autograd copies it. ``group``: of
        an attention kernel's scores, the query heads (sharing one K/V head) whose rows ``m`` counts."""
        macs = batch * m * k * n * fraction
        out_elems = batch * m * n
        self._add(name, out_elems, "act")
        self.ops.append(Op(name, "matmul", part, 2.0 * macs, macs, (a, b), name, kernel or name,
                           out_elems, (batch, m, k, n), None, recompute, fraction, grad_copy=tuple(grad_copy),
                           group=group))
        return name

    def conv(self, name, x, w, *, macs, out_elems, part: Part = "core", kernel=None) -> str:
        """A convolution (depthwise: no tensor cores), counted as 2 x its MACs."""
        self._add(name, out_elems, "act")
        self.ops.append(Op(name, "conv", part, 2.0 * macs, macs, (x, w), name, kernel or name,
                           out_elems, (1, out_elems, macs / out_elems, 1)))
        return name

    def elementwise(self, name, fn, reads, *, elems, out_elems=None, part: Part = "core",
                    kernel=None, recompute=False, index_out=False, grad_copy=(), backward="") -> str:
        """A non-matmul op: ELEMENT_FLOPS[fn] FLOPs per processed element (``elems``); ``grad_copy``
        as in ``matmul``, ``backward`` as ``Op.backward``."""
        out_elems = elems if out_elems is None else out_elems
        if index_out:
            self._add(name, out_elems, "index", INDEX_BYTES)
        else:
            self._add(name, out_elems, "act")
        self.ops.append(Op(name, _KIND_OF.get(fn, "elementwise"), part, ELEMENT_FLOPS[fn] * elems,
                           0.0, tuple(reads), name, kernel or name, out_elems, None, fn, recompute, 1.0, elems,
                           grad_copy=tuple(grad_copy), backward=backward))
        return name

    def calls(self, name: str, count: int = 1, part: Part = "other") -> str:
        """``count`` module calls (``nn.Module.__call__``: the layer, an ``nn.Linear``): no kernel, no
        bytes, only the host time of the call in eager mode. One op stands for all ``count``."""
        return self._host_only(name, "call", count, part)

    def views(self, name: str, count: int = 1, part: Part = "other") -> str:
        """``count`` host-only ops (views, transposes, reshapes that alias, expands): no kernel, no
        bytes, only the host time of issuing them in eager mode. One op stands for all ``count``."""
        return self._host_only(name, "view", count, part)

    def autograd(self, name: str, nodes: int) -> str:
        """The backward call, whose engine runs ``nodes`` autograd nodes (one per forward op the
        gradient flows through, view or kernel, and one per leaf: ``analysis.add_backward`` counts
        them): no kernel, no bytes, the engine's host time in eager mode beyond the ops it runs."""
        return self._host_only(name, "autograd", nodes, "other")

    def _host_only(self, name: str, kind: str, count: int, part: Part) -> str:
        self._add(name, 0.0, "act")
        self.ops.append(Op(name, kind, part, 0.0, 0.0, (), name, name, 0.0, None, None, False, 1.0, float(count)))
        return name

    # -- derived sizes -------------------------------------------------------------------
    def op_bytes(self, op: Op) -> tuple:
        """(bytes read, bytes written) of one op run on its own."""
        t = self.tensors
        return sum(t[r].nbytes for r in op.reads), t[op.out].nbytes
