"""Whole models: presets with published hyperparameters, and what a whole forward pass costs.

A model is ``layers`` transformer blocks (pre-norm: norm, attention, residual add, norm, MLP,
residual add) between a token embedding and an LM head. The attention of every layer is costed by
the attention cost model itself (``estimate`` and ``graph`` of ``estimate.py``, any registered
variant); the rest of the block is built here as ``Graph`` ops too, so that one analysis
(``analysis.analyse``) and one time model (``timing.predict``) price every kernel of the model.

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

Per-element FLOPs of the model-level functions are compositions of ``units.ELEMENT_FLOPS`` entries
(that table stays the one source; each function runs as one fused kernel):

- LayerNorm 7 per element: mean 1, x - mean 1 (add), squared sum 2 (square_sum), * rstd 1 (mul),
  * gamma 1 (mul), + beta 1 (add).  RMSNorm 4: squared sum 2, * rstd 1, * gamma 1.
- GELU, tanh form (GPT-2's gelu_new) 9: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))):
  x^3 2 mul, x 0.044715 / sqrt(2/pi) / 0.5 3 scale, + x and 1 + 2 add, tanh 1 (as exp), * 1 mul.
- SiLU 3: x / (1 + exp(-x)): exp 1, add 1, div 1; SwiGLU multiplies by the up projection: mul 1.
- Bias adds of GPT-2's linears are fused into the GEMM (addmm) and not counted (their parameters
  are); a residual add is 1 per element.

MoE routing assumes uniform, independent routing: a batch of N tokens, each picking k of E
experts, touches E (1 - (1 - k/E)^N) distinct experts on average; only those experts' weights are
read (decode at batch 1 reads k experts, a long prefill all E).

Memory: weights (every parameter, all experts) + KV cache (all layers, batch x T) + peak
activations: the largest of (attention layer peak + the residual stream kept for its add), (MLP
peak + residual), the LM head (its logits: rows x vocab) and the embedding (no chunked prefill).

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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .analysis import analyse
from .estimate import estimate, graph, resolve_params
from .graph import Graph
from .jsonfile import load_json_model
from .shape import MAX_T, Shape
from .variants import REGISTRY, VariantError

COMPONENTS = ("attention_core", "attention_proj", "mlp", "norms", "embed", "lm_head")
MAX_BATCH = 1_048_576  # Shape's limit

# model-level functions as compositions of units.ELEMENT_FLOPS entries: (fn, per element)
LAYERNORM = (("mean", 1), ("add", 1), ("square_sum", 1), ("mul", 1), ("mul", 1), ("add", 1))  # 7
RMSNORM = (("square_sum", 1), ("mul", 1), ("mul", 1))  # 4
GELU_TANH = (("mul", 2), ("scale", 3), ("add", 2), ("exp", 1), ("mul", 1))  # 9
SILU = (("exp", 1), ("add", 1), ("div", 1))  # 3


class ModelError(ValueError):
    """A model preset or file cannot be found or read (one plain sentence)."""


# -- the configuration -------------------------------------------------------------------------

class MoE(BaseModel):
    """Mixture of experts (DeepSeekMoE): ``routed_experts`` SwiGLU experts of width
    ``expert_hidden``, ``active_experts`` chosen per token by a softmax router, plus
    ``shared_experts`` always applied (one SwiGLU of width shared_experts * expert_hidden). The
    first ``first_dense_layers`` layers use the dense MLP (``mlp_hidden``) instead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routed_experts: int = Field(..., ge=1)
    active_experts: int = Field(..., ge=1)
    shared_experts: int = Field(0, ge=0)
    expert_hidden: int = Field(..., ge=1)
    first_dense_layers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "MoE":
        if self.active_experts > self.routed_experts:
            raise ValueError(f"active_experts={self.active_experts} exceeds routed_experts={self.routed_experts}")
        return self


