"""One forward pass of a whole model (a prefill of T tokens or one decode step): FLOPs, bytes,
peak activations and time, split by component.

The attention of every layer is costed by the attention cost model itself (``estimate`` and
``graph`` of ``estimate.py``, any registered variant); the rest of the block is built as ``Graph``
ops too (``model_graphs``), so that one analysis (``analysis.analyse``) and one time model
(``timing.predict``) price every kernel of the model.

Components (FLOPs, bytes and time are split by them; they sum to the whole):

- ``attention_core``: the variant's token mixing (its ``flops_core``).
- ``attention_proj``: Q/K/V/O and any other projection of the variant (``flops_proj``) plus its
  ``flops_other`` (RoPE inside the variant, KV-cache writes), and RoPE on q and k applied at the
  model level for a ``rope`` model whose variant does not rotate its own queries.
- ``mlp``: GELU MLP (2 matmuls), SwiGLU (3 matmuls), or MoE: router (matmul, softmax, top-k),
  the active routed experts (grouped matmuls) and the shared experts.
- ``norms``: the two norms of each block, the final norm and the residual adds.
- ``embed``: token embedding lookup (0 FLOPs, a gather) and, for learned positions, the position
  lookup and its add.
- ``lm_head``: logits = x W_vocab, 2 * rows * d * vocab FLOPs; in prefill for all T tokens by
  default (a forward pass), or for the last token of each sequence (``logits="last"``, what
  generation keeps: at long T the all-token logits, T x vocab, dominate the activation memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .analysis import analyse
from .estimate import Estimate, estimate, graph
from .model_graphs import Logits, block_graph, embed_graph, head_graph, mlp_graph, rope_elems
from .model_spec import LayerKind, ModelConfig
from .shape import Shape
from .timing import TimeEstimate, predict
from .variants import Params, VariantError

COMPONENTS = ("attention_core", "attention_proj", "mlp", "norms", "embed", "lm_head")
LAYER_COMPONENTS = COMPONENTS[:4]  # the components inside a block


@dataclass(slots=True)
class PassCost:
    """One forward pass (``prefill`` of T tokens or one ``decode`` step against a cache of T) of
    the whole model. Dicts are keyed by COMPONENTS; ``per_layer``: one dict per layer kind."""

    phase: str
    flops: dict
    flops_total: float
    flops_matmul: float
    bytes: float  # bytes moved through device memory, kernel by kernel (fused)
    activation_bytes: float  # peak live activations
    kernels: int
    time: Optional[dict] = None  # component -> seconds
    time_s: Optional[float] = None
    compute_s: Optional[float] = None
    memory_s: Optional[float] = None
    overhead_s: Optional[float] = None
    bound: Optional[str] = None
    per_layer: list = field(default_factory=list)


@dataclass(slots=True)
class LayerCost:
    """One block of one kind: the attention's estimate, its kernels and its peak activations."""

    attention: Estimate
    kernels: list  # [(component, Kernel)] in launch order
    peak: float  # bytes: the largest of attention, MLP and norms, each with the residual stream kept


def layer_cost(cfg: ModelConfig, variant: str, p: Params, s: Shape, kind: LayerKind) -> LayerCost:
    """One block of ``kind`` at shape ``s`` with the variant's resolved parameters ``p``; raises
    VariantError if the variant does not apply."""
    est = estimate(variant, s, dict(p))
    if est.status != "ok":
        raise VariantError(est.reason)
    ag = graph(variant, s, p)
    rows = s.batch * s.tokens
    block = analyse(block_graph(cfg, s, rope_elems(cfg, ag)))
    mlp = analyse(mlp_graph(cfg, s, kind))
    bk = {k.name: k for k in block.kernels}
    attn = [("attention_core" if any(op.part == "core" for op in k.ops) else "attention_proj", k)
            for k in analyse(ag).kernels]
    ks = [("norms", bk["norm_attn"])] + ([("attention_proj", bk["rope"])] if "rope" in bk else [])
    ks += attn + [("norms", bk["residual_attn"]), ("norms", bk["norm_mlp"])]
    ks += [("mlp", k) for k in mlp.kernels] + [("norms", bk["residual_mlp"])]
    resid = rows * cfg.d * s.itemsize
    peak = max(est.activation_bytes_fused + resid, mlp.peak_fused + resid, block.peak_fused)
    return LayerCost(est, ks, peak)


def forward_pass(cfg: ModelConfig, variant: str, p: Params, s: Shape, hardware=None, mode: str = "eager",
                 logits: Logits = "all") -> PassCost:
    """The whole model at shape ``s`` (its phase), every kernel priced by ``timing.predict``.
    ``p``: the variant's resolved parameters; ``logits``: "all" rows or the "last" token of each
    sequence through the LM head. Raises VariantError if the variant does not apply."""
    kinds = cfg.layer_kinds()
    layers = {kind: layer_cost(cfg, variant, p, s, kind) for kind, _ in kinds}
    embed = analyse(embed_graph(cfg, s))
    head = analyse(head_graph(cfg, s, logits))
    tagged: list = [("embed", k, None) for k in embed.kernels]
    for kind, count in kinds:
        tagged += [(c, k, kind) for c, k in layers[kind].kernels] * count
    tagged += [("norms" if k.name == "norm_final" else "lm_head", k, None) for k in head.kernels]
    flops = dict.fromkeys(COMPONENTS, 0.0)
    flops_mm = nbytes = 0.0
    per_layer: dict = {kind: {"kind": kind, "count": count, "flops": dict.fromkeys(LAYER_COMPONENTS, 0.0)}
                       for kind, count in kinds}
    for c, k, kind in tagged:
        flops[c] += k.flops
        flops_mm += k.flops_matmul
        nbytes += k.bytes
        if kind is not None:
            per_layer[kind]["flops"][c] += k.flops / per_layer[kind]["count"]
    peak = max([lay.peak for lay in layers.values()] + [embed.peak_fused, head.peak_fused])
    out = PassCost(phase=s.phase, flops=flops, flops_total=sum(flops.values()), flops_matmul=flops_mm,
                   bytes=nbytes, activation_bytes=peak, kernels=len(tagged),
                   per_layer=list(per_layer.values()))
    if hardware is not None:
        _add_times(out, tagged, per_layer, predict([k for _, k, _ in tagged], hardware, s.dtype, mode=mode))
    return out


def _add_times(out: PassCost, tagged: list, per_layer: dict, te: TimeEstimate) -> None:
    """Fill ``out``'s times from ``timing.predict``'s estimate ``te`` of the ``tagged`` kernels."""
    t = dict.fromkeys(COMPONENTS, 0.0)
    for lay in per_layer.values():
        lay["time_s"] = dict.fromkeys(LAYER_COMPONENTS, 0.0)
    for (c, _, kind), kt in zip(tagged, te.per_kernel):
        t[c] += kt.time_s
        if kind is not None:
            per_layer[kind]["time_s"][c] += kt.time_s / per_layer[kind]["count"]
    out.time, out.time_s, out.bound = t, te.time_s, te.bound
    out.compute_s, out.memory_s, out.overhead_s = te.compute_s, te.memory_s, te.overhead_s
