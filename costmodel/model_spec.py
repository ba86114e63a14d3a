"""A decoder-only transformer as attncost describes it: the validated description, which layers it
has, the attention shape of those layers, and reading one from a JSON file.

A model is ``layers`` transformer blocks (pre-norm: norm, attention, residual add, norm, MLP,
residual add) between a token embedding and an LM head. ``ModelConfig.layer_kinds`` is the one
place that maps a description to its layers: "dense" blocks (the dense MLP) and "moe" blocks
(mixture of experts); ``attention_shape`` gives the attention cost model's ``Shape`` of every
layer. Parameter counts are in ``model_params``, costs in ``model_cost``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .jsonfile import load_json_model, validation_reason
from .shape import Shape
from .units import Dtype, Phase
from .variants import REGISTRY

LayerKind = Literal["dense", "moe"]


class ModelError(ValueError):
    """A model preset or file cannot be found or read (one plain sentence)."""


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
                raise ValueError(f"attention_params.{v}: {validation_reason(err)}") from None
        if self.moe is not None and self.moe.first_dense_layers > self.layers:
            raise ValueError(f"moe.first_dense_layers={self.moe.first_dense_layers} exceeds layers={self.layers}")
        return self

    @property
    def head_dim(self) -> int:
        return self.d // self.heads

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


def attention_shape(cfg: ModelConfig, T: int, batch: int, dtype: Dtype, phase: Phase) -> Shape:
    """The ``Shape`` of every attention layer of ``cfg`` at ``batch`` causal sequences of ``T`` tokens."""
    return Shape(batch=batch, T=T, d=cfg.d, heads=cfg.heads, kv_heads=cfg.kv_heads, dtype=dtype,
                 causal=True, phase=phase)


def load_model(path) -> ModelConfig:
    """Read a model from a JSON file; ModelError with one sentence if it is not one."""
    return load_json_model(path, ModelConfig, ("model file", "model"), ModelError)