class ModelConfig(BaseModel):
    """A decoder-only transformer. Defaults are GPT-2's choices (learned positions, LayerNorm,
    biases, tied embeddings, GELU MLP, ``mha``); a JSON file needs at least name, layers, d,
    heads, vocab and mlp_hidden."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(..., min_length=1)
    source: str = Field("", description="where the hyperparameters come from")
    layers: int = Field(..., ge=1, le=10_000)
    d: int = Field(..., ge=1, le=1_048_576)
    heads: int = Field(..., ge=1)
    kv_heads: Optional[int] = Field(None, ge=1, description="K/V heads of grouped-query attention")
    vocab: int = Field(..., ge=1)
    context: int = Field(2048, ge=1, description="longest sequence the model was built for")
    positions: Literal["learned", "rope", "none"] = "learned"
    tied_embeddings: bool = True
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    bias: bool = Field(True, description="linear layers have biases (GPT-2)")
    mlp: Literal["gelu", "swiglu"] = "gelu"
    mlp_hidden: int = Field(..., ge=1, description="MLP width of the dense layers")
    moe: Optional[MoE] = None
    attention: str = Field("mha", description="the native attention variant")
    attention_params: dict[str, dict] = Field(default_factory=dict,
                                              description="variant -> parameters used with this model")
    window: Optional[int] = Field(None, ge=1, description="sliding attention window of the original model")
    published_params: Optional[float] = Field(None, description="total parameters, as published")
    published_active_params: Optional[float] = Field(None, description="parameters active per token, as published")
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.d % self.heads:
            raise ValueError(f"heads must divide d: d={self.d} is not divisible by heads={self.heads}")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"kv_heads must divide heads: heads={self.heads} is not divisible by "
                             f"kv_heads={self.kv_heads}")
        if self.attention not in REGISTRY:
            raise ValueError(f"unknown attention variant {self.attention!r}: choose from {', '.join(REGISTRY)}")
        for v, p in self.attention_params.items():
            if v not in REGISTRY:
                raise ValueError(f"attention_params: unknown variant {v!r}")
            try:
                REGISTRY[v].params(**p)
            except ValidationError as err:
                e = err.errors()[0]
                raise ValueError(f"attention_params.{v}.{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
        if self.moe is not None and self.moe.first_dense_layers > self.layers:
            raise ValueError(f"moe.first_dense_layers={self.moe.first_dense_layers} exceeds layers={self.layers}")
        return self

    @property
    def head_dim(self) -> int:
        return self.d // self.heads

    def layer_kinds(self) -> list:
        """[(kind, count)]: "dense" layers (dense MLP) and "moe" layers."""
        if self.moe is None:
            return [("dense", self.layers)]
        f = self.moe.first_dense_layers
        return [(k, n) for k, n in (("dense", f), ("moe", self.layers - f)) if n]

    def variant_params(self, variant: str, extra: Optional[dict] = None) -> dict:
        """The preset's parameters for ``variant`` with ``extra`` (e.g. from --param) over them."""
        return {**self.attention_params.get(variant, {}), **(extra or {})}


# -- presets -----------------------------------------------------------------------------------
_GPT2_SOURCE = ("Radford et al. 2019, Language Models are Unsupervised Multitask Learners; "
                "https://huggingface.co/openai-community/{name}/blob/main/config.json "
                "(n_layer {layers}, n_embd {d}, n_head {heads}, n_positions 1024, vocab_size 50257, "
                "n_inner 4*n_embd, activation gelu_new, tied lm_head)")


def _gpt2(name: str, layers: int, d: int, heads: int, published: float) -> ModelConfig:
    return ModelConfig(
        name=name, layers=layers, d=d, heads=heads, vocab=50257, context=1024, positions="learned",
        tied_embeddings=True, norm="layernorm", bias=True, mlp="gelu", mlp_hidden=4 * d, attention="mha",
        published_params=published,
        source=_GPT2_SOURCE.format(name=name, layers=layers, d=d, heads=heads))


