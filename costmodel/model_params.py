"""Parameters (weights) of a whole model by component, and the weights one forward step reads.

The attention's weights are the attention cost model's own count for the variant
(``Estimate.param_count``), plus one bias per projection output for a model with biases; the rest
is counted here from the description.

MoE routing assumes uniform, independent routing: a batch of N tokens, each picking k of E
experts, touches E (1 - (1 - k/E)^N) distinct experts on average; only those experts' weights are
read (decode at batch 1 reads k experts, a long prefill all E).
"""

from dataclasses import dataclass
from typing import Optional

from .estimate import Estimate, estimate, graph, resolve_params
from .graph import Graph
from .model_spec import LayerKind, ModelConfig, MoE, attention_shape
from .variants import VariantError


@dataclass(slots=True)
class ParamCount:
    """Parameters by component. ``active``: those a token's forward pass multiplies by, i.e. all
    but the lookup-only tables (position table; the token table unless tied to the LM head) and
    the routed experts it does not pick."""

    embed: float
    attention: float
    mlp: float
    norms: float
    lm_head: float
    total: float
    active: float
    lookup: float  # embedding tables only looked up (not read whole by any matmul)
    expert: float  # one routed expert (0: dense model)
    moe_layers: int

    def weights_read(self, tokens: float, cfg: ModelConfig) -> float:
        """Parameters read by a forward step over ``tokens`` tokens: all but the lookup tables and
        the experts no token picks (uniform routing)."""
        if not self.moe_layers:
            return self.total - self.lookup
        m = cfg.moe
        untouched = m.routed_experts - touched_experts(m, tokens)
        return self.total - self.lookup - self.moe_layers * untouched * self.expert


def touched_experts(moe: MoE, tokens: float) -> float:
    """Expected distinct routed experts picked by ``tokens`` tokens (uniform, independent routing)."""
    E, k = moe.routed_experts, moe.active_experts
    return E * (1.0 - (1.0 - k / E) ** tokens)


def count_params(cfg: ModelConfig, variant: Optional[str] = None, params: Optional[dict] = None,
                 T: Optional[int] = None) -> ParamCount:
    """Parameters of the model with ``variant`` (default: its native attention). ``T`` matters only
    for variants whose weights grow with the sequence (topk, mlp_attention; default: context)."""
    variant = variant or cfg.attention
    s = attention_shape(cfg, T or cfg.context, 1, "bf16", "prefill")
    p = cfg.variant_params(variant, params)
    est = estimate(variant, s, p)
    if est.status != "ok":
        raise VariantError(est.reason)
    attn = cfg.layers * attention_layer_params(est, graph(variant, s, resolve_params(variant, s, p)), cfg.bias)
    return params_with_attention(cfg, attn)


def attention_layer_params(est: Estimate, g: Graph, bias: bool) -> float:
    """One attention layer's trainable weights (``est`` and its graph ``g``), plus one bias per
    output of each projection if ``bias``."""
    n = est.param_count
    if bias:
        for op in g.ops:
            if op.kind == "matmul" and op.part == "proj" and g.tensors[op.reads[1]].role == "weight":
                n += op.mm[0] * op.mm[3]
    return n


def params_with_attention(cfg: ModelConfig, attention: float) -> ParamCount:
    """The whole model's parameters, given those of its attention (all layers together)."""
    d = cfg.d
    norm = (2 if cfg.norm == "layernorm" else 1) * d
    norms = (2 * cfg.layers + 1) * norm
    tokens_table = cfg.vocab * d
    pos_table = cfg.context * d if cfg.positions == "learned" else 0
    embed = tokens_table + pos_table
    lm_head = 0 if cfg.tied_embeddings else cfg.vocab * d
    mlp = mlp_active = 0.0
    expert, moe_layers = 0.0, 0
    for kind, count in cfg.layer_kinds():
        n, a, e = _mlp_params(cfg, kind)
        mlp += count * n
        mlp_active += count * a
        if kind == "moe":
            expert, moe_layers = e, count
    total = embed + attention + mlp + norms + lm_head
    lookup = pos_table + (0 if cfg.tied_embeddings else tokens_table)
    active = total - lookup - (mlp - mlp_active)
    return ParamCount(embed=embed, attention=attention, mlp=mlp, norms=norms, lm_head=lm_head, total=total,
                      active=active, lookup=lookup, expert=expert, moe_layers=moe_layers)


def _mlp_params(cfg: ModelConfig, kind: LayerKind) -> tuple:
    """(all parameters, active parameters, one expert) of one layer's MLP."""
    d = cfg.d
    if kind == "moe":
        m = cfg.moe
        expert = 3 * d * m.expert_hidden
        shared = 3 * d * m.shared_experts * m.expert_hidden
        router = m.routed_experts * d
        return router + m.routed_experts * expert + shared, router + m.active_experts * expert + shared, expert
    h = cfg.mlp_hidden
    if cfg.mlp == "swiglu":
        n = 3 * d * h + (2 * h + d if cfg.bias else 0)
    else:
        n = 2 * d * h + (h + d if cfg.bias else 0)
    return n, n, 0
