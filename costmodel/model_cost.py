"""The cost of a whole model at one point (model, attention variant, T, batch): parameters,
weights and KV-cache memory, the prefill (time to first token), one decode step (tokens/s), and
what fits a device's memory. ``predict_model`` is the entry point; ``ModelEstimate.as_dict`` the
stable JSON fields.

Worked example, gpt2 (124M) at T=1024, batch 1, native ``mha`` (math path, causal counted dense):
  attention projections 12 x 4 x 2*1024*768*768           =  57.98 GFLOP
  attention core        12 x 2 x 2*12*1024*1024*64         =  38.65 GFLOP
    scale + mask + softmax 12 x (1+1+5) x 12*1024*1024     =   1.06 GFLOP
  MLP                   12 x 2 x 2*1024*768*3072           = 115.96 GFLOP
    GELU                12 x 9 x 1024*3072                 =   0.34 GFLOP
  LM head               2*1024*768*50257                   =  79.05 GFLOP
  norms + residual adds 25 x 7 x 1024*768 + 24 x 1024*768  =   0.16 GFLOP
  position add          1024*768                           =   0.0008 GFLOP
  total                                                    = 293.20 GFLOP
The "2 x params x tokens" rule gives 2 * 124,439,808 * 1024 = 254.85 GFLOP, 13% short: it misses
the attention core with its softmax (39.71 GFLOP), and it counts 2 * 1024 * 907,776 = 1.86 GFLOP
for parameters no matmul multiplies (position table 786,432, biases 82,944, norm weights 38,400);
the matmuls with weights are 57.98 + 115.96 + 79.05 = 252.99 GFLOP.
Attention core: 13.5% of the FLOPs; with its projections 33.3%; MLP 39.7%; LM head 27.0%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .estimate import estimate, resolve_params
from .hardware import Hardware
from .model_graphs import LOGITS, Logits
from .model_memory import max_batch_fitting, max_T_fitting, memory_bytes
from .model_params import ParamCount, count_params
from .model_pass import COMPONENTS, PassCost, forward_pass
from .model_precision import Precision, PrecisionError, check
from .model_presets import get_model
from .model_spec import ModelConfig, attention_shape
from .shape import Shape
from .units import DEQUANT_OPS, Dtype, WEIGHT_ONLY
from .variants import REGISTRY, VariantError


@dataclass(slots=True)
class ModelEstimate:
    """One (model, attention variant, T, batch) point. ``as_dict`` gives the stable JSON fields.

    prefill: the forward pass over T tokens of ``batch`` sequences (its time is the time to first
    token); decode: one new token per sequence against a cache of T (None if the variant has no
    decode path). Times need a hardware profile; fits / max_T_fitting / max_batch_fitting its
    memory size. ``dtype`` is the compute dtype; ``weights_dtype`` and ``kv_dtype`` what the
    linear layers' weights and the KV cache are stored in (``model_precision``).
    """

    model: str
    variant: str
    params: dict
    T: int
    batch: int
    dtype: Dtype
    weights_dtype: str = ""
    kv_dtype: str = ""
    hardware: Optional[str] = None
    status: str = "ok"  # ok | n/a
    reason: Optional[str] = None
    notes: list = field(default_factory=list)
    param_count: float = 0.0
    param_count_active: float = 0.0
    params_by_component: dict = field(default_factory=dict)
    weights_bytes: float = 0.0
    kv_cache_bytes: float = 0.0
    kv_cache_bytes_per_token: float = 0.0  # all layers, one token of one sequence
    prefill: Optional[PassCost] = None
    decode: Optional[PassCost] = None
    decode_reason: Optional[str] = None
    decode_weights_bytes_read: Optional[float] = None
    decode_bytes_min: Optional[float] = None  # weights read + KV cache: the least a step reads
    decode_tokens_per_s_roofline: Optional[float] = None  # batch x bandwidth / decode_bytes_min
    memory_bytes: Optional[float] = None
    mem_bytes: Optional[float] = None  # the device's
    fits: Optional[bool] = None
    max_T_fitting: Optional[int] = None
    max_batch_fitting: Optional[int] = None
    context: int = 0
    logits: Logits = "all"  # the prefill's LM head: all T tokens or the last one

    @property
    def ttft_s(self) -> Optional[float]:
        return self.prefill.time_s if self.prefill else None

    @property
    def decode_tokens_per_s(self) -> Optional[float]:
        if self.decode is None or not self.decode.time_s:
            return None
        return self.batch / self.decode.time_s

    def as_dict(self) -> dict:
        pre, dec = self.prefill, self.decode
        out = {
            "model": self.model, "variant": self.variant, "params": self.params, "T": self.T,
            "batch": self.batch, "dtype": self.dtype, "weights_dtype": self.weights_dtype,
            "kv_dtype": self.kv_dtype, "hardware": self.hardware, "status": self.status,
            "reason": self.reason, "notes": self.notes, "context": self.context, "logits": self.logits,
            "param_count": self.param_count, "param_count_active": self.param_count_active,
            "params_by_component": self.params_by_component, "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes, "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
        }
        for c in COMPONENTS:
            out["flops_" + c] = pre.flops[c] if pre else None
        out.update({
            "flops_total": pre.flops_total if pre else None,
            "flops_matmul": pre.flops_matmul if pre else None,
            "shares": _shares(pre),
            "time_prefill_s": pre.time if pre and pre.time else None,
            "ttft_s": self.ttft_s,
            "prefill_tokens_per_s": self.batch * self.T / pre.time_s if pre and pre.time_s else None,
            "prefill_bound": pre.bound if pre else None,
            "bound": pre.bound if pre else None,
            "activation_bytes_prefill": pre.activation_bytes if pre else None,
            "per_layer": pre.per_layer if pre else None,
            "decode_flops_total": dec.flops_total if dec else None,
            "decode_flops": dec.flops if dec else None,
            "decode_bytes": dec.bytes if dec else None,
            "decode_step_s": dec.time_s if dec else None,
            "time_decode_s": dec.time if dec else None,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "decode_bound": dec.bound if dec else None,
            "decode_reason": self.decode_reason,
            "decode_weights_bytes_read": self.decode_weights_bytes_read,
            "decode_bytes_min": self.decode_bytes_min,
            "decode_tokens_per_s_roofline": self.decode_tokens_per_s_roofline,
            "memory_bytes": self.memory_bytes, "mem_bytes": self.mem_bytes, "fits": self.fits,
            "max_T_fitting": self.max_T_fitting, "max_batch_fitting": self.max_batch_fitting,
        })
        return out


def _shares(pc: Optional[PassCost]) -> Optional[dict]:
    """Each component's share of the pass's FLOPs (and of its time, when timed)."""
    if pc is None:
        return None
    out = {"flops": {c: v / pc.flops_total if pc.flops_total else 0.0 for c, v in pc.flops.items()}}
    if pc.time is not None:
        tot = sum(pc.time.values())
        out["time"] = {c: v / tot if tot else 0.0 for c, v in pc.time.items()}
    return out


def predict_model(model, *, T: int, batch: int = 1, dtype: Dtype = "bf16", variant: Optional[str] = None,
                  params: Optional[dict] = None, hardware: Optional[Hardware] = None, search: bool = True,
                  mode: str = "eager", logits: Logits = "all", weights_dtype: Optional[str] = None,
                  kv_dtype: Optional[str] = None) -> ModelEstimate:
    """The whole model (a preset name, a config.json or JSON path, or a ModelConfig) with attention
    ``variant`` (default: its native one, layer by layer) at T tokens and ``batch`` sequences:
    parameters, weights and KV-cache memory, prefill (time to first token) and one decode step
    (tokens/s), FLOPs and time by component and by group of layers; with a hardware profile, what
    fits its memory (``search``: the largest T and batch). A variant that does not apply gets
    status "n/a" with the reason.

    ``dtype``: activations and compute; ``weights_dtype`` (default: the checkpoint's, where its
    config is quantised and the hardware runs it, else ``dtype``) and ``kv_dtype`` (default
    ``dtype``): see ``model_precision``; PrecisionError where the hardware cannot run them.
    ``mode``: "eager" (PyTorch eager, host time per kernel) or "graph" (the device alone, see ``timing.predict``);
    ``logits``: the prefill's LM head over "all" T tokens (a forward pass, the default) or the
    "last" token of each sequence (what generation keeps; less time and activation memory)."""
    if logits not in LOGITS:
        raise ValueError(f"logits must be 'all' or 'last', not {logits!r}")
    cfg = get_model(model)
    variant = variant or cfg.attention
    if variant not in REGISTRY:
        raise VariantError(f"unknown variant {variant!r}: choose from {', '.join(REGISTRY)}")
    prec, prec_notes = _precision(cfg, dtype, weights_dtype, kv_dtype, hardware)
    swapped = None if variant == cfg.attention else variant  # None: every layer's own attention
    extra = cfg.variant_params(variant, params)
    s = attention_shape(cfg, T, batch, dtype, "prefill")
    out = ModelEstimate(model=cfg.name, variant=variant, params=dict(extra), T=T, batch=batch, dtype=dtype,
                        weights_dtype=prec.weights, kv_dtype=prec.kv, hardware=getattr(hardware, "name", None),
                        context=cfg.context, logits=logits)
    out.notes = _notes(cfg, variant, T) + prec_notes
    try:
        out.params = dict(resolve_params(variant, s, extra))
        pc = count_params(cfg, swapped, params, T)
        out.prefill = forward_pass(cfg, swapped, params, s, hardware, mode, logits, prec)
    except VariantError as err:
        out.status, out.reason = "n/a", str(err)
        return out
    for n in estimate(variant, s, out.params).notes + _attention_notes(cfg, out.prefill):
        if n not in out.notes:
            out.notes.append(n)
    out.param_count, out.param_count_active = pc.total, pc.active
    out.params_by_component = {"embed": pc.embed, "attention": pc.attention, "mlp": pc.mlp, "norms": pc.norms,
                               "lm_head": pc.lm_head}
    out.weights_bytes = pc.stored_bytes(prec)
    out.kv_cache_bytes = _kv(out.prefill, "kv_cache_bytes")
    out.kv_cache_bytes_per_token = _kv(out.prefill, "kv_cache_bytes_per_token")
    _add_decode(out, cfg, swapped, params, s.with_(phase="decode"), pc, hardware, mode, prec)
    _add_memory(out, cfg, swapped, params, hardware, search, prec)
    return out


def _kv(pc: PassCost, key: str) -> float:
    """A pass's KV-cache bytes over all layers (its groups x their layers)."""
    return sum(lay["count"] * lay[key] for lay in pc.per_layer)


