"""One forward pass of a whole model (a prefill of T tokens or one decode step): FLOPs, bytes,
peak activations and time, split by component and by group of layers.

The attention of every layer is costed by the attention cost model itself (``estimate`` and
``graph`` of ``estimate.py``, any registered variant, fitted into the model by
``model_attention``); the rest of the block is built as ``Graph`` ops too (``model_graphs``), so
that one analysis (``analysis.analyse``) and one time model (``timing.predict``) price every
kernel of the model. Layers that cost the same are costed once (``ModelConfig.layer_groups``:
Gemma's local and global layers, DeepSeek's dense and MoE layers) and counted as many times as
the model has them. Precisions (``model_precision``): each layer's weights and cache take their
sizes, fp8 matmuls are timed at the fp8 rate.

Components (FLOPs, bytes and time are split by them; they sum to the whole):

- ``attention_core``: the variant's token mixing (its ``flops_core``; soft-capping included).
- ``attention_proj``: Q/K/V/O and any other projection of the variant (``flops_proj``) plus its
  ``flops_other`` (RoPE inside the variant, KV-cache writes), and RoPE on q and k applied at the
  model level for a ``rope`` model whose variant does not rotate its own queries.
- ``mlp``: GELU MLP (2 matmuls), SwiGLU / GeGLU (3 matmuls), or MoE: router (matmul, softmax,
  top-k), the active routed experts (grouped matmuls) and the shared experts; with weight-only
  int8 / int4 weights, the dequantisation in each matmul's kernel.
- ``norms``: the norms of each block (two, four with ``post_norms``; q/k and latent norms), the
  final norm and the residual adds.
- ``embed``: token embedding lookup (0 FLOPs, a gather) and, for learned positions, the position
  lookup and its add; Gemma's embedding scale.
- ``lm_head``: logits = x W_vocab, 2 * rows * d * vocab FLOPs; in prefill for all T tokens by
  default (a forward pass), or for the last token of each sequence (``logits="last"``, what
  generation keeps: at long T the all-token logits, T x vocab, dominate the activation memory);
  soft-capped logits (Gemma 2) add 3 FLOPs per logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .analysis import analyse
from .model_attention import AttentionLayer
from .model_graphs import BLOCK_AFTER, BLOCK_BEFORE, BLOCK_BETWEEN, Logits, block_graph, embed_graph, head_graph, \
    mlp_graph
from .model_params import group_layers
from .model_precision import Precision, quantise, timing_kernels
from .model_spec import LayerGroup, ModelConfig
from .shape import Shape
from .timing import TimeEstimate, predict

COMPONENTS = ("attention_core", "attention_proj", "mlp", "norms", "embed", "lm_head")
LAYER_COMPONENTS = COMPONENTS[:4]  # the components inside a block


@dataclass(slots=True)
class PassCost:
    """One forward pass (``prefill`` of T tokens or one ``decode`` step against a cache of T) of
    the whole model. Dicts are keyed by COMPONENTS; ``per_layer``: one dict per group of layers
    that cost the same (``ModelConfig.layer_groups``), with its MLP ``kind``, attention kind,
    variant, parameters, ``count`` of layers, and FLOPs (and time) of one of its layers."""

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
    """One block of one group: its attention, its kernels and its peak activations."""

    attention: AttentionLayer
    kernels: list  # [(component, Kernel, fp8)] in launch order
    peak: float  # bytes: the largest of attention, MLP and norms, each with the residual stream kept


def layer_cost(cfg: ModelConfig, grp: LayerGroup, layer: AttentionLayer, s: Shape, p: Precision) -> LayerCost:
    """One block of group ``grp`` at shape ``s`` whose attention is ``layer``, in precision ``p``
    (``layer``'s graph is quantised in place)."""
    rows = s.batch * s.tokens
    fp8 = quantise(layer.graph, p)
    attention = analyse(layer.graph)
    block = analyse(block_graph(cfg, s, layer.extras))
    mg = mlp_graph(cfg, s, grp.mlp)
    fp8 |= quantise(mg, p)
    mlp = analyse(mg)
    bk = {k.name: k for k in block.kernels}

    def tag(c, k):
        return c, k, any(op.name in fp8 for op in k.ops)

    ks = [tag("attention_proj" if n == "rope" else "norms", bk[n]) for n in BLOCK_BEFORE if n in bk]
    ks += [tag("attention_core" if any(op.part == "core" for op in k.ops) else "attention_proj", k)
           for k in attention.kernels]
    ks += [tag("norms", bk[n]) for n in BLOCK_BETWEEN if n in bk]
    ks += [tag("mlp", k) for k in mlp.kernels] + [tag("norms", bk[n]) for n in BLOCK_AFTER if n in bk]
    resid = rows * cfg.d * s.itemsize
    peak = max(attention.peak_fused + resid, mlp.peak_fused + resid, block.peak_fused)
    return LayerCost(layer, ks, peak)


def forward_pass(cfg: ModelConfig, variant: Optional[str], extra: Optional[dict], s: Shape, hardware=None,
                 mode: str = "eager", logits: Logits = "all", precision: Optional[Precision] = None) -> PassCost:
    """The whole model at shape ``s`` (``attention_shape``; its phase) with attention ``variant``
    (None: each layer's native one) and ``extra`` parameters over the model's, every kernel priced
    by ``timing.predict``; ``logits``: "all" rows or the "last" token of each sequence through the
    LM head; ``precision``: default all in ``s.dtype``. Raises VariantError if the variant does
    not apply."""
    p = precision or Precision.of(s.dtype)
    groups = [(grp, layer_cost(cfg, grp, layer, s, p)) for grp, layer in group_layers(cfg, s, variant, extra)]
    embed = analyse(embed_graph(cfg, s))
    head = analyse(head_graph(cfg, s, logits))
    tagged: list = [("embed", k, None, False) for k in embed.kernels]
    for i, (grp, lc) in enumerate(groups):
        tagged += [(c, k, i, f) for c, k, f in lc.kernels] * grp.count
    tagged += [("norms" if k.name == "norm_final" else "lm_head", k, None, False) for k in head.kernels]
    flops = dict.fromkeys(COMPONENTS, 0.0)
    flops_mm = nbytes = 0.0
    per_layer = [_layer_entry(grp, lc, p) for grp, lc in groups]
    for c, k, i, _ in tagged:
        flops[c] += k.flops
        flops_mm += k.flops_matmul
        nbytes += k.bytes
        if i is not None:
            per_layer[i]["flops"][c] += k.flops / per_layer[i]["count"]
    peak = max([lc.peak for _, lc in groups] + [embed.peak_fused, head.peak_fused])
    out = PassCost(phase=s.phase, flops=flops, flops_total=sum(flops.values()), flops_matmul=flops_mm,
                   bytes=nbytes, activation_bytes=peak, kernels=len(tagged), per_layer=per_layer)
    if hardware is not None:
        kernels = timing_kernels([k for _, k, _, _ in tagged], [f for *_, f in tagged], hardware, s.dtype)
        _add_times(out, tagged, per_layer, predict(kernels, hardware, s.dtype, mode=mode))
    return out


def _layer_entry(grp: LayerGroup, lc: LayerCost, p: Precision) -> dict:
    est = lc.attention.estimate
    params = dict(lc.attention.params)
    return {"kind": grp.mlp, "attention": grp.kind, "variant": grp.variant, "params": params,
            "window": params.get("window"), "count": grp.count, "first": grp.first,
            "kv_cache_bytes": est.kv_cache_bytes * p.kv_ratio,
            "kv_cache_bytes_per_token": est.kv_cache_bytes_per_token * p.kv_ratio,
            "flops": dict.fromkeys(LAYER_COMPONENTS, 0.0)}


def _add_times(out: PassCost, tagged: list, per_layer: list, te: TimeEstimate) -> None:
    """Fill ``out``'s times from ``timing.predict``'s estimate ``te`` of the ``tagged`` kernels."""
    t = dict.fromkeys(COMPONENTS, 0.0)
    for lay in per_layer:
        lay["time_s"] = dict.fromkeys(LAYER_COMPONENTS, 0.0)
    for (c, _, i, _), kt in zip(tagged, te.per_kernel):
        t[c] += kt.time_s
        if i is not None:
            per_layer[i]["time_s"][c] += kt.time_s / per_layer[i]["count"]
    out.time, out.time_s, out.bound = t, te.time_s, te.bound
    out.compute_s, out.memory_s, out.overhead_s = te.compute_s, te.memory_s, te.overhead_s
