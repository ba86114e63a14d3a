"""FLOPs of a profiler module by two independent counters, checked against the cost model.

fvcore (FlopCountAnalysis, 0.1.5) traces the forward with torch.jit and applies a handle per op.
attncost registers its own handles (``fvcore_handles``) for every op its modules run, because
fvcore has none for ``scaled_dot_product_attention``, softmax, exp, div, cumsum, topk, ...
(reported as "unsupported") and counts ``masked_fill``, ``relu``, ``max`` as 0 with no warning
(its ignore list). Units, one per key of fvcore's per-op totals:
- matmul-like keys (``MAC_KEYS``: linear, matmul, mm, bmm, addmm, baddbmm, einsum, conv and
  SDPA's two products) are multiply-accumulates, fvcore's own unit: converted to FLOPs with
  ``units.macs_to_flops`` (x 2), explicitly, in ``_fvcore_flops``;
- every other key is already FLOPs: elements x ``units.ELEMENT_FLOPS[fn]`` of the cost model's
  table (one source of truth), elements being the op's output (element-wise ops) or its input
  (reductions: sum, mean, amax, max; topk: one comparison per candidate);
- data movement (gather, index, pad, cat, copies, views) is 0, as in the cost model.
SDPA is counted as the cost model counts a fused kernel: both products over the (query, key)
pairs it computes (half of the dense square when ``is_causal``, T*w - w^2/2 for a band mask of
width w, the mask's True entries for any other mask; GQA counts every query head), plus
scale and softmax per computed pair. Whatever op still has no handle is listed
(``unsupported_ops``), never dropped silently.

FlopCounterMode (torch.utils.flop_counter) is the second opinion: it counts matmul-like ops only
(mm, bmm, addmm, baddbmm, convolution, SDPA), as 2 x MACs, forward and backward. Its SDPA formula
counts the dense square (it ignores ``is_causal`` and masks), and torch 2.13's CPU build has no
formula for ``_scaled_dot_product_flash_attention_for_cpu`` (it would count 0): attncost passes
one (the same dense formula torch uses for the CUDA kernels) through ``custom_mapping``. So
FlopCounterMode is compared with the analytic matmul FLOPs counted dense (``analytic_matmul_dense``:
every fused core at fraction 1); the ops it never counts are listed (``flop_counter_skipped``).
"""

import math
import warnings
from collections import Counter
from typing import Optional

from pydantic import BaseModel, Field

from ..costmodel.analysis import MATMUL_KINDS
from ..costmodel.results import Counts
from ..costmodel.shape import Shape
from ..costmodel.units import CAUSAL_FUSED_FRACTION, ELEMENT_FLOPS, macs_to_flops
from ..costmodel.variants.base import causal_pairs

REL_TOL = 1e-9

# -- categories: how analytic ops and counted aten ops line up ---------------------------------
CATEGORIES = ("matmul", "softmax", "mask", "elementwise", "reduction", "scan", "topk", "movement")

# FLOPs of a composite cost-model function, split by the category of the aten ops that do them
_FN_SPLIT = {
    "square_sum": {"elementwise": 1, "reduction": 1},  # x*x, sum
    "feature_map": {"elementwise": 4, "reduction": 1},  # sub |x|^2/2, max, sub, exp, scale
    "feature_map_fixed": {"elementwise": 4},  # sub |x|^2/2, sub the state's stabiliser, exp, scale
}
_FN_CATEGORY = {
    "scale": "elementwise", "mask": "mask", "softmax": "softmax", "exp": "elementwise",
    "relu": "elementwise", "add": "elementwise", "mul": "elementwise", "div": "elementwise", "addcmul": "elementwise",
    "rope": "elementwise", "mean": "reduction", "cumsum": "scan", "topk": "topk",
    "gather": "movement", "copy": "movement", "offset": "movement", "max": "reduction", "pinv_update": "elementwise",
}

# fvcore per-op keys (as the handles below name them) -> category; MAC_KEYS are in MACs
MAC_KEYS = frozenset(("linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "einsum", "conv",
                      "scaled_dot_product_attention"))
_KEY_CATEGORY = {
    "softmax": "softmax", "scaled_dot_product_attention:softmax": "softmax",
    "masked_fill": "mask", "where": "mask",
    "scaled_dot_product_attention:scale": "elementwise",
    "sum": "reduction", "mean": "reduction", "amax": "reduction", "amin": "reduction", "max": "reduction",
    "cumsum": "scan", "topk": "topk",
}
for _k in ("mul", "div", "add", "sub", "rsub", "addcmul", "exp", "relu", "neg", "reciprocal", "maximum", "minimum"):
    _KEY_CATEGORY[_k] = "elementwise"