PRESETS: dict = {
    "gpt2": _gpt2("gpt2", 12, 768, 12, 124.44e6),
    "gpt2-medium": _gpt2("gpt2-medium", 24, 1024, 16, 354.8e6),
    "gpt2-xl": _gpt2("gpt2-xl", 48, 1600, 25, 1.558e9),
    "llama-3-8b": ModelConfig(
        name="llama-3-8b", layers=32, d=4096, heads=32, kv_heads=8, vocab=128256, context=8192,
        positions="rope", tied_embeddings=False, norm="rmsnorm", bias=False, mlp="swiglu",
        mlp_hidden=14336, attention="gqa", published_params=8.03e9,
        source="Meta 2024, https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json "
               "(num_hidden_layers 32, hidden_size 4096, num_attention_heads 32, num_key_value_heads 8, "
               "intermediate_size 14336, vocab_size 128256, max_position_embeddings 8192, rope_theta "
               "500000, tie_word_embeddings false, RMSNorm, SiLU)"),
    "mistral-7b": ModelConfig(
        name="mistral-7b", layers=32, d=4096, heads=32, kv_heads=8, vocab=32000, context=32768,
        positions="rope", tied_embeddings=False, norm="rmsnorm", bias=False, mlp="swiglu",
        mlp_hidden=14336, attention="gqa", window=4096, published_params=7.24e9,
        attention_params={"gqa": {"window": 4096}, "sliding_window": {"window": 4096}},
        source="Jiang et al. 2023, Mistral 7B (arXiv:2310.06825); "
               "https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json (num_hidden_layers "
               "32, hidden_size 4096, num_attention_heads 32, num_key_value_heads 8, intermediate_size "
               "14336, vocab_size 32000, max_position_embeddings 32768, sliding_window 4096, untied)",
        notes=["v0.1 attends within a sliding window of 4096 tokens with 8 K/V heads: costed as gqa "
               "with window 4096 (a rolling KV cache of at most 4096 tokens)"]),
    "deepseek-v2-lite": ModelConfig(
        name="deepseek-v2-lite", layers=27, d=2048, heads=16, vocab=102400, context=32768,
        positions="rope", tied_embeddings=False, norm="rmsnorm", bias=False, mlp="swiglu",
        mlp_hidden=10944, attention="mla",
        moe=MoE(routed_experts=64, active_experts=6, shared_experts=2, expert_hidden=1408, first_dense_layers=1),
        attention_params={"mla": {"kv_lora_rank": 512, "q_lora_rank": 0, "rope_dim": 64},
                          "dsa": {"kv_lora_rank": 512, "q_lora_rank": 0, "rope_dim": 64}},
        published_params=15.7e9, published_active_params=2.4e9,
        source="DeepSeek-AI 2024, DeepSeek-V2 (arXiv:2405.04434), Appendix B (DeepSeek-V2-Lite); "
               "https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite/blob/main/config.json "
               "(num_hidden_layers 27, hidden_size 2048, num_attention_heads 16, kv_lora_rank 512, "
               "q_lora_rank null, qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128, "
               "intermediate_size 10944, first_k_dense_replace 1, n_routed_experts 64, n_shared_experts 2, "
               "num_experts_per_tok 6, moe_intermediate_size 1408, vocab_size 102400, untied; context 32k)",
        notes=["MLA's RMSNorm on the KV latent (512 weights per layer) is not counted",
               "published 2.4B active parameters: attncost counts 2.45B excluding the input-embedding "
               "table (a lookup), 2.66B including it"]),
}


def model_names() -> tuple:
    return tuple(PRESETS)


def get_model(name_or_path) -> ModelConfig:
    """A preset by name (case-insensitive) or a model from a JSON file; ModelError otherwise."""
    if isinstance(name_or_path, ModelConfig):
        return name_or_path
    key = str(name_or_path).strip()
    if key.lower() in PRESETS:
        return PRESETS[key.lower()]
    p = Path(key).expanduser()
    if p.suffix.lower() == ".json" or "/" in key or "\\" in key or p.exists():
        return load_model(p)
    raise ModelError(f"unknown model {key!r}: choose one of {', '.join(PRESETS)} or give a JSON file")


