"""The architectures attncost reads from a Hugging Face config.json: for each ``model_type``, the
fields it reads (a pydantic model with transformers' defaults for the fields a config may omit)
and how they map to a ``ModelConfig``. ``hf_config`` reads the file, picks the family and says
what each other field means for the cost.

Sources: the modelling code and configuration classes of Hugging Face transformers (4.5x) for
each model_type, and the published config.json files cited by the tests:

- ``llama`` (Llama 2, 3, 3.x), ``mistral`` (a sliding window on every layer), ``mixtral``
  (num_local_experts experts, num_experts_per_tok active, a linear router), ``phi3`` (Phi-3/4:
  fused qkv and gate_up projections hold the same weights; partial_rotary_factor), ``qwen2``
  (biases on q, k and v; a sliding window from layer max_window_layers on, when
  use_sliding_window), ``qwen3`` (no biases; RMSNorm over each head's q and k; head_dim
  independent of the width);
- ``gemma2``: sliding-window layers (even ones) alternate with global ones; head_dim independent
  of the width; four norms per block; embeddings scaled by sqrt(hidden_size); GeGLU MLP;
  tanh soft-capping of attention scores and of the logits. ``gemma3`` / ``gemma3_text``: five
  local layers for one global (sliding_window_pattern), q/k RMSNorm, no soft-capping by default;
  a multimodal config's text_config is the language model;
- ``gpt2``: learned positions, LayerNorm, biases everywhere, GELU (tanh) MLP, tied LM head;
- ``deepseek_v2`` / ``deepseek_v3``: MLA (kv_lora_rank, q_lora_rank, qk_rope_head_dim,
  qk_nope_head_dim), RMSNorm on the latents, MoE with shared experts after first_k_dense_replace
  dense layers; V3's router has a score bias per expert (topk_method noaux_tc).

Layer patterns: a config's ``layer_types`` list wins where it has one; otherwise the pattern is
the family's rule. A repeating pattern is kept as its shortest period.
"""

from __future__ import annotations

from typing import Annotated, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .model_spec import LayerAttention, MoE

Pos = Annotated[int, Field(ge=1, le=1_048_576)]
Layers = Annotated[int, Field(ge=1, le=10_000)]
LayerType = Literal["full_attention", "sliding_attention"]
SLIDING, FULL = "sliding_attention", "full_attention"


class Fields(BaseModel):
    """The fields of a config.json that attncost reads (other fields are kept aside)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)


class DecoderFields(Fields):
    hidden_size: Pos
    num_hidden_layers: Layers
    num_attention_heads: Pos
    num_key_value_heads: Optional[Pos] = None
    head_dim: Optional[Pos] = None
    intermediate_size: Pos
    vocab_size: Pos
    max_position_embeddings: Pos = 2048
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    quantization_config: Optional[dict] = None


class LlamaFields(DecoderFields):
    attention_bias: bool = False
    mlp_bias: bool = False


class MistralFields(LlamaFields):
    max_position_embeddings: Pos = 131_072
    sliding_window: Optional[Pos] = 4096


class MixtralFields(MistralFields):
    sliding_window: Optional[Pos] = None
    num_local_experts: Pos = 8
    num_experts_per_tok: Pos = 2


class Phi3Fields(LlamaFields):
    max_position_embeddings: Pos = 4096
    sliding_window: Optional[Pos] = None
    partial_rotary_factor: float = Field(1.0, gt=0, le=1)


class Qwen2Fields(DecoderFields):
    max_position_embeddings: Pos = 32_768
    sliding_window: Optional[Pos] = 4096
    use_sliding_window: bool = False
    max_window_layers: int = Field(28, ge=0)
    layer_types: Optional[list[LayerType]] = None


class Qwen3Fields(Qwen2Fields):
    head_dim: Optional[Pos] = 128
    attention_bias: bool = False


class Gemma2Fields(DecoderFields):
    head_dim: Optional[Pos] = 256
    hidden_act: str = "gelu_pytorch_tanh"
    hidden_activation: Optional[str] = None
    max_position_embeddings: Pos = 8192
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    sliding_window: Optional[Pos] = 4096
    attn_logit_softcapping: Optional[float] = Field(50.0, gt=0)
    final_logit_softcapping: Optional[float] = Field(30.0, gt=0)
    layer_types: Optional[list[LayerType]] = None


class Gemma3Fields(Gemma2Fields):
    """transformers' Gemma3TextConfig defaults: published multimodal configs leave most out."""

    hidden_size: Pos = 2304
    num_hidden_layers: Layers = 26
    num_attention_heads: Pos = 8
    num_key_value_heads: Optional[Pos] = 4
    intermediate_size: Pos = 9216
    vocab_size: Pos = 262_208
    max_position_embeddings: Pos = 131_072
    attn_logit_softcapping: Optional[float] = Field(None, gt=0)
    final_logit_softcapping: Optional[float] = Field(None, gt=0)
    sliding_window_pattern: Pos = 6


