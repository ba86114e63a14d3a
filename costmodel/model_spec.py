"""A decoder-only transformer as attncost describes it: the validated description, which layers it
has, the attention shape of those layers, and reading one from a JSON file.

A model is ``layers`` transformer blocks (pre-norm: norm, attention, residual add, norm, MLP,
residual add; with ``post_norms`` the attention and MLP outputs are normed too, as Gemma 2 and 3
do) between a token embedding and an LM head. ``ModelConfig.layer_kinds`` maps a description to
the MLP of its layers: "dense" blocks (the dense MLP) and "moe" blocks (mixture of experts).
Attention may differ by layer too (``layer_attention``: Gemma's local and global layers, a
pattern repeated over the layers); ``ModelConfig.layer_groups`` gathers the layers that cost
the same, so that a model is costed group by group, each group once. ``attention_shape`` gives
the attention cost model's ``Shape`` of the layers: its width is heads x head dim, which may
differ from the model's width (``head_dim``: Gemma, Qwen3, DeepSeek-V3). Reading a Hugging Face
config.json is ``hf_config``'s; parameter counts are in ``model_params``, costs in ``model_cost``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .jsonfile import load_json_model, validation_reason
from .shape import Shape
from .units import Dtype, Phase, WeightDtype
from .variants import REGISTRY

LayerKind = Literal["dense", "moe"]
SPEC = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ModelError(ValueError):
    """A model preset or file cannot be found or read (one plain sentence)."""


class MoE(BaseModel):
    """Mixture of experts (DeepSeekMoE, Mixtral): ``routed_experts`` SwiGLU experts of width
    ``expert_hidden``, ``active_experts`` chosen per token by a router (a linear layer, softmax,
    top-k), plus ``shared_experts`` always applied (one SwiGLU of width shared_experts *
    expert_hidden). The first ``first_dense_layers`` layers use the dense MLP (``mlp_hidden``)
    instead. ``router_bias``: one score bias per expert (DeepSeek-V3's e_score_correction_bias)."""

    model_config = SPEC

    routed_experts: int = Field(..., ge=1)
    active_experts: int = Field(..., ge=1)
    shared_experts: int = Field(0, ge=0)
    expert_hidden: int = Field(..., ge=1)
    first_dense_layers: int = Field(0, ge=0)
    router_bias: bool = False

    @model_validator(mode="after")
    def _check(self) -> "MoE":
        if self.active_experts > self.routed_experts:
            raise ValueError(f"active_experts={self.active_experts} exceeds routed_experts={self.routed_experts}")
        return self


class LayerAttention(BaseModel):
    """The attention of one kind of layer where it differs from the model's: its own ``variant``
    (None: the model's) and parameters (variant -> parameters, over the model's
    ``attention_params``). ``kind`` names it, in Hugging Face's ``layer_types`` words
    ("sliding_attention", "full_attention")."""

    model_config = SPEC

    kind: str = Field(..., min_length=1)
    variant: Optional[str] = None
    params: dict[str, dict] = Field(default_factory=dict)


@dataclass(frozen=True)
class LayerGroup:
    """Layers that cost the same: their MLP kind, attention variant and (unresolved) parameters.
    ``kind``: their attention kind(s) ("sliding_attention"; None where the model has one);
    ``count`` layers, the first of them ``first`` (0-based)."""

    mlp: LayerKind
    variant: str
    params: dict
    kind: Optional[str]
    count: int
    first: int


class ModelConfig(BaseModel):
    """A decoder-only transformer. Defaults are GPT-2's choices (learned positions, LayerNorm,
    biases, tied embeddings, GELU MLP, ``mha``); a JSON file needs at least name, layers, d,
    heads, vocab and mlp_hidden."""

    model_config = SPEC

    name: str = Field(..., min_length=1)
    source: str = Field("", description="where the hyperparameters come from")
    layers: int = Field(..., ge=1, le=10_000)
    d: int = Field(..., ge=1, le=1_048_576)
    heads: int = Field(..., ge=1)
    kv_heads: Optional[int] = Field(None, ge=1, description="K/V heads of grouped-query attention")
    head_dim: Optional[int] = Field(None, ge=1, le=65_536, description="attention head dim where it is not d/heads")
    vocab: int = Field(..., ge=1)
    context: int = Field(2048, ge=1, description="longest sequence the model was built for")
    positions: Literal["learned", "rope", "none"] = "learned"
    rope_fraction: float = Field(1.0, gt=0, le=1, description="share of each head's q and k channels RoPE rotates")
    tied_embeddings: bool = True
    embed_scale: bool = Field(False, description="embeddings multiplied by sqrt(d) (Gemma)")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    post_norms: bool = Field(False, description="attention and MLP outputs normed before their residual adds "
                                                "(Gemma 2, 3)")
    qk_norm: bool = Field(False, description="RMSNorm over each head's q and k (Qwen3, Gemma 3)")
    latent_norm: bool = Field(False, description="RMSNorm on MLA's K/V (and Q) latents (DeepSeek-V2, V3)")
    bias: bool = Field(True, description="linear layers have biases (GPT-2)")
    attention_bias: Literal["none", "qkv", "all"] = Field(
        "none", description="biases of the attention projections where `bias` is false: q, k, v (Qwen2) or all four")
    mlp_bias: bool = Field(False, description="biases of the MLP where `bias` is false")
    mlp: Literal["gelu", "swiglu", "geglu"] = "gelu"
    mlp_hidden: int = Field(..., ge=1, description="MLP width of the dense layers")
    moe: Optional[MoE] = None
    attention: str = Field("mha", description="the native attention variant")
    attention_params: dict[str, dict] = Field(default_factory=dict,
                                              description="variant -> parameters used with this model")
    layer_attention: list[LayerAttention] = Field(
        default_factory=list, description="attention by layer where it differs, a pattern repeated over the layers "
                                          "(layer i: item i mod its length); empty: every layer has `attention`")
    attention_softcap: Optional[float] = Field(None, gt=0, description="tanh soft-capping of the scores (Gemma 2)")
    logit_softcap: Optional[float] = Field(None, gt=0, description="tanh soft-capping of the logits (Gemma 2)")
    window: Optional[int] = Field(None, ge=1, description="sliding attention window of the original model")
    weights_dtype: Optional[WeightDtype] = Field(None, description="the checkpoint's stored weights, where quantised")
    published_params: Optional[float] = Field(None, gt=0, description="total parameters, as published")
    published_active_params: Optional[float] = Field(None, gt=0,
                                                     description="parameters active per token, as published")
    unmodelled: list[str] = Field(default_factory=list,
                                  description="fields of the source config that change the cost and are not modelled")
    cost_neutral: list[str] = Field(default_factory=list,
                                    description="fields of the source config known not to change the cost")
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.head_dim is None and self.d % self.heads:
            raise ValueError(f"heads must divide d: d={self.d} is not divisible by heads={self.heads}")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"kv_heads must divide heads: heads={self.heads} is not divisible by "
                             f"kv_heads={self.kv_heads}")
        if self.attention_width > 1_048_576:
            raise ValueError(f"heads x head_dim = {self.attention_width:,} exceeds 1,048,576")
        _check_variant(self.attention, "attention")
        _check_params(self.attention_params, "attention_params")
        for i, la in enumerate(self.layer_attention):
            if la.variant is not None:
                _check_variant(la.variant, f"layer_attention.{i}.variant")
            _check_params(la.params, f"layer_attention.{i}.params")
        if self.moe is not None and self.moe.first_dense_layers > self.layers:
            raise ValueError(f"moe.first_dense_layers={self.moe.first_dense_layers} exceeds layers={self.layers}")
        return self

    @property
    def head_size(self) -> int:
        """The attention head dim: ``head_dim``, else d / heads."""
        return self.head_dim or self.d // self.heads

    @property
    def attention_width(self) -> int:
        """heads x head dim: the width of the attention (q and the output projection's input)."""
        return self.heads * self.head_size

    def layer_kind(self, index: int) -> LayerKind:
        """The kind of layer ``index`` (0-based): "moe" from ``moe.first_dense_layers`` on, else "dense"."""
        return "moe" if self.moe is not None and index >= self.moe.first_dense_layers else "dense"

    def layer_kinds(self) -> list[tuple[LayerKind, int]]:
        """[(kind, count)] in layer order: "dense" layers (dense MLP), then "moe" layers."""
        if self.moe is None:
            return [("dense", self.layers)]
        f = self.moe.first_dense_layers
        return [(k, n) for k, n in (("dense", f), ("moe", self.layers - f)) if n]

    def variant_params(self, variant: str, extra: Optional[dict] = None) -> dict:
        """The model's parameters for ``variant`` with ``extra`` (e.g. from --param) over them."""
        return {**self.attention_params.get(variant, {}), **(extra or {})}

    def layer_attention_at(self, index: int, variant: Optional[str] = None,
                           extra: Optional[dict] = None) -> tuple[str, dict, Optional[str]]:
        """(variant, parameters, kind) of layer ``index``: ``variant`` (None: the layer's own, else
        the model's) with the model's parameters for it, the layer's over them, ``extra`` over all."""
        la = self.layer_attention[index % len(self.layer_attention)] if self.layer_attention else None
        v = variant or (la.variant if la is not None and la.variant else self.attention)
        own = la.params.get(v, {}) if la is not None else {}
        return v, {**self.attention_params.get(v, {}), **own, **(extra or {})}, la.kind if la is not None else None

    def layer_groups(self, variant: Optional[str] = None, extra: Optional[dict] = None) -> list[LayerGroup]:
        """The layers gathered by what they cost (MLP kind, attention variant and parameters), in
        the order their first layers come; ``variant`` swaps every layer's attention."""
        found: dict = {}
        for i in range(self.layers):
            v, p, kind = self.layer_attention_at(i, variant, extra)
            key = (self.layer_kind(i), v, json.dumps(p, sort_keys=True, default=str))
            g = found.get(key)
            if g is None:
                found[key] = [self.layer_kind(i), v, p, [kind], 1, i]
            else:
                g[4] += 1
                if kind not in g[3]:
                    g[3].append(kind)
        return [LayerGroup(mlp, v, p, "/".join(k for k in kinds if k) or None, n, first)
                for mlp, v, p, kinds, n, first in found.values()]


def _check_variant(name: str, where: str) -> None:
    if name not in REGISTRY:
        raise ValueError(f"{where}: unknown attention variant {name!r}: choose from {', '.join(REGISTRY)}")


def _check_params(params: dict, where: str) -> None:
    for v, p in params.items():
        if v not in REGISTRY:
            raise ValueError(f"{where}: unknown variant {v!r}")
        try:
            REGISTRY[v].params(**p)
        except ValidationError as err:
            raise ValueError(f"{where}.{v}: {validation_reason(err)}") from None


def attention_shape(cfg: ModelConfig, T: int, batch: int, dtype: Dtype, phase: Phase) -> Shape:
    """The ``Shape`` of every attention layer of ``cfg`` at ``batch`` causal sequences of ``T``
    tokens; its width is heads x head dim (``ModelConfig.attention_width``)."""
    return Shape(batch=batch, T=T, d=cfg.attention_width, heads=cfg.heads, kv_heads=cfg.kv_heads, dtype=dtype,
                 causal=True, phase=phase)


def load_model(path) -> ModelConfig:
    """Read a model from a JSON file; ModelError with one sentence if it is not one."""
    return load_json_model(path, ModelConfig, ("model file", "model"), ModelError)
