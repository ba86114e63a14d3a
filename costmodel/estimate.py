"""Evaluate a variant at a shape: the numbers `attncost predict` prints and `--json` dumps."""

from dataclasses import dataclass, field
from typing import Optional

from .analysis import MATMUL_KINDS, add_backward, analyse
from .graph import Graph
from .shape import Shape
from .timing import predict
from .variants import REGISTRY, Params, VariantError

METRICS = ("flops", "memory", "time")


@dataclass(slots=True)
class Estimate:
    """One (variant, shape) point. Field names are a stable interface: scripts depend on them.

    flops: all FLOPs (matmuls as 2 x MACs plus the documented non-matmul counts); flops_matmul:
    matmuls and convolutions only; flops_core / flops_proj / flops_other: the attention core
    (token mixing), the projections (Q/K/V/O and any extra maps), the rest (cache writes, RoPE).
    Bytes are per layer; kv_cache_bytes is for batch x T tokens. The comparison with a baseline
    (``crossover.cheaper_ranges``: an end of None means still cheaper at the end of the search) is
    filled in by ``evaluate``; ``estimate`` leaves it None. A plain dataclass rather than a
    pydantic model: sweeps build thousands (pydantic's construction costs 70 us each).
    """

    variant: str
    params: dict
    shape: Shape
    status: str = "ok"  # ok | n/a
    reason: Optional[str] = None
    notes: list = field(default_factory=list)
    flops: float = 0.0
    flops_matmul: float = 0.0
    flops_core: float = 0.0
    flops_proj: float = 0.0
    flops_other: float = 0.0
    param_count: float = 0.0
    weights_bytes: float = 0.0
    bytes_unfused: float = 0.0
    bytes_fused: float = 0.0
    activation_bytes_unfused: float = 0.0
    activation_bytes_fused: float = 0.0
    kv_cache_bytes_per_token: float = 0.0
    kv_cache_bytes: float = 0.0
    arithmetic_intensity: float = 0.0
    kernels: int = 0
    time_s: Optional[float] = None
    bound: Optional[str] = None
    baseline: Optional[str] = None  # the variant the next three compare with (``evaluate``)
    crossover_T: Optional[dict] = None  # metric -> smallest T where cheaper than the baseline
    cheaper_until_T: Optional[dict] = None  # metric -> first larger T where it no longer is
    cheaper_ranges_T: Optional[dict] = None  # metric -> every [start, end) range of T where cheaper

    def model_dump(self) -> dict:
        """A JSON-ready dict (the shape as a dict too)."""
        out = {f: getattr(self, f) for f in self.__slots__}
        out["shape"] = self.shape.model_dump()
        return out


def resolve_params(name: str, shape: Shape, params: Optional[dict] = None) -> Params:
    """The variant's parameters: ``params`` over the defaults, shape-dependent ones filled in.
    Raises VariantError for an unknown variant or a count of tokens larger than T (``at_most_T``),
    and pydantic's ValidationError for bad values."""
    variant = REGISTRY.get(name)
    if variant is None:
        raise VariantError(f"unknown variant {name!r}: choose from {', '.join(REGISTRY)}")
    p = variant.params(**(params or {})).resolve(shape)
    for key in p.at_most_T:
        if getattr(p, key) > shape.T:
            raise VariantError(f"{name}.{key}={getattr(p, key)} must be at most T={shape.T}")
    return p


def graph(name: str, shape: Shape, params: Optional[Params] = None) -> Graph:
    """The variant's op graph at this shape and phase (train = forward + backward)."""
    variant = REGISTRY[name]
    p = params if params is not None else resolve_params(name, shape)
    if shape.phase == "decode" and not variant.decode:
        raise VariantError(f"{name} has no decode path: it is not causal")
    if shape.phase == "train":
        g = variant.build(shape.model_copy(update={"phase": "prefill"}), p)
        add_backward(g)
        return g
    return variant.build(shape, p)


def estimate(name: str, shape: Shape, params: Optional[dict] = None, hardware=None) -> Estimate:
    """Cost of one variant at one shape; a variant that does not apply gets status "n/a"."""
    try:
        p = resolve_params(name, shape, params)
        g = graph(name, shape, p)
    except VariantError as err:
        if name not in REGISTRY:
            raise
        return Estimate(variant=name, params=params or {}, shape=shape, status="n/a", reason=str(err))
    return _summarise(name, shape, p, g, hardware)


def _summarise(name: str, shape: Shape, p: Params, g: Graph, hardware) -> Estimate:
    parts = {"core": 0.0, "proj": 0.0, "other": 0.0}
    flops_mm = 0.0
    for op in g.ops:
        parts[op.part] += op.flops
        if op.kind in MATMUL_KINDS:
            flops_mm += op.flops
    flops = sum(parts.values())
    a = analyse(g)
    ks = a.kernels
    fused_bytes = sum(k.bytes for k in ks)
    weights = sum(t.elems for t in g.tensors.values() if t.role in ("weight", "buffer"))
    per_token = g.kv_per_token * shape.itemsize
    kv_total = shape.batch * (g.kv_per_token * g.kv_tokens + g.kv_fixed) * shape.itemsize
    variant = REGISTRY[name]
    notes = list(variant.notes)
    if variant.causal is False and shape.causal:
        notes.insert(0, "not causal by nature: costed as non-causal")
    time_s = bound = None
    if hardware is not None:
        timed = predict(ks, hardware, shape.dtype)
        time_s, bound = timed.time_s, timed.bound
    return Estimate(
        variant=name, params=dict(p), shape=shape, status="ok", reason=None, notes=notes,
        flops=flops, flops_matmul=flops_mm, flops_core=parts["core"], flops_proj=parts["proj"],
        flops_other=parts["other"], param_count=sum(
            t.elems for t in g.tensors.values() if t.role == "weight"),
        weights_bytes=weights * shape.itemsize, bytes_unfused=a.bytes_unfused, bytes_fused=fused_bytes,
        activation_bytes_unfused=a.peak_unfused, activation_bytes_fused=a.peak_fused,
        kv_cache_bytes_per_token=per_token, kv_cache_bytes=kv_total,
        arithmetic_intensity=flops / fused_bytes if fused_bytes else 0.0, kernels=len(ks),
        time_s=time_s, bound=bound)


def estimate_many(name: str, shapes: list, params: Optional[dict] = None, hardware=None) -> list:
    """[estimate(name, s, params, hardware) for s in shapes], the same Estimates exactly: the entry
    point for callers that price one variant at many shapes (sweeps, ``pick``)."""
    return [estimate(name, s, params, hardware) for s in shapes]
