"""The attention of one layer as a whole model runs it: the variant's own graph (``estimate.graph``,
the attention cost model's), fitted into the model.

- Width: a variant is built at the attention's width, heads x head dim. Where that differs from
  the model's width d (Gemma's head_dim 256, Qwen3-0.6B, DeepSeek-V3's MLA), ``widen`` gives the
  projections that read the layer input d rows (Q/K/V, MLA's down projections) and the output
  projection d columns: FLOPs and weights scale by d / width, nothing else changes. A variant
  that reads its input other than through a projection cannot be widened (VariantError).
- Soft-capping (Gemma 2): ``softcap`` puts c * tanh(s / c) on the scores between their scale and
  the softmax, in the same kernel: 3 FLOPs per score (divide, tanh counted as one exp, multiply),
  as FlashAttention >= 2.6 and FlashInfer fuse it. (PyTorch's SDPA has no soft-capping: eager
  transformers runs such layers on its math path.)
- Around the attention, at the model level: RoPE on q and k where the variant does not rotate
  them itself (a ``rope_fraction`` share of their channels), RMSNorm over each head's q and k
  (``qk_norm``) and MLA's RMSNorm on its latents (``latent_norm``): ``Extras`` gives their
  elements, which ``model_graphs.block_graph`` costs.
- Parameters: the graph's weights plus one bias per projection output where the model has them
  (``bias``, ``attention_bias``), plus the norm weights of ``qk_norm`` / ``latent_norm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .estimate import Estimate, estimate, graph, resolve_params
from .graph import Graph, Tensor
from .model_spec import ModelConfig
from .shape import Shape
from .variants import Params, VariantError

SOFTCAP = (("scale", 1), ("exp", 1), ("scale", 1))  # x / c, tanh (as exp), * c
QKV = ("q_proj", "k_proj", "v_proj")


class Extras(NamedTuple):
    """Elements the model treats around the attention: RoPE, q/k norms, latent norms."""

    rope: float
    qk_norm: float
    latent_norm: float


@dataclass(slots=True)
class AttentionLayer:
    """One layer's attention: the variant, its resolved parameters, the attention cost model's
    estimate, the graph as the model runs it (widened, soft-capped), and what surrounds it."""

    variant: str
    params: Params
    estimate: Estimate
    graph: Graph
    extras: Extras


def attention_layer(cfg: ModelConfig, variant: str, params: dict, s: Shape) -> AttentionLayer:
    """The attention of a layer of ``cfg`` with ``variant`` and (unresolved) ``params`` at shape
    ``s`` (``model_spec.attention_shape``); VariantError if the variant does not apply."""
    p = resolve_params(variant, s, params)
    est = estimate(variant, s, dict(p))
    if est.status != "ok":
        raise VariantError(est.reason)
    g = graph(variant, s, p)
    widen(g, cfg.d, variant)
    if cfg.attention_softcap:
        softcap(g)
    return AttentionLayer(variant, p, est, g, extras(cfg, g, p, s))


def layer_params(cfg: ModelConfig, layer: AttentionLayer) -> tuple:
    """(weights, biases, norm weights) of one layer's attention, from its prefill graph."""
    g = layer.graph
    weights = sum(t.elems for t in g.tensors.values() if t.role == "weight")
    return weights, _biases(cfg, g), _norm_weights(cfg, g, layer.params)