def fn_categories(fn: str) -> dict:
    """{category: share} of a cost-model function's FLOPs (shares sum to 1)."""
    split = _FN_SPLIT.get(fn)
    if split:
        total = sum(split.values())
        return {c: v / total for c, v in split.items()}
    return {_FN_CATEGORY.get(fn, "other"): 1.0}


def key_category(key: str) -> str:
    return "matmul" if key in MAC_KEYS else _KEY_CATEGORY.get(key, "other")


# -- the analytic side ------------------------------------------------------------------------
class Analytic(BaseModel):
    flops: float
    matmul: float
    matmul_dense: float  # every matmul at fraction 1: what FlopCounterMode's SDPA formula counts
    categories: dict


def analytic_counts(g) -> Analytic:
    """Totals of a cost-model graph, by category."""
    cats: dict = {}
    total = mm = dense = 0.0
    for op in g.ops:
        total += op.flops
        if op.kind in MATMUL_KINDS:
            mm += op.flops
            dense += op.flops / op.fraction if op.fraction else 0.0
            cats["matmul"] = cats.get("matmul", 0.0) + op.flops
        else:
            for c, share in fn_categories(op.fn).items():
                cats[c] = cats.get(c, 0.0) + share * op.flops
    return Analytic(flops=total, matmul=mm, matmul_dense=dense, categories=cats)


# -- fvcore handles ---------------------------------------------------------------------------
def _shape(v) -> Optional[list]:
    return v.type().sizes() if v.isCompleteTensor() else None


def _numel(v) -> int:
    s = _shape(v)
    if s is None:
        raise ValueError("a tensor of unknown shape reached a FLOP handle")
    return math.prod(s)


def _mm_macs(a: list, b: list) -> int:
    """MACs of torch.matmul(a, b) with broadcasting: batch x m x k x n."""
    a, b = list(a), list(b)
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    m, k = a[-2], a[-1]
    n = b[-1]
    batch = _broadcast(a[:-2], b[:-2])
    return math.prod(batch) * m * k * n


def _broadcast(x: list, y: list) -> list:
    n = max(len(x), len(y))
    x, y = [1] * (n - len(x)) + x, [1] * (n - len(y)) + y
    return [max(i, j) for i, j in zip(x, y)]


def _matmul_handle(key):
    def h(inputs, outputs):
        return Counter({key: _mm_macs(_shape(inputs[0]), _shape(inputs[1]))})
    return h


def _addmm_handle(key, first=1):  # addmm(self, a, b), baddbmm(self, a, b): the product only
    def h(inputs, outputs):
        return Counter({key: _mm_macs(_shape(inputs[first]), _shape(inputs[first + 1]))})
    return h


def _linear_handle(inputs, outputs):
    x, w = _shape(inputs[0]), _shape(inputs[1])
    return Counter({"linear": math.prod(x) * w[0]})


def _einsum_handle(inputs, outputs):
    """Exact MACs of a two-operand einsum: the product of the sizes of all its indices
    (fvcore's own handle rounds through numpy's einsum_path)."""
    eq = inputs[0].toIValue().replace(" ", "")
    lhs = eq.split("->")[0].split(",")
    ops = [_shape(v) for v in inputs[1].node().inputs()]
    if len(lhs) != 2 or "." in eq:
        raise ValueError(f"einsum {eq!r}: attncost counts two-operand einsums without ellipsis only")
    sizes = {}
    for letters, shp in zip(lhs, ops):
        for c, s in zip(letters, shp):
            sizes[c] = s
    return Counter({"einsum": math.prod(sizes.values())})


_FLOATING = frozenset(("Float", "Double", "Half", "BFloat16"))


def _floating(v) -> bool:
    """Integer and boolean results (shape arithmetic the tracer records, index maths) are 0 FLOPs."""
    try:
        return v.type().scalarType() in _FLOATING
    except (AttributeError, RuntimeError):  # not a tensor (an int from shape arithmetic)
        return False


def _elementwise_handle(key, fn):
    flops = ELEMENT_FLOPS[fn]

    def h(inputs, outputs):
        if not _floating(outputs[0]):
            return Counter()
        return Counter({key: flops * _numel(outputs[0])})
    return h