class GPT2Fields(Fields):
    n_embd: Pos
    n_layer: Layers
    n_head: Pos
    n_positions: Pos = 1024
    n_inner: Optional[Pos] = None
    vocab_size: Pos = 50_257
    activation_function: str = "gelu_new"
    tie_word_embeddings: bool = True
    add_cross_attention: bool = False
    quantization_config: Optional[dict] = None


class DeepseekFields(DecoderFields):
    attention_bias: bool = False
    kv_lora_rank: Pos
    q_lora_rank: Optional[Annotated[int, Field(ge=0, le=1_048_576)]] = None
    qk_rope_head_dim: int = Field(64, ge=0, le=65_536)
    qk_nope_head_dim: Pos = 128
    v_head_dim: Pos = 128
    n_routed_experts: Optional[Pos] = None
    num_experts_per_tok: Optional[Pos] = None
    n_shared_experts: Optional[Annotated[int, Field(ge=0)]] = None
    moe_intermediate_size: Pos = 1407
    first_k_dense_replace: int = Field(0, ge=0)
    moe_layer_freq: Pos = 1
    topk_method: str = "greedy"
    num_nextn_predict_layers: int = Field(0, ge=0)


# -- shared pieces -----------------------------------------------------------------------------------

def gated_mlp(act: str) -> tuple[str, list]:
    """The gated MLP of an activation name: SiLU -> swiglu, a GELU -> geglu; (kind, remarks)."""
    a = act.lower()
    if a in ("silu", "swish"):
        return "swiglu", []
    if a.startswith("gelu"):
        return "geglu", []
    return "swiglu", [f"hidden_act={act!r} (its gated MLP is costed as SiLU's)"]


def window_params(window: Optional[int]) -> dict:
    """The parameters that give the native grouped-query attention (and sliding_window) a window."""
    return {"gqa": {"window": window}, "sliding_window": {"window": window}} if window else {}


def period(kinds: list) -> list:
    """The shortest prefix that repeats to give ``kinds``."""
    for p in range(1, len(kinds) + 1):
        if all(kinds[i] == kinds[i % p] for i in range(len(kinds))):
            return kinds[:p]
    return kinds


def layered(kinds: list, window: Optional[int]) -> dict:
    """ModelConfig fields for layers of the given kinds, "sliding_attention" ones in ``window``:
    one window for the model if every layer slides, else a pattern of layer attentions."""
    kinds = [k if window else FULL for k in kinds]
    pattern = period(kinds)
    if pattern == [FULL]:
        return {}
    if pattern == [SLIDING]:
        return {"attention_params": window_params(window), "window": window, "notes": [
            f"every layer attends within a sliding window of {window:,} tokens: costed as gqa with window {window} "
            f"(a rolling KV cache of at most {window:,} tokens)"]}
    return {"window": window, "layer_attention": [
        LayerAttention(kind=k, params=window_params(window) if k == SLIDING else {}) for k in pattern]}


def check_layer_types(types: Optional[list], layers: int) -> Optional[list]:
    if types is not None and len(types) != layers:
        raise ValueError(f"layer_types lists {len(types)} layers, num_hidden_layers is {layers}")
    return types


def decoder(f: DecoderFields, **over) -> dict:
    """ModelConfig fields common to the RoPE decoders (RMSNorm, no biases, gated MLP, GQA)."""
    kv = f.num_key_value_heads or f.num_attention_heads
    if f.head_dim is None and "head_dim" not in over and f.hidden_size % f.num_attention_heads:
        raise ValueError(f"num_attention_heads={f.num_attention_heads} does not divide hidden_size={f.hidden_size} "
                         f"and head_dim is not given")
    if "kv_heads" not in over and f.num_attention_heads % kv:
        raise ValueError(f"num_key_value_heads={kv} does not divide num_attention_heads={f.num_attention_heads}")
    head_dim = f.head_dim if f.head_dim and f.head_dim * f.num_attention_heads != f.hidden_size else None
    out = dict(layers=f.num_hidden_layers, d=f.hidden_size, heads=f.num_attention_heads, kv_heads=kv,
               head_dim=head_dim, vocab=f.vocab_size, context=f.max_position_embeddings, positions="rope",
               tied_embeddings=f.tie_word_embeddings, norm="rmsnorm", bias=False, mlp_hidden=f.intermediate_size,
               attention="gqa")
    out.update(over)
    return out


# -- one builder per model_type: fields -> (ModelConfig fields, remarks on what is not modelled) -------

def llama(f: LlamaFields) -> tuple:
    mlp, remarks = gated_mlp(f.hidden_act)
    return decoder(f, mlp=mlp, attention_bias="all" if f.attention_bias else "none", mlp_bias=f.mlp_bias), remarks


def mistral(f: MistralFields) -> tuple:
    out, remarks = llama(f)
    return {**out, **layered([SLIDING], f.sliding_window)}, remarks


def mixtral(f: MixtralFields) -> tuple:
    out, remarks = mistral(f)
    moe = MoE(routed_experts=f.num_local_experts, active_experts=f.num_experts_per_tok,
              expert_hidden=f.intermediate_size)
    return {**out, "moe": moe}, remarks