def widen(g: Graph, d: int, variant: str = "") -> None:
    """Fit a graph built at the attention's width to a model of width ``d``, in place: the
    projections reading the input "x" get k = d, the output projection n = d."""
    readers = [op for op in g.ops if "x" in op.reads]
    width = readers[0].mm[2] if readers and readers[0].mm else None
    if width is None or width == d:
        return
    if any(op.kind != "matmul" or op.reads[0] != "x" for op in readers):
        raise VariantError(f"{variant} reads its input other than through a projection: it cannot run in a model "
                           f"whose heads x head dim ({width}) differs from its width ({d})")
    last = next(op for op in reversed(g.ops) if op.out == g.outputs[-1])
    if last.kind != "matmul" or last.mm[3] != width:
        raise VariantError(f"{variant} does not end in an output projection: it cannot run in a model whose "
                           f"heads x head dim ({width}) differs from its width ({d})")
    f = d / width
    rows = g.tensors["x"].elems / width
    _resize(g, "x", rows * d)
    for op in readers + [last]:
        op.flops, op.macs = op.flops * f, op.macs * f
        b, m, k, n = op.mm
        op.mm = (b, m, d, n) if op is not last else (b, m, k, d)
        w = op.reads[1]
        _resize(g, w, g.tensors[w].elems * f)
    _resize(g, last.out, g.tensors[last.out].elems * f)
    last.out_elems *= f


def _resize(g: Graph, name: str, elems: float) -> None:
    t = g.tensors[name]
    g.tensors[name] = Tensor(name, elems, t.itemsize, t.role)


def softcap(g: Graph) -> int:
    """c * tanh(s / c) on every score tensor (a "scale" op of the core read only by a mask or a
    softmax), in its kernel; returns how many were capped."""
    targets = []
    for i, op in enumerate(g.ops):
        users = [u for u in g.ops if op.out in u.reads]
        if op.fn == "scale" and op.part == "core" and users and all(u.fn in ("mask", "softmax") for u in users):
            targets.append(i)
    for i in reversed(targets):
        op = g.ops[i]
        kernel = op.kernel if op.kernel != op.name else op.name + "_softcap"
        out = op.out
        start = len(g.ops)
        for j, (fn, times) in enumerate(SOFTCAP):
            out = g.elementwise(f"{op.name}.softcap{j}", fn, (out,), elems=op.elems * times, out_elems=op.out_elems,
                                kernel=kernel, recompute=op.recompute)
        new = g.ops[start:]
        del g.ops[start:]
        g.ops[i + 1:i + 1] = new
        for u in g.ops[i + 1 + len(new):]:
            if op.out in u.reads:
                u.reads = tuple(out if r == op.out else r for r in u.reads)
    return len(targets)


def extras(cfg: ModelConfig, g: Graph, p: Params, s: Shape) -> Extras:
    """RoPE, q/k-norm and latent-norm elements around the attention graph ``g``."""
    qk = sum(g.tensors[n].elems for n in ("q_proj", "k_proj") if n in g.tensors)
    rope = qk * cfg.rope_fraction if applies_rope(cfg, g) else 0.0
    latent = 0.0
    if cfg.latent_norm and hasattr(p, "kv_lora_rank"):
        latent = s.batch * s.tokens * (p.kv_lora_rank + (p.q_lora_rank or 0))
    return Extras(rope, qk if cfg.qk_norm else 0.0, latent)


def applies_rope(cfg: ModelConfig, attention: Graph) -> bool:
    """Whether a ``rope`` model rotates q and k around the variant's ``attention`` graph: not when
    the variant rotates them itself (mla and dsa carry their own decoupled RoPE)."""
    rotates_itself = "rope_cos" in attention.tensors or any(op.fn == "rope" for op in attention.ops)
    return cfg.positions == "rope" and not rotates_itself


def _biases(cfg: ModelConfig, g: Graph) -> float:
    """One bias per output of each projection that has one (a prefill graph's projections)."""
    which = "all" if cfg.bias else cfg.attention_bias
    if which == "none":
        return 0.0
    n = 0.0
    for op in g.ops:
        if op.kind == "matmul" and op.part == "proj" and g.tensors[op.reads[1]].role == "weight":
            if which == "all" or op.name in QKV:
                n += op.mm[0] * op.mm[3]
    return n


def _norm_weights(cfg: ModelConfig, g: Graph, p: Params) -> float:
    n = 0.0
    if cfg.qk_norm:
        n += cfg.head_size * sum(1 for name in ("q_proj", "k_proj") if name in g.tensors)
    if cfg.latent_norm and hasattr(p, "kv_lora_rank"):
        n += p.kv_lora_rank + (p.q_lora_rank or 0)
    return n