def _reduction_handle(key, fn):
    """Reductions and top-k: ELEMENT_FLOPS[fn] per input element. ``max``/``min`` with two tensor
    inputs is element-wise (per output element)."""
    flops = ELEMENT_FLOPS[fn]

    def h(inputs, outputs):
        if not _floating(inputs[0]):
            return Counter()
        if len(inputs) >= 2 and inputs[1].isCompleteTensor():
            return Counter({key: flops * _numel(outputs[0])})
        return Counter({key: flops * _numel(inputs[0])})
    return h


def _zero_handle(inputs, outputs):
    return Counter()


def _sdpa_pairs(L: int, S: int, is_causal: bool, mask_shape, masks: dict, notes: list) -> float:
    """(query, key) pairs one head of a fused SDPA computes, by the cost model's convention."""
    if mask_shape is not None:
        info = masks.get(tuple(mask_shape[-2:]))
        if info is None:
            notes.append(f"SDPA mask of shape {tuple(mask_shape)} not recorded: counted dense")
            return float(L * S)
        kind, value = info
        if kind == "band":
            return float(causal_pairs(L, value))
        return float(value)  # the mask's True entries (per (L, S) mask)
    if is_causal:
        if L == S:
            return CAUSAL_FUSED_FRACTION * L * S
        return float(sum(min(i + 1, S) for i in range(L)))  # top-left aligned, torch's is_causal
    return float(L * S)


def _sdpa_handle(masks: dict, notes: list):
    def h(inputs, outputs):
        q, k, v = (_shape(inputs[i]) for i in range(3))
        mask_shape = _shape(inputs[3]) if inputs[3].isCompleteTensor() else None
        is_causal = bool(inputs[5].toIValue()) if len(inputs) > 5 else False
        L, E, S, Ev = q[-2], q[-1], k[-2], v[-1]
        heads = math.prod(q[:-2])  # batch x query heads (GQA: every query head does the work)
        pairs = _sdpa_pairs(L, S, is_causal, mask_shape, masks, notes)
        elems = heads * pairs
        return Counter({"scaled_dot_product_attention": elems * (E + Ev),
                        "scaled_dot_product_attention:scale": ELEMENT_FLOPS["scale"] * elems,
                        "scaled_dot_product_attention:softmax": ELEMENT_FLOPS["softmax"] * elems})
    return h


def fvcore_handles(masks: Optional[dict] = None, notes: Optional[list] = None) -> dict:
    """aten op -> handle, for ``FlopCountAnalysis.set_op_handle``. ``masks`` maps (L, S) to
    ("band", w) or ("pairs", n): what the SDPA handle knows of the masks passed to SDPA."""
    masks = {} if masks is None else masks
    notes = [] if notes is None else notes
    h = {
        "aten::linear": _linear_handle,
        "aten::matmul": _matmul_handle("matmul"),
        "aten::mm": _matmul_handle("mm"),
        "aten::bmm": _matmul_handle("bmm"),
        "aten::addmm": _addmm_handle("addmm"),
        "aten::baddbmm": _addmm_handle("baddbmm"),
        "aten::einsum": _einsum_handle,
        "aten::scaled_dot_product_attention": _sdpa_handle(masks, notes),
    }
    for ops, fn in ((("mul",), "mul"), (("div", "reciprocal"), "div"), (("add", "sub", "rsub"), "add"),
                    (("addcmul",), "addcmul"),
                    (("exp",), "exp"), (("relu",), "relu"), (("neg",), "scale"),
                    (("masked_fill", "where"), "mask"), (("maximum", "minimum"), "max"),
                    (("cumsum",), "cumsum")):
        for op in ops:
            h[f"aten::{op}"] = _elementwise_handle(op, fn)
            h[f"aten::{op}_"] = _elementwise_handle(op, fn)
    for op in ("softmax", "_softmax"):
        h[f"aten::{op}"] = _elementwise_handle("softmax", "softmax")
    for op, fn in (("sum", "mean"), ("mean", "mean"), ("amax", "max"), ("amin", "max"), ("max", "max"),
                   ("topk", "topk")):
        h[f"aten::{op}"] = _reduction_handle(op, fn)
    for op in ("gather", "index", "index_select", "pad", "constant_pad_nd", "take_along_dim"):
        h[f"aten::{op}"] = _zero_handle
    return h


