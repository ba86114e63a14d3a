"""What every variant is made of: its parameters, its definition, and shared building blocks."""

from dataclasses import dataclass
from typing import Callable, Optional

from pydantic import BaseModel, ConfigDict

from ..graph import Graph
from ..shape import Shape
from ..units import CAUSAL_FUSED_FRACTION


class VariantError(ValueError):
    """A variant cannot be evaluated at this shape with these parameters (one plain sentence)."""


class Params(BaseModel):
    """Base of every variant's parameters; ``None`` fields take a default derived from the shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def resolve(self, shape: Shape) -> "Params":
        """These parameters with shape-dependent defaults filled in, checked against the shape."""
        return self


class NoParams(Params):
    pass


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    definition: str  # the formula, in one or two lines
    source: str
    params: type
    build: Callable[[Shape, Params], Graph]  # forward graph of prefill or decode
    causal: Optional[bool] = True  # True: causal; False: not causal by nature; None: either
    decode: bool = True  # has a decode path with a cache
    notes: tuple = ()


# -- building blocks shared by the variants ----------------------------------------------

def new_graph(s: Shape) -> tuple:
    """A graph with the layer input x; returns (graph, x, rows) where rows = batch * tokens."""
    g = Graph(s.itemsize)
    rows = s.batch * s.tokens
    return g, g.input("x", rows * s.d), rows


def proj(g: Graph, name: str, x: str, rows: int, k: int, n: int, part: str = "proj") -> str:
    """A bias-free linear layer x (rows x k) @ W (k x n)."""
    return g.matmul(name, x, g.weight("W_" + name, k * n), m=rows, k=k, n=n, part=part)


def append(g: Graph, new: str, new_elems: float, cache_elems: float) -> str:
    """Decode: write the new token's ``new`` into its cache; returns the cache, which holds T tokens."""
    name = new.replace("_proj", "") + "_cache"
    g.elementwise(name + "_append", "copy", (new,), elems=new_elems, part="other")
    return g.cache(name, cache_elems)


def causal_pairs(T: int, window: int) -> float:
    """Query-key pairs a fused causal kernel computes when each query sees at most ``window``
    keys: T*w - w^2/2 for w < T, else T^2/2 (FlashAttention's convention: causal = half)."""
    if window >= T:
        return CAUSAL_FUSED_FRACTION * T * T
    return T * window - window * window / 2


def attention_core(g: Graph, s: Shape, q: str, k: str, v: str, *, groups: int, qk_dim: int,
                   v_dim: int, keys: int, fraction: float, fused: bool, mask: bool) -> str:
    """softmax(scale * q k^T [+ mask]) v for ``groups`` independent (batch x kv-head) groups, each
    with ``s.heads*s.batch/groups`` query heads of ``s.tokens`` queries attending ``keys`` keys.

    Unfused (the math path): every op writes its output; a causal mask is applied to the dense
    scores. Fused (one SDPA kernel): scores and probabilities never leave the kernel, masked tiles
    are skipped (``fraction``), and the backward recomputes them (FlashAttention-2).
    """
    rows = s.batch * s.heads * s.tokens // groups  # query rows per group
    kernel = "attention" if fused else None
    dense = s.batch * s.heads * s.tokens * keys
    sc = g.matmul("scores", q, k, batch=groups, m=rows, k=qk_dim, n=keys, kernel=kernel,
                  fraction=fraction, recompute=fused)
    sc = g.elementwise("scale", "scale", (sc,), elems=dense * fraction, out_elems=dense,
                       kernel=kernel, recompute=fused)
    if mask:
        sc = g.elementwise("mask", "mask", (sc,), elems=dense, kernel=kernel, recompute=fused)
    p = g.elementwise("softmax", "softmax", (sc,), elems=dense * fraction, out_elems=dense,
                      kernel=kernel, recompute=fused)
    return g.matmul("av", p, v, batch=groups, m=rows, k=keys, n=v_dim, kernel=kernel,
                    fraction=fraction)
