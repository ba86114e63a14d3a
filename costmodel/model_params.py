"""Parameters (weights) of a whole model by component, what they take in memory at a precision,
and the weights one forward step reads.

The attention's weights are counted from each layer's graph as the model runs it
(``model_attention``: widened to the model's width), plus one bias per projection output where
the model has biases and the q/k or latent norms; layers whose attention differs (Gemma's local
and global layers) are counted group by group. The rest is counted here from the description.

``linear``: the weights of the blocks' linear layers (attention projections, MLPs, experts), the
ones a ``--weights-dtype`` stores; embeddings, the LM head, norms, biases and MoE routers stay at
the compute dtype (``model_precision``).

MoE routing assumes uniform, independent routing: a batch of N tokens, each picking k of E
experts, touches E (1 - (1 - k/E)^N) distinct experts on average; only those experts' weights are
read (decode at batch 1 reads k experts, a long prefill all E).
"""

from dataclasses import dataclass
from typing import Optional

from .model_attention import attention_layer, layer_params
from .model_graphs import touched_experts
from .model_precision import Precision
from .model_spec import LayerKind, ModelConfig, attention_shape

__all__ = ["ParamCount", "count_params", "count_from_layers", "group_layers", "touched_experts"]


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
    linear: float = 0.0  # the blocks' linear-layer weights (what --weights-dtype stores)

    @property
    def active_with_tables(self) -> float:
        """``active`` plus the lookup tables: all but the routed experts a token does not pick
        (what Mistral's "12.9B active" for Mixtral 8x7B counts)."""
        return self.active + self.lookup

    def weights_read(self, tokens: float, cfg: ModelConfig) -> float:
        """Parameters read by a forward step over ``tokens`` tokens: all but the lookup tables and
        the experts no token picks (uniform routing)."""
        return self.total - self.lookup - self._untouched(tokens, cfg)

    def linear_read(self, tokens: float, cfg: ModelConfig) -> float:
        """Linear-layer weights read by a forward step over ``tokens`` tokens."""
        return self.linear - self._untouched(tokens, cfg)

    def _untouched(self, tokens: float, cfg: ModelConfig) -> float:
        if not self.moe_layers:
            return 0.0
        return self.moe_layers * (cfg.moe.routed_experts - touched_experts(cfg.moe, tokens)) * self.expert

    def stored_bytes(self, p: Precision) -> float:
        """Bytes of all the weights: the linear layers at the weights dtype, the rest at the compute dtype."""
        return self.linear * p.weight_bytes + (self.total - self.linear) * p.act_bytes

    def read_bytes(self, tokens: float, cfg: ModelConfig, p: Precision) -> float:
        """Bytes of the weights a forward step over ``tokens`` tokens reads (``weights_read``)."""
        q = self.linear_read(tokens, cfg)
        return q * p.weight_bytes + (self.weights_read(tokens, cfg) - q) * p.act_bytes


def count_params(cfg: ModelConfig, variant: Optional[str] = None, params: Optional[dict] = None,
                 T: Optional[int] = None) -> ParamCount:
    """Parameters of the model with ``variant`` (default: each layer's native attention). ``T``
    matters only for variants whose weights grow with the sequence (topk, mlp_attention; default:
    context). Raises VariantError where the variant does not apply."""
    s = attention_shape(cfg, T or cfg.context, 1, "bf16", "prefill")
    return count_from_layers(cfg, group_layers(cfg, s, variant, params))


def count_from_layers(cfg: ModelConfig, layers: list) -> ParamCount:
    """The whole model's parameters, given [(LayerGroup, its prefill AttentionLayer)]."""
    attention = linear = attn_norms = 0.0
    for grp, layer in layers:
        w, b, n = layer_params(cfg, layer)
        attention += grp.count * (w + b)
        linear += grp.count * w
        attn_norms += grp.count * n
    d = cfg.d
    norm = (2 if cfg.norm == "layernorm" else 1) * d
    norms = ((2 + 2 * cfg.post_norms) * cfg.layers + 1) * norm + attn_norms
    tokens_table = cfg.vocab * d
    pos_table = cfg.context * d if cfg.positions == "learned" else 0
    embed = tokens_table + pos_table
    lm_head = 0 if cfg.tied_embeddings else cfg.vocab * d
    mlp = mlp_active = 0.0
    expert, moe_layers = 0.0, 0
    for kind, count in cfg.layer_kinds():
        n, a, e, lin = _mlp_params(cfg, kind)
        mlp += count * n
        mlp_active += count * a
        linear += count * lin
        if kind == "moe":
            expert, moe_layers = e, count
    total = embed + attention + mlp + norms + lm_head
    lookup = pos_table + (0 if cfg.tied_embeddings else tokens_table)
    active = total - lookup - (mlp - mlp_active)
    return ParamCount(embed=embed, attention=attention, mlp=mlp, norms=norms, lm_head=lm_head, total=total,
                      active=active, lookup=lookup, expert=expert, moe_layers=moe_layers, linear=linear)


def _mlp_params(cfg: ModelConfig, kind: LayerKind) -> tuple:
    """(all parameters, active parameters, one expert, linear-layer weights) of one layer's MLP."""
    d = cfg.d
    if kind == "moe":
        m = cfg.moe
        expert = 3 * d * m.expert_hidden
        shared = 3 * d * m.shared_experts * m.expert_hidden
        router = m.routed_experts * d + (m.routed_experts if m.router_bias else 0)
        experts = m.routed_experts * expert + shared
        return router + experts, router + m.active_experts * expert + shared, expert, experts
    h = cfg.mlp_hidden
    biased = cfg.bias or cfg.mlp_bias
    if cfg.mlp == "gelu":
        w, b = 2 * d * h, h + d
    else:
        w, b = 3 * d * h, 2 * h + d
    n = w + (b if biased else 0)
    return n, n, 0, w


def group_layers(cfg: ModelConfig, s, variant: Optional[str], params: Optional[dict]) -> list:
    """[(LayerGroup, AttentionLayer)] of every group of layers at shape ``s``; VariantError where
    the variant does not apply."""
    return [(grp, attention_layer(cfg, grp.variant, grp.params, s)) for grp in cfg.layer_groups(variant, params)]