def _fvcore_flops(by_op: dict) -> dict:
    """fvcore's per-op totals in FLOPs: MAC keys x 2 (``macs_to_flops``), the rest as they are."""
    return {k: (macs_to_flops(v) if k in MAC_KEYS else float(v)) for k, v in by_op.items()}


def _import_fvcore():
    with warnings.catch_warnings():
        # fvcore 0.1.5 decorates functions with torch.jit.script, deprecated in torch 2.13
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
    return FlopCountAnalysis


# -- FlopCounterMode --------------------------------------------------------------------------
_MOVEMENT = frozenset((
    "view", "_unsafe_view", "reshape", "expand", "expand_as", "permute", "transpose", "t", "unsqueeze",
    "squeeze", "slice", "select", "narrow", "split", "split_with_sizes", "unbind", "alias", "as_strided",
    "detach", "clone", "copy_", "_to_copy", "contiguous", "cat", "stack", "empty", "empty_like",
    "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros", "ones",
    "ones_like", "full", "full_like", "fill_", "zero_", "scalar_tensor", "arange", "lift_fresh",
    "lift_fresh_copy", "constant_pad_nd", "pad", "index", "gather", "index_select", "_reshape_alias",
    "repeat", "repeat_interleave", "view_as", "_local_scalar_dense", "index_copy_", "index_put_", "to",
))


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    """Formulas FlopCounterMode lacks: SDPA's CPU flash kernel (forward and backward)."""
    import torch
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    out = {}
    for name, f in (("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flop),
                    ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward_flop)):
        op = getattr(aten, name, None)
        if op is not None and op not in flop_registry:
            out[op] = f
    return out


def _modes():
    """A dispatch mode recording every aten op, and a function mode recording SDPA's masks."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode
    from .dispatch import Recorder

    class OpRecorder(Recorder):
        def __init__(self):
            super().__init__()
            self.ops: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func._overloadpacket] += 1
            return func(*args, **(kwargs or {}))

    class MaskRecorder(TorchFunctionMode):
        """Keeps the attn_mask of each SDPA call; ``classify()`` (after the counted run, so that
        its own ops are not counted) maps each mask shape to ``classify_mask``'s answer."""

        def __init__(self):
            super().__init__()
            self.seen: list = []
            self.masks: dict = {}
            self.ambiguous: set = set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
                if isinstance(mask, torch.Tensor):
                    self.seen.append(mask)
            return func(*args, **kwargs)

        def classify(self) -> None:
            for mask in self.seen:
                info = classify_mask(mask)
                key = tuple(mask.shape[-2:])
                if self.masks.get(key, info) != info:
                    self.ambiguous.add(key)
                self.masks[key] = info
            self.seen = []

    return OpRecorder, MaskRecorder


def classify_mask(mask) -> tuple:
    """("band", w) for a causal band mask (query i sees keys i-w < j <= i), else ("pairs", n):
    the number of (query, key) pairs it lets through, per (L, S) matrix."""
    import torch

    m = mask if mask.dtype == torch.bool else (mask == 0)  # additive float masks: 0 = attend
    m = m.reshape(-1, *m.shape[-2:])
    first = m[0]
    L, S = first.shape
    same = bool((m == first).all())
    if same and L == S:
        w = int(first[-1].sum())
        i = torch.arange(L, device=first.device)
        band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - w)
        if w > 0 and torch.equal(first, band):
            return ("band", w)
    return ("pairs", float(m.sum()) / m.shape[0])


# -- counting ---------------------------------------------------------------------------------
class CountDetail(BaseModel):
    """What each counter saw, in FLOPs (2 x MACs for matmuls)."""

    fvcore: Optional[float] = None
    fvcore_matmul: Optional[float] = None
    fvcore_by_op: dict = Field(default_factory=dict)
    fvcore_categories: dict = Field(default_factory=dict)
    fvcore_skipped: dict = Field(default_factory=dict)
    flop_counter: float = 0.0
    flop_counter_by_op: dict = Field(default_factory=dict)
    flop_counter_skipped: list = Field(default_factory=list)
    backward: bool = False
    notes: list = Field(default_factory=list)


