"""What every variant is made of: its parameters, its definition, and shared building blocks."""

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict

from ..graph import Graph
from ..shape import Shape
from ..units import CAUSAL_FUSED_FRACTION


# The registry's modules (``variants/__init__``) and the family each one holds.
FAMILIES = {"exact": "exact", "latent": "latent", "lowrank": "low-rank", "learned": "learned"}


class VariantError(ValueError):
    """A variant cannot be evaluated at this shape with these parameters (one plain sentence)."""


class Params(BaseModel):
    """Base of every variant's parameters; ``None`` fields take a default derived from the shape.
    ``at_most_T`` names the fields that count tokens picked out of the T a query may see (linformer.k,
    topk.k): ``estimate.resolve_params`` refuses a value larger than T, set or default, rather than
    cost a smaller one silently."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    at_most_T: ClassVar[tuple] = ()

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
    cost: str = ""  # its cost in one line: how FLOPs and memory grow (T tokens, d width, dh head dim)

    @property
    def family(self) -> str:
        """exact, latent, low-rank or learned: the registry module that defines the variant."""
        module = self.build.__module__.rsplit(".", 1)[-1]
        return FAMILIES.get(module, module)


# -- building blocks shared by the variants ----------------------------------------------
#
# Each block carries the host-only ops (``Graph.views``) the module runs where it runs them, and the
# copies PyTorch makes where a view cannot express a layout (``heads_copied``), so that the graph
# lists, kind by kind, what a trace of the module records (``costmodel.opkinds``).

LINEAR_VIEWS = 3  # F.linear on an input of 3 or more dims: t (the weight), view to 2-D, _unsafe_view back
MATMUL_VIEWS = 5  # torch.matmul of two 3- or 4-D tensors: expand and view of each, _unsafe_view of the out
LSE_BYTES = 4  # the row log-sum-exp a fused attention kernel writes beside its output: fp32 at any dtype


def new_graph(s: Shape) -> tuple:
    """A graph with the layer input x and the call of the layer's module; returns (graph, x, rows)
    where rows = batch * tokens."""
    g = Graph(s.itemsize)
    rows = s.batch * s.tokens
    x = g.input("x", rows * s.d)
    g.calls("layer.call", 1, "other")
    return g, x, rows


def proj(g: Graph, name: str, x: str, rows: int, k: int, n: int, part: str = "proj",
         views: int = LINEAR_VIEWS) -> str:
    """A bias-free linear layer x (rows x k) @ W (k x n), called as a module (``nn.Linear``), and the
    ``views`` host-only ops F.linear runs around its one mm (``LINEAR_VIEWS`` for an input of 3 or more
    dims)."""
    g.calls(name + ".call", 1, part)
    if views:
        g.views(name + ".views", views, part)
    return g.matmul(name, x, g.weight("W_" + name, k * n), m=rows, k=k, n=n, part=part)


def mask_buffer(g: Graph, name: str, entries: float, boolean: bool = True) -> str:
    """A mask the module keeps as a buffer and a kernel reads: ``entries`` booleans (one byte
    each, counted in the layer's item size) or, ``boolean=False``, additive values in its dtype."""
    return g.weight(name, entries / g.itemsize if boolean else entries, trainable=False)


def append(g: Graph, new: str, new_elems: float, cache_elems: float) -> str:
    """Decode: write the new token's ``new`` into its cache slot (a narrow, then copy_); returns the
    cache, which holds T tokens."""
    name = new.replace("_proj", "") + "_cache"
    g.views(name + "_slot", 1, "other")
    g.elementwise(name + "_append", "copy", (new,), elems=new_elems, part="other")
    return g.cache(name, cache_elems)


def split_heads(g: Graph, name: str, tensors: int = 1) -> None:
    """(B, L, n*dh) -> (B, n, L, dh) of ``tensors`` tensors: a view and a transpose each."""
    if tensors:
        g.views(name, 2 * tensors, "other")


def heads_copied(batch: int, heads: int, tokens: int) -> bool:
    """Whether torch.matmul copies a (B, heads, L, dh) head view of a (B, L, heads*dh) tensor to fold
    it into a batch of B*heads matrices: the (B, heads) dims merge into one stride only where B,
    heads or L is 1 (a reshape that cannot alias copies)."""
    return batch > 1 and heads > 1 and tokens > 1


def layout_copy(g: Graph, name: str, x: str, elems: float) -> str:
    """A copy of ``x`` (``elems`` elements) into the layout the next op needs: 0 FLOPs."""
    return g.elementwise(name, "copy", (x,), elems=elems, part="other")


def merge_heads(g: Graph, s: Shape, o: str, dim: int, contiguous: bool) -> str:
    """(B, heads, L, dim) -> (B, L, heads*dim): a transpose and a reshape, which copies where ``o``
    is head-major in memory (``contiguous``, a bmm's output) with more than one head and token."""
    g.views(o + ".merge", 2, "other")
    if contiguous and s.heads > 1 and s.tokens > 1:
        return layout_copy(g, o + ".merged", o, s.batch * s.tokens * s.heads * dim)
    return o


def topk(g: Graph, name: str, x: str, *, elems: float, out_elems: float, part: str = "core") -> tuple:
    """torch.topk over ``elems`` candidates keeping ``out_elems``: one kernel writing the indices
    (int64) and, beside them, the values they select. Returns (values, indices)."""
    idx = g.elementwise(name, "topk", (x,), elems=elems, out_elems=out_elems, part=part, index_out=True)
    values = g.elementwise(name + ".values", "gather", (x, idx), elems=out_elems, part=part, kernel=name)
    return values, idx


def causal_pairs(T: int, window: int) -> float:
    """Query-key pairs a fused causal kernel computes when each query sees at most ``window``
    keys: T*w - w^2/2 for w < T, else T^2/2 (FlashAttention's convention: causal = half)."""
    if window >= T:
        return CAUSAL_FUSED_FRACTION * T * T
    return T * window - window * window / 2


def attention_core(g: Graph, s: Shape, q: str, k: str, v: str, *, groups: int, qk_dim: int,
                   v_dim: int, keys: int, fraction: float, fused: bool, mask: bool,
                   mask_with: Optional[str] = None, split: int = 3, merge: bool = True) -> str:
    """softmax(scale * q k^T [+ mask]) v for ``groups`` independent (batch x kv-head) groups, each
    with ``s.heads*s.batch/groups`` query heads of ``s.tokens`` queries attending ``keys`` keys.

    Unfused (the math path, torch.matmul): every op writes its output; a causal mask is applied
    to the dense scores (``masked_fill`` reading the boolean buffer ``mask_with``); in prefill,
    q, k and v, head views of the projections, are copied where torch.matmul cannot fold them
    (``heads_copied``). Fused (one SDPA kernel): scores and probabilities never leave the kernel,
    masked tiles are skipped (``fraction``), the kernel reads the additive mask ``mask_with``
    where there is one and writes the rows' log-sum-exp beside its output; the backward
    recomputes scores and probabilities (FlashAttention-2).

    Host-only ops: ``split`` of q, k, v split into heads by the module (view + transpose each),
    the math path's transpose of k and its two torch.matmul calls, and ``merge``: the output's
    heads merged back (a bmm's output is copied to do it).
    """
    rows = s.batch * s.heads * s.tokens // groups  # query rows per group
    kernel = "attention" if fused else None
    dense = s.batch * s.heads * s.tokens * keys
    split_heads(g, "heads.split", split)
    # decode: k and v are the cache, head-major already; q has one token
    kv_copied = not fused and s.phase != "decode" and heads_copied(s.batch, groups // s.batch, keys)
    if not fused:
        g.views("scores.views", 1 + MATMUL_VIEWS, "core")  # k^T and the matmul
        if heads_copied(s.batch, s.heads, s.tokens):
            q = layout_copy(g, "q.heads", q, s.batch * s.heads * s.tokens * qk_dim)
        if kv_copied:
            k = layout_copy(g, "k.heads", k, groups * keys * qk_dim)
    sc = g.matmul("scores", q, k, batch=groups, m=rows, k=qk_dim, n=keys, kernel=kernel,
                  fraction=fraction, recompute=fused, group=s.batch * s.heads // groups)
    reads = (sc, mask_with) if fused and mask_with else (sc,)
    sc = g.elementwise("scale", "scale", reads, elems=dense * fraction, out_elems=dense,
                       kernel=kernel, recompute=fused)
    if mask:
        reads = (sc, mask_with) if mask_with else (sc,)
        sc = g.elementwise("mask", "mask", reads, elems=dense, kernel=kernel, recompute=fused)
    p = g.elementwise("softmax", "softmax", (sc,), elems=dense * fraction, out_elems=dense,
                      kernel=kernel, recompute=fused)
    if not fused:
        g.views("av.views", MATMUL_VIEWS, "core")
        if kv_copied:
            v = layout_copy(g, "v.heads", v, groups * keys * v_dim)
    o = g.matmul("av", p, v, batch=groups, m=rows, k=keys, n=v_dim, kernel=kernel, fraction=fraction)
    if fused:
        lse = s.batch * s.heads * s.tokens * LSE_BYTES / g.itemsize
        g.elementwise("attention.lse", "copy", (p,), elems=lse, kernel=kernel)
    return merge_heads(g, s, o, v_dim, contiguous=not fused) if merge else o