def _precision(cfg: ModelConfig, dtype: str, weights: Optional[str], kv: Optional[str],
               hardware: Optional[Hardware]) -> tuple:
    """The point's Precision and what to say about it. An explicit precision the hardware cannot
    run raises PrecisionError; the checkpoint's own (its config's quantization_config) falls back
    to ``dtype`` with a note."""
    notes = []
    if weights is None and cfg.weights_dtype:
        try:
            check(Precision.of(dtype, cfg.weights_dtype), hardware)
            weights = cfg.weights_dtype
            notes.append(f"weights in {weights}, as the checkpoint's quantization_config (--weights-dtype changes it)")
        except PrecisionError as err:
            notes.append(f"the checkpoint's {cfg.weights_dtype} weights are costed in {dtype}: {err}")
    p = Precision.of(dtype, weights, kv)
    check(p, hardware)
    if p.weights == "fp8":
        notes.append(f"fp8 weights: matmuls of the blocks' linear layers at the fp8 tensor peak (activations "
                     f"quantised per token); embeddings, LM head, norms and routers in {dtype}")
    elif p.weights in WEIGHT_ONLY:
        notes.append(f"{p.weights} weights, weight-only: matmuls in {dtype}, each weight dequantised in the matmul "
                     f"kernel ({DEQUANT_OPS[p.weights]} ops per weight per 128-row tile); embeddings, LM head, norms "
                     f"and routers in {dtype}")
    if p.kv != dtype:
        notes.append(f"KV cache in {p.kv}: read as stored by the decode attention kernel (conversion fused)")
    return p, notes