def phi3(f: Phi3Fields) -> tuple:
    out, remarks = mistral(f)
    return {**out, "rope_fraction": f.partial_rotary_factor}, remarks


def qwen2(f: Qwen2Fields) -> tuple:
    mlp, remarks = gated_mlp(f.hidden_act)
    L = f.num_hidden_layers
    types = check_layer_types(f.layer_types, L) or [
        SLIDING if i >= f.max_window_layers else FULL for i in range(L)]
    window = f.sliding_window if f.use_sliding_window else None
    return decoder(f, mlp=mlp, attention_bias="qkv", **layered(types, window)), remarks


def qwen3(f: Qwen3Fields) -> tuple:
    out, remarks = qwen2(f)
    return {**out, "attention_bias": "all" if f.attention_bias else "none", "qk_norm": True}, remarks


def gemma2(f: Gemma2Fields) -> tuple:
    mlp, remarks = gated_mlp(f.hidden_activation or f.hidden_act)
    L = f.num_hidden_layers
    types = check_layer_types(f.layer_types, L) or [SLIDING if i % 2 == 0 else FULL for i in range(L)]
    return decoder(f, mlp=mlp, attention_bias="all" if f.attention_bias else "none", post_norms=True,
                   embed_scale=True, attention_softcap=f.attn_logit_softcapping,
                   logit_softcap=f.final_logit_softcapping, **layered(types, f.sliding_window)), remarks


def gemma3(f: Gemma3Fields) -> tuple:
    L, p = f.num_hidden_layers, f.sliding_window_pattern
    types = check_layer_types(f.layer_types, L) or [SLIDING if (i + 1) % p else FULL for i in range(L)]
    out, remarks = gemma2(f.model_copy(update={"layer_types": types}))
    return {**out, "qk_norm": True}, remarks


def gpt2(f: GPT2Fields) -> tuple:
    remarks = [] if f.activation_function in ("gelu_new", "gelu_pytorch_tanh", "gelu") else [
        f"activation_function={f.activation_function!r} (costed as GELU, tanh form)"]
    if f.add_cross_attention:
        remarks.append("add_cross_attention (the cross-attention layers are not costed)")
    return dict(layers=f.n_layer, d=f.n_embd, heads=f.n_head, vocab=f.vocab_size, context=f.n_positions,
                positions="learned", tied_embeddings=f.tie_word_embeddings, norm="layernorm", bias=True, mlp="gelu",
                mlp_hidden=f.n_inner or 4 * f.n_embd, attention="mha"), remarks


def deepseek(f: DeepseekFields) -> tuple:
    mlp, remarks = gated_mlp(f.hidden_act)
    H, dh = f.num_attention_heads, f.qk_nope_head_dim
    mla = {"kv_lora_rank": f.kv_lora_rank, "q_lora_rank": f.q_lora_rank or 0, "rope_dim": f.qk_rope_head_dim}
    if f.v_head_dim != dh:
        remarks.append(f"v_head_dim={f.v_head_dim} (costed as qk_nope_head_dim={dh})")
    if f.moe_layer_freq != 1:
        remarks.append(f"moe_layer_freq={f.moe_layer_freq} (every layer after the dense ones is costed as MoE)")
    if f.num_nextn_predict_layers:
        remarks.append(f"num_nextn_predict_layers={f.num_nextn_predict_layers} (the multi-token prediction "
                       f"module, used in training and speculative decoding, is not costed)")
    moe = None
    if f.n_routed_experts:
        moe = MoE(routed_experts=f.n_routed_experts, active_experts=f.num_experts_per_tok or 1,
                  shared_experts=f.n_shared_experts or 0, expert_hidden=f.moe_intermediate_size,
                  first_dense_layers=min(f.first_k_dense_replace, f.num_hidden_layers),
                  router_bias=f.topk_method == "noaux_tc")
    return decoder(f, kv_heads=None, head_dim=dh if H * dh != f.hidden_size else None, mlp=mlp,
                   attention="mla", attention_params={"mla": mla, "dsa": dict(mla)}, latent_norm=True,
                   attention_bias="all" if f.attention_bias else "none", moe=moe), remarks


# model_type -> (fields, builder); the order is the one error messages list them in
FAMILIES: dict[str, tuple[type, Callable]] = {
    "llama": (LlamaFields, llama),
    "mistral": (MistralFields, mistral),
    "mixtral": (MixtralFields, mixtral),
    "qwen2": (Qwen2Fields, qwen2),
    "qwen3": (Qwen3Fields, qwen3),
    "gemma2": (Gemma2Fields, gemma2),
    "gemma3": (Gemma3Fields, gemma3),
    "gemma3_text": (Gemma3Fields, gemma3),
    "phi3": (Phi3Fields, phi3),
    "gpt2": (GPT2Fields, gpt2),
    "deepseek_v2": (DeepseekFields, deepseek),
    "deepseek_v3": (DeepseekFields, deepseek),
}