def load_model(path) -> ModelConfig:
    """Read a model from a JSON file; ModelError with one sentence if it is not one."""
    return load_json_model(path, ModelConfig, ("model file", "model"), ModelError)


# -- parameters --------------------------------------------------------------------------------

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


def _mlp_params(cfg: ModelConfig, kind: str) -> tuple:
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


def _attention_params(est, g: Graph, bias: bool) -> float:
    """The variant's trainable weights, plus one bias per output of each projection if ``bias``."""
    n = est.param_count
    if bias:
        for op in g.ops:
            if op.kind == "matmul" and op.part == "proj" and g.tensors[op.reads[1]].role == "weight":
                n += op.mm[0] * op.mm[3]
    return n


def count_params(cfg: ModelConfig, variant: Optional[str] = None, params: Optional[dict] = None,
                 T: Optional[int] = None) -> ParamCount:
    """Parameters of the model with ``variant`` (default: its native attention). ``T`` matters only
    for variants whose weights grow with the sequence (topk, mlp_attention; default: context)."""
    variant = variant or cfg.attention
    s = _shape(cfg, T or cfg.context, 1, "bf16", "prefill")
    p = cfg.variant_params(variant, params)
    est = estimate(variant, s, p)
    if est.status != "ok":
        raise VariantError(est.reason)
    attn = cfg.layers * _attention_params(est, graph(variant, s, resolve_params(variant, s, p)), cfg.bias)
    return _param_count(cfg, attn)


def _param_count(cfg: ModelConfig, attn: float) -> ParamCount:
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
    total = embed + attn + mlp + norms + lm_head
    lookup = pos_table + (0 if cfg.tied_embeddings else tokens_table)
    active = total - lookup - (mlp - mlp_active)
    return ParamCount(embed=embed, attention=attn, mlp=mlp, norms=norms, lm_head=lm_head, total=total,
                      active=active, lookup=lookup, expert=expert, moe_layers=moe_layers)


# -- graphs of the non-attention parts ---------------------------------------------------------

def _shape(cfg: ModelConfig, T: int, batch: int, dtype: str, phase: str) -> Shape:
    return Shape(batch=batch, T=T, d=cfg.d, heads=cfg.heads, kv_heads=cfg.kv_heads, dtype=dtype,
                 causal=True, phase=phase)


def _fused(g: Graph, name: str, terms: tuple, reads: tuple, elems: float) -> str:
    """One kernel ``name`` applying ``terms`` ((ELEMENT_FLOPS key, times per element), ...) to
    ``elems`` elements; the first op reads ``reads``."""
    out = None
    for i, (fn, times) in enumerate(terms):
        last = i == len(terms) - 1
        out = g.elementwise(name if last else f"{name}.{i}", fn, reads if out is None else (out,),
                            elems=elems * times, out_elems=elems, kernel=name)
    return out


def _norm(g: Graph, cfg: ModelConfig, name: str, x: str, rows: float) -> str:
    ln = cfg.norm == "layernorm"
    w = g.weight(name + ".weight", (2 if ln else 1) * cfg.d)
    return _fused(g, name, LAYERNORM if ln else RMSNORM, (x, w), rows * cfg.d)


def _linear(g: Graph, name: str, x: str, rows: float, k: int, n: int, batch: float = 1) -> str:
    """A bias-free linear layer; ``batch`` > 1: that many (experts') weights, ``rows`` tokens each."""
    w = g.weight("W_" + name, batch * k * n)
    return g.matmul(name, x, w, batch=batch, m=rows, k=k, n=n, part="proj")