def count_detailed(module, inputs, *, backward: Optional[bool] = None) -> CountDetail:
    """Count one call ``module(*inputs)`` with fvcore (attncost's handles) and FlopCounterMode.

    ``backward`` (default: the module's phase is train) also runs the backward under
    FlopCounterMode (the output's gradient is ones); fvcore traces the forward only, so its
    fields are then None and the omission is listed in ``fvcore_skipped``.
    """
    import torch

    if backward is None:
        backward = getattr(module, "phase", None) == "train"
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    detail = CountDetail(backward=backward)

    # FlopCounterMode, recording every op it sees and the masks SDPA gets
    from torch.utils.flop_counter import FlopCounterMode

    OpRecorder, MaskRecorder = _modes()
    fcm = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    rec, masks = OpRecorder(), MaskRecorder()
    grad_ctx = torch.enable_grad() if backward else torch.no_grad()
    with grad_ctx, masks, fcm, rec:
        out = module(*inputs)
        if backward:
            out.backward(torch.ones_like(out))
    with torch.no_grad():
        masks.classify()
    if backward:
        module.zero_grad(set_to_none=True)
        for t in inputs:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.grad = None
    counts = fcm.get_flop_counts().get("Global", {})
    detail.flop_counter = float(sum(counts.values()))
    detail.flop_counter_by_op = {str(k): float(v) for k, v in counts.items()}
    counted = set(fcm.flop_registry)
    detail.flop_counter_skipped = sorted({str(op) for op in rec.ops if op not in counted
                                          and str(op).split(".")[-1] not in _MOVEMENT})
    for key in sorted(masks.ambiguous):
        detail.notes.append(f"several different SDPA masks of shape {key}: the last one was used")

    if backward:
        detail.fvcore_skipped = {"backward pass (fvcore traces the forward only)": 1}
        return detail

    FlopCountAnalysis = _import_fvcore()
    notes: list = []
    fa = (FlopCountAnalysis(module, inputs).set_op_handle(**fvcore_handles(masks.masks, notes))
          .unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none"))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        by_op = fa.by_operator()
        skipped = fa.unsupported_ops()
    flops = _fvcore_flops(by_op)
    detail.fvcore_by_op = dict(sorted(flops.items(), key=lambda kv: -kv[1]))
    detail.fvcore = float(sum(flops.values()))
    detail.fvcore_matmul = float(sum(v for k, v in flops.items() if k in MAC_KEYS))
    cats: dict = {}
    for k, v in flops.items():
        c = key_category(k)
        cats[c] = cats.get(c, 0.0) + v
    detail.fvcore_categories = cats
    detail.fvcore_skipped = dict(skipped)
    detail.notes.extend(dict.fromkeys(notes))
    return detail


def count(module, inputs, *, analytic: Optional[float] = None, analytic_matmul: Optional[float] = None,
          backward: Optional[bool] = None) -> Counts:
    """Counts of one call ``module(*inputs)`` for the results file. The analytic FLOPs come from
    the cost-model graph ``build_module`` attached to the module (``module.graph``) unless given."""
    detail = count_detailed(module, inputs, backward=backward)
    dense = None
    g = getattr(module, "graph", None)
    if g is not None:
        a = analytic_counts(g)
        analytic = a.flops if analytic is None else analytic
        analytic_matmul = a.matmul if analytic_matmul is None else analytic_matmul
        dense = a.matmul_dense
    elif analytic is None or analytic_matmul is None:
        raise ValueError("count(): pass analytic= and analytic_matmul=, or a module from build_module")
    return Counts(analytic=analytic, analytic_matmul=analytic_matmul, analytic_matmul_dense=dense,
                  fvcore=detail.fvcore,
                  flop_counter=detail.flop_counter, fvcore_skipped=detail.fvcore_skipped,
                  flop_counter_skipped=detail.flop_counter_skipped)


# -- the cross-check --------------------------------------------------------------------------
def rel_diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None:
        return None
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def close(a, b, tol: float = REL_TOL) -> bool:
    r = rel_diff(a, b)
    return r is not None and r <= tol


class CrossCheck(BaseModel):
    """One (variant, shape) checked: the analytic FLOPs beside each counter's, and which op
    categories make any difference. ``status``: ok, n/a (the variant does not apply), error."""

    variant: str
    shape: Shape
    params: dict = Field(default_factory=dict)
    status: str = "ok"
    reason: Optional[str] = None
    backend: str = "auto"
    analytic: Optional[float] = None
    analytic_matmul: Optional[float] = None
    analytic_matmul_dense: Optional[float] = None
    fvcore: Optional[float] = None
    fvcore_matmul: Optional[float] = None
    flop_counter: Optional[float] = None
    rel_diff: Optional[float] = None  # fvcore vs analytic, all FLOPs
    rel_diff_matmul: Optional[float] = None  # fvcore vs analytic, matmul FLOPs
    rel_diff_flop_counter: Optional[float] = None  # FlopCounterMode vs analytic matmul FLOPs
    matmul_match: bool = False
    total_match: bool = False
    flop_counter_match_dense: bool = False  # FlopCounterMode == analytic matmul counted dense
    categories: dict = Field(default_factory=dict)  # category -> {"analytic": x, "fvcore": y}
    differences: list = Field(default_factory=list)  # one line per category that differs
    fvcore_by_op: dict = Field(default_factory=dict)
    flop_counter_by_op: dict = Field(default_factory=dict)
    fvcore_skipped: dict = Field(default_factory=dict)
    flop_counter_skipped: list = Field(default_factory=list)
    notes: list = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "n/a" or (self.status == "ok" and self.matmul_match)


def crosscheck(variant: str, shape: Shape, params: Optional[dict] = None, *, backend: str = "auto",
               device: str = "cpu", dtype=None, seed: Optional[int] = 0) -> CrossCheck:
    """Build the variant's module at ``shape`` (prefill or decode), count it, compare with the
    cost model. ``dtype`` defaults to fp32 (counts do not depend on it)."""
    import torch

    from ..costmodel.estimate import graph, resolve_params
    from ..costmodel.variants import REGISTRY, VariantError
    from .modules import build_module

    res = CrossCheck(variant=variant, shape=shape, params=dict(params or {}), backend=backend)
    try:
        p = resolve_params(variant, shape, params)
        g = graph(variant, shape, p)
    except VariantError as err:
        if variant not in REGISTRY:
            raise
        res.status, res.reason = "n/a", str(err)
        return res
    res.params = p.model_dump()
    a = analytic_counts(g)
    res.analytic, res.analytic_matmul, res.analytic_matmul_dense = a.flops, a.matmul, a.matmul_dense
    try:
        module, inputs = build_module(variant, shape, p, device, dtype or torch.float32, backend=backend,
                                      seed=seed)
        d = count_detailed(module, inputs)
    except Exception as err:  # noqa: BLE001  (reported in the row; the command exits 1)
        res.status, res.reason = "error", f"{type(err).__name__}: {' '.join(str(err).split())}"
        return res
    res.fvcore, res.fvcore_matmul, res.flop_counter = d.fvcore, d.fvcore_matmul, d.flop_counter
    res.fvcore_by_op, res.flop_counter_by_op = d.fvcore_by_op, d.flop_counter_by_op
    res.fvcore_skipped, res.flop_counter_skipped = d.fvcore_skipped, d.flop_counter_skipped
    res.notes = list(getattr(module, "notes", ())) + d.notes
    res.rel_diff = rel_diff(a.flops, d.fvcore)
    res.rel_diff_matmul = rel_diff(a.matmul, d.fvcore_matmul)
    res.rel_diff_flop_counter = rel_diff(a.matmul, d.flop_counter)
    res.matmul_match = close(a.matmul, d.fvcore_matmul)
    res.total_match = close(a.flops, d.fvcore)
    res.flop_counter_match_dense = close(a.matmul_dense, d.flop_counter)
    keys = [c for c in CATEGORIES + ("other",) if c in a.categories or c in d.fvcore_categories]
    res.categories = {c: {"analytic": a.categories.get(c, 0.0), "fvcore": d.fvcore_categories.get(c, 0.0)}
                      for c in keys}
    for c, v in res.categories.items():
        if not close(v["analytic"], v["fvcore"]):
            res.differences.append(f"{c}: fvcore {v['fvcore'] - v['analytic']:+,.0f}")
    if d.fvcore_skipped:
        res.differences.append("fvcore skipped: " + ", ".join(f"{k} x{n}" for k, n in d.fvcore_skipped.items()))
    if not close(a.matmul, d.flop_counter):
        if res.flop_counter_match_dense:
            res.notes.append("FlopCounterMode counts fused attention dense (it ignores is_causal and masks): "
                             f"{d.flop_counter - a.matmul:+,.0f} FLOPs")
        else:
            res.notes.append(f"FlopCounterMode differs from the analytic matmul FLOPs counted dense by "
                             f"{d.flop_counter - a.matmul_dense:+,.0f}")
    return res
