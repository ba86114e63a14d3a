"""The shape of one attention layer and the phase it runs in."""

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .units import DTYPE_BYTES, Dtype, Phase

MAX_T = 4_194_304


class Shape(BaseModel):
    """One attention layer: ``batch`` sequences of ``T`` tokens, model width ``d``, ``heads`` heads.

    ``T`` is the number of tokens processed in ``prefill`` and ``train``; in ``decode`` it is the
    length of the KV cache the one new token attends to (the cache includes the new token).
    ``kv_heads`` is the number of K/V heads of grouped-query variants (``gqa``); ``None`` means
    the variant's own default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: int = Field(1, ge=1, le=1_048_576)
    T: int = Field(..., ge=1, le=MAX_T)
    d: int = Field(..., ge=1, le=1_048_576)
    heads: int = Field(16, ge=1)
    kv_heads: Optional[int] = Field(None, ge=1)
    dtype: Dtype = "bf16"
    causal: bool = True
    phase: Phase = "prefill"

    @field_validator("heads")
    @classmethod
    def _heads_divide_d(cls, heads: int, info: ValidationInfo) -> int:
        d = info.data.get("d")
        if d is not None and d % heads:
            raise ValueError(f"heads must divide d: d={d} is not divisible by heads={heads}")
        return heads

    @field_validator("kv_heads")
    @classmethod
    def _kv_heads_divide_heads(cls, kv_heads: Optional[int], info: ValidationInfo) -> Optional[int]:
        heads = info.data.get("heads")
        if kv_heads is not None and heads is not None and heads % kv_heads:
            raise ValueError(f"kv_heads must divide heads: heads={heads} is not divisible by kv_heads={kv_heads}")
        return kv_heads

    @property
    def head_dim(self) -> int:
        return self.d // self.heads

    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def tokens(self) -> int:
        """Tokens whose queries are computed: T, or 1 in decode."""
        return 1 if self.phase == "decode" else self.T

    def with_(self, **changes) -> "Shape":
        """A copy with some fields changed, validated again."""
        return Shape(**{**self.model_dump(), **changes})