def _swiglu(g: Graph, name: str, x: str, rows: float, d: int, h: int, batch: float = 1) -> str:
    """down(silu(gate(x)) * up(x)); ``batch`` experts of ``rows`` tokens each (grouped GEMM)."""
    gate = _linear(g, name + "gate", x, rows, d, h, batch)
    up = _linear(g, name + "up", x, rows, d, h, batch)
    a = _fused(g, name + "silu", SILU, (gate,), batch * rows * h)
    a = g.elementwise(name + "mul", "mul", (a, up), elems=batch * rows * h)
    return _linear(g, name + "down", a, rows, h, d, batch)


def mlp_graph(cfg: ModelConfig, s: Shape, kind: str) -> Graph:
    """The MLP of one layer at this shape (rows = batch x tokens)."""
    g = Graph(s.itemsize)
    rows, d = s.batch * s.tokens, cfg.d
    x = g.input("x", rows * d)
    if kind == "moe":
        m = cfg.moe
        E, k = m.routed_experts, m.active_experts
        logits = _linear(g, "router", x, rows, d, E)
        probs = g.elementwise("router_softmax", "softmax", (logits,), elems=rows * E)
        idx = g.elementwise("router_topk", "topk", (probs,), elems=rows * E, out_elems=rows * k, index_out=True)
        n = touched_experts(m, rows)
        xs = g.elementwise("dispatch", "gather", (x, idx), elems=rows * k * d)
        y = _swiglu(g, "expert_", xs, rows * k / n, d, m.expert_hidden, batch=n)
        y = g.elementwise("combine_weigh", "mul", (y, probs), elems=rows * k * d)
        y = g.elementwise("combine_sum", "add", (y,), elems=rows * k * d, out_elems=rows * d)
        if m.shared_experts:
            sh = _swiglu(g, "shared_", x, rows, d, m.shared_experts * m.expert_hidden)
            y = g.elementwise("shared_add", "add", (y, sh), elems=rows * d)
        g.output(y)
    elif cfg.mlp == "swiglu":
        g.output(_swiglu(g, "mlp_", x, rows, d, cfg.mlp_hidden))
    else:
        h = _linear(g, "mlp_fc", x, rows, d, cfg.mlp_hidden)
        a = _fused(g, "mlp_gelu", GELU_TANH, (h,), rows * cfg.mlp_hidden)
        g.output(_linear(g, "mlp_proj", a, rows, cfg.mlp_hidden, d))
    return g


def _block_graph(cfg: ModelConfig, s: Shape, rope_elems: float) -> Graph:
    """Norms and residual adds of one block (kernels norm_attn, rope, residual_attn, norm_mlp,
    residual_mlp); the attention and MLP outputs enter as inputs."""
    g = Graph(s.itemsize)
    rows = s.batch * s.tokens
    x = g.input("x", rows * cfg.d)
    _norm(g, cfg, "norm_attn", x, rows)
    if rope_elems:
        qk = g.input("qk", rope_elems)
        g.output(g.elementwise("rope", "rope", (qk,), elems=rope_elems))
    a = g.input("attn_out", rows * cfg.d)
    r = g.elementwise("residual_attn", "add", (x, a), elems=rows * cfg.d)
    _norm(g, cfg, "norm_mlp", r, rows)
    m = g.input("mlp_out", rows * cfg.d)
    g.output(g.elementwise("residual_mlp", "add", (r, m), elems=rows * cfg.d))
    return g


def _embed_graph(cfg: ModelConfig, s: Shape) -> Graph:
    """Token (and position) lookups: gathers of ``rows`` table rows, 0 FLOPs, then the position add."""
    g = Graph(s.itemsize)
    rows = s.batch * s.tokens
    ids = g.input("token_ids", rows)
    tok = g.elementwise("embed_tokens", "gather", (ids, g.weight("wte_rows", rows * cfg.d, trainable=False)),
                        elems=rows * cfg.d)
    if cfg.positions == "learned":
        pos = g.elementwise("embed_positions", "gather", (g.weight("wpe_rows", rows * cfg.d, trainable=False),),
                            elems=rows * cfg.d)
        tok = g.elementwise("embed_add", "add", (tok, pos), elems=rows * cfg.d)
    g.output(tok)
    return g