def _attention_notes(cfg: ModelConfig, pc: PassCost) -> list:
    """The attention estimates' notes, and what the model adds to its attention."""
    notes = []
    if cfg.attention_softcap:
        notes.append(f"attention scores soft-capped at {cfg.attention_softcap:g} inside the fused kernel "
                     f"(FlashAttention >= 2.6, FlashInfer; PyTorch's SDPA has no soft-capping)")
    if len(pc.per_layer) > 1 and any(lay["attention"] for lay in pc.per_layer):
        kinds = "; ".join(f"{lay['count']} {lay['attention'] or 'layers'}"
                          + (f" (window {lay['window']:,})" if lay["window"] else "") for lay in pc.per_layer)
        notes.append(f"layers costed by kind: {kinds}")
    return notes


def _add_decode(out: ModelEstimate, cfg: ModelConfig, variant: Optional[str], params: Optional[dict], ds: Shape,
                pc: ParamCount, hardware: Optional[Hardware], mode: str, prec: Precision) -> None:
    """One decode step at shape ``ds`` and its bandwidth roofline: batch x bandwidth / (the
    weights its tokens read + the KV cache)."""
    try:
        out.decode = forward_pass(cfg, variant, params, ds, hardware, mode, precision=prec)
    except VariantError as err:
        out.decode_reason = str(err)
        return
    out.decode_weights_bytes_read = pc.read_bytes(ds.batch, cfg, prec)
    out.decode_bytes_min = out.decode_weights_bytes_read + _kv(out.decode, "kv_cache_bytes")
    if hardware is not None:
        out.decode_tokens_per_s_roofline = ds.batch * hardware.mem_bandwidth / out.decode_bytes_min