def _head_graph(cfg: ModelConfig, s: Shape, logits: str = "all") -> Graph:
    """Final norm and LM head: logits for every row (``all``) or for the last token of each
    sequence (``last``, what generation needs)."""
    g = Graph(s.itemsize)
    rows = s.batch * (s.tokens if logits == "all" else 1)
    x = _norm(g, cfg, "norm_final", g.input("x", rows * cfg.d), rows)
    g.output(_linear(g, "lm_head", x, rows, cfg.d, cfg.vocab))
    return g


def _rope_elems(cfg: ModelConfig, g: Graph, rows: float) -> float:
    """Elements of q and k that a rope model rotates, when the variant does not rotate them itself
    (mla and dsa carry their own decoupled RoPE): the q_proj and k_proj outputs, if any."""
    if cfg.positions != "rope" or any(op.fn == "rope" for op in g.ops):
        return 0.0
    return sum(g.tensors[n].elems for n in ("q_proj", "k_proj") if n in g.tensors)


# -- one forward pass of the whole model -------------------------------------------------------

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
class _Layer:
    est: object
    kernels: list  # [(component, Kernel)] in launch order
    peak: float


def _layer(cfg: ModelConfig, variant: str, p, s: Shape, kind: str) -> _Layer:
    est = estimate(variant, s, dict(p))
    if est.status != "ok":
        raise VariantError(est.reason)
    ag = graph(variant, s, p)
    rows = s.batch * s.tokens
    block = analyse(_block_graph(cfg, s, _rope_elems(cfg, ag, rows)))
    mlp = analyse(mlp_graph(cfg, s, kind))
    bk = {k.name: k for k in block.kernels}
    attn = [("attention_core" if any(op.part == "core" for op in k.ops) else "attention_proj", k)
            for k in analyse(ag).kernels]
    ks = [("norms", bk["norm_attn"])] + ([("attention_proj", bk["rope"])] if "rope" in bk else [])
    ks += attn + [("norms", bk["residual_attn"]), ("norms", bk["norm_mlp"])]
    ks += [("mlp", k) for k in mlp.kernels] + [("norms", bk["residual_mlp"])]
    resid = rows * cfg.d * s.itemsize
    peak = max(est.activation_bytes_fused + resid, mlp.peak_fused + resid, block.peak_fused)
    return _Layer(est, ks, peak)