def _add_memory(out: ModelEstimate, cfg: ModelConfig, variant: Optional[str], params: Optional[dict],
                hardware: Optional[Hardware], search: bool, prec: Precision) -> None:
    """The memory the point needs; with a hardware profile, whether it fits and (``search``) the
    largest T and batch that do."""
    T, batch, dtype = out.T, out.batch, out.dtype
    out.memory_bytes = memory_bytes(cfg, variant, params, T, batch, dtype, out.logits, prec)
    if hardware is None:
        return
    out.mem_bytes = hardware.mem_bytes
    out.fits = out.memory_bytes <= hardware.mem_bytes
    if search:
        out.max_T_fitting = max_T_fitting(cfg, variant, params, batch, dtype, hardware.mem_bytes, start=T,
                                          logits=out.logits, precision=prec)
        out.max_batch_fitting = max_batch_fitting(cfg, variant, params, T, dtype, hardware.mem_bytes, out.logits,
                                                  prec)


def _notes(cfg: ModelConfig, variant: str, T: int) -> list:
    """What the point approximates: the model's own notes (the sliding-window ones only with its
    native attention), a T beyond its context, MoE routing."""
    notes = list(cfg.notes) if variant == cfg.attention else [
        n for n in cfg.notes if "sliding window" not in n]
    if T > cfg.context:
        extra = " (learned positions: no embedding for later tokens)" if cfg.positions == "learned" else ""
        notes.append(f"T={T:,} exceeds {cfg.name}'s context of {cfg.context:,}{extra}; costed anyway")
    if cfg.moe is not None:
        notes.append("MoE: uniform routing assumed (a batch of N tokens touches E(1-(1-k/E)^N) experts)")
    return notes


def default_variants(cfg: ModelConfig) -> list:
    """The native variant first, then the usual alternatives (fused MHA, GQA, MQA, MLA)."""
    out = [cfg.attention]
    for v in ("flash", "gqa", "mqa", "mla"):
        if v not in out:
            out.append(v)
    return out