def forward_pass(cfg: ModelConfig, variant: str, p, s: Shape, hardware=None, mode: str = "eager",
                 logits: str = "all") -> PassCost:
    """The whole model at shape ``s`` (its phase), every kernel priced by ``timing.predict``.
    ``p``: the variant's resolved parameters; ``logits``: "all" rows or the "last" token of each
    sequence through the LM head. Raises VariantError if the variant does not apply."""
    kinds = cfg.layer_kinds()
    layers = {kind: _layer(cfg, variant, p, s, kind) for kind, _ in kinds}
    embed = analyse(_embed_graph(cfg, s))
    head = analyse(_head_graph(cfg, s, logits))
    tagged: list = [("embed", k, None) for k in embed.kernels]
    for kind, count in kinds:
        tagged += [(c, k, kind) for c, k in layers[kind].kernels] * count
    tagged += [("norms" if k.name == "norm_final" else "lm_head", k, None) for k in head.kernels]
    flops = dict.fromkeys(COMPONENTS, 0.0)
    flops_mm = nbytes = 0.0
    per_layer: dict = {kind: {"kind": kind, "count": count, "flops": dict.fromkeys(COMPONENTS[:4], 0.0)}
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
        from .timing import predict

        te = predict([k for _, k, _ in tagged], hardware, s.dtype, mode=mode)
        t = dict.fromkeys(COMPONENTS, 0.0)
        for lay in per_layer.values():
            lay["time_s"] = dict.fromkeys(COMPONENTS[:4], 0.0)
        for (c, _, kind), kt in zip(tagged, te.per_kernel):
            t[c] += kt.time_s
            if kind is not None:
                per_layer[kind]["time_s"][c] += kt.time_s / per_layer[kind]["count"]
        out.time, out.time_s, out.bound = t, te.time_s, te.bound
        out.compute_s, out.memory_s, out.overhead_s = te.compute_s, te.memory_s, te.overhead_s
    return out


# -- memory: what fits -------------------------------------------------------------------------

def memory_bytes(cfg: ModelConfig, variant: str, params: dict, T: int, batch: int, dtype: str,
                 logits: str = "all") -> float:
    """Weights + KV cache (all layers, batch x T) + peak activations of the prefill of batch x T;
    inf where the variant does not apply at this T."""
    try:
        s = _shape(cfg, T, batch, dtype, "prefill")
        p = resolve_params(variant, s, params)
        layers = [_layer(cfg, variant, p, s, kind) for kind, _ in cfg.layer_kinds()]
    except (VariantError, ValidationError):
        return math.inf
    attn = _attention_params(layers[0].est, graph(variant, s, p), cfg.bias) * cfg.layers
    weights = _param_count(cfg, attn).total * s.itemsize
    kv = cfg.layers * layers[0].est.kv_cache_bytes
    peak = max([lay.peak for lay in layers] + [analyse(_embed_graph(cfg, s)).peak_fused,
                                               analyse(_head_graph(cfg, s, logits)).peak_fused])
    return weights + kv + peak


def _largest(fits, start: int, hi: int) -> int:
    """Largest n in [1, hi] with fits(n), given fits is monotone (True then False); 0 if none."""
    if fits(start):
        lo = start
        n = start
        while n < hi:
            n = min(hi, 2 * n)
            if not fits(n):
                hi = n - 1
                break
            lo = n
        else:
            return lo
    else:
        lo, hi = 0, start - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_T_fitting(cfg: ModelConfig, variant: str, params: dict, batch: int, dtype: str, mem_bytes: float,
                  start: int = 1024, logits: str = "all") -> int:
    """Largest T (up to Shape's limit) whose weights + KV cache + prefill activations fit ``mem_bytes``."""
    return _largest(lambda t: memory_bytes(cfg, variant, params, t, batch, dtype, logits) <= mem_bytes,
                    max(1, min(start, MAX_T)), MAX_T)


def max_batch_fitting(cfg: ModelConfig, variant: str, params: dict, T: int, dtype: str, mem_bytes: float,
                      logits: str = "all") -> int:
    """Largest batch of T-token sequences whose weights + KV cache + prefill activations fit."""
    return _largest(lambda b: memory_bytes(cfg, variant, params, T, b, dtype, logits) <= mem_bytes, 1, MAX_BATCH)


# -- the whole-model estimate ------------------------------------------------------------------

@dataclass(slots=True)
class ModelEstimate:
    """One (model, attention variant, T, batch) point. ``as_dict`` gives the stable JSON fields.

    prefill: the forward pass over T tokens of ``batch`` sequences (its time is the time to first
    token); decode: one new token per sequence against a cache of T (None if the variant has no
    decode path). Times need a hardware profile; fits / max_T_fitting / max_batch_fitting its
    memory size.
    """

    model: str
    variant: str
    params: dict
    T: int
    batch: int
    dtype: str
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
    logits: str = "all"  # the prefill's LM head: all T tokens or the last one

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
            "batch": self.batch, "dtype": self.dtype, "hardware": self.hardware, "status": self.status,
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
    if pc is None:
        return None
    out = {"flops": {c: v / pc.flops_total if pc.flops_total else 0.0 for c, v in pc.flops.items()}}
    if pc.time is not None:
        tot = sum(pc.time.values())
        out["time"] = {c: v / tot if tot else 0.0 for c, v in pc.time.items()}
    return out


def predict_model(model, *, T: int, batch: int = 1, dtype: str = "bf16", variant: Optional[str] = None,
                  params: Optional[dict] = None, hardware=None, search: bool = True,
                  mode: str = "eager", logits: Literal["all", "last"] = "all") -> ModelEstimate:
    """The whole model (a preset name, a JSON path or a ModelConfig) with attention ``variant``
    (default: its native one) at T tokens and ``batch`` sequences: parameters, weights and KV-cache
    memory, prefill (time to first token) and one decode step (tokens/s), FLOPs and time by
    component; with a hardware profile, what fits its memory (``search``: the largest T and
    batch). A variant that does not apply gets status "n/a" with the reason.

    ``mode``: "eager" (PyTorch eager, host time per kernel) or "device" (see ``timing.predict``);
    ``logits``: the prefill's LM head over "all" T tokens (a forward pass, the default) or the
    "last" token of each sequence (what generation keeps; less time and activation memory)."""
    if logits not in ("all", "last"):
        raise ValueError(f"logits must be 'all' or 'last', not {logits!r}")
    cfg = get_model(model)
    variant = variant or cfg.attention
    if variant not in REGISTRY:
        raise VariantError(f"unknown variant {variant!r}: choose from {', '.join(REGISTRY)}")
    extra = cfg.variant_params(variant, params)
    s = _shape(cfg, T, batch, dtype, "prefill")
    out = ModelEstimate(model=cfg.name, variant=variant, params=dict(extra), T=T, batch=batch, dtype=dtype,
                        hardware=getattr(hardware, "name", None), context=cfg.context, logits=logits)
    out.notes = _notes(cfg, variant, T)
    try:
        p = resolve_params(variant, s, extra)
        pc = count_params(cfg, variant, extra, T)
        out.params = dict(p)
        out.prefill = forward_pass(cfg, variant, p, s, hardware, mode, logits)
    except VariantError as err:
        out.status, out.reason = "n/a", str(err)
        return out
    est = estimate(variant, s, dict(p))
    out.notes += [n for n in est.notes if n not in out.notes]
    out.param_count, out.param_count_active = pc.total, pc.active
    out.params_by_component = {"embed": pc.embed, "attention": pc.attention, "mlp": pc.mlp, "norms": pc.norms,
                               "lm_head": pc.lm_head}
    out.weights_bytes = pc.total * s.itemsize
    out.kv_cache_bytes = cfg.layers * est.kv_cache_bytes
    out.kv_cache_bytes_per_token = cfg.layers * est.kv_cache_bytes_per_token
    ds = s.with_(phase="decode")
    try:
        out.decode = forward_pass(cfg, variant, resolve_params(variant, ds, extra), ds, hardware, mode)
    except VariantError as err:
        out.decode_reason = str(err)
    if out.decode is not None:
        out.decode_weights_bytes_read = pc.weights_read(batch, cfg) * s.itemsize
        dk = estimate(variant, ds, dict(resolve_params(variant, ds, extra)))
        out.decode_bytes_min = out.decode_weights_bytes_read + cfg.layers * dk.kv_cache_bytes
        if hardware is not None:
            out.decode_tokens_per_s_roofline = batch * hardware.mem_bandwidth / out.decode_bytes_min
    out.memory_bytes = memory_bytes(cfg, variant, extra, T, batch, dtype, logits)
    if hardware is not None:
        out.mem_bytes = hardware.mem_bytes
        out.fits = out.memory_bytes <= hardware.mem_bytes
        if search:
            out.max_T_fitting = max_T_fitting(cfg, variant, extra, batch, dtype, hardware.mem_bytes, start=T,
                                              logits=logits)
            out.max_batch_fitting = max_batch_fitting(cfg, variant, extra, T, dtype, hardware.mem_bytes, logits)
    return out


def _notes(cfg: ModelConfig, variant: str, T: int) -> list:
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
