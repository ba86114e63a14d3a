"""Exact softmax attention: the math path, fused kernels, grouped K/V heads, a sliding window.

Worked example (B=1, T=4096, d=1024, heads=16, prefill), matmul FLOPs = 2mkn:
  Q, K, V projections 3 x 2*4096*1024*1024 = 25.77 G; output projection 8.59 G;
  QK^T = 2*16*4096*4096*64 = 34.36 G; AV the same.  mha (dense, math path): 103.08 G.
  flash (causal, fused, masked tiles skipped): 25.77 + 8.59 + 34.36 = 68.72 G.
"""

from typing import Literal, Optional

from pydantic import Field

from ..shape import Shape
from ..graph import Graph
from .base import (NoParams, Params, Variant, VariantError, append, attention_core, causal_pairs, heads_copied,
                   mask_buffer, new_graph, proj)


WindowKernel = Literal["flex", "masked"]
KERNEL_HELP = ("the windowed prefill's kernel: flex computes only the band (flex_attention with a block mask, "
               "on CUDA); masked is SDPA with a dense additive band mask, which computes every T x T tile "
               "and reads the mask (what runs without flex_attention)")


def _exact(s: Shape, kv_heads: int, *, fused: bool, window: Optional[int] = None, kernel: WindowKernel = "flex"):
    """Q/K/V projections, attention (with a KV cache of T tokens in decode), output projection.
    Prefill masks: the math path's causal ``masked_fill`` reads a boolean T x T buffer; a window run
    ``masked`` is an additive T x T band the fused kernel reads, computing every tile; run ``flex``,
    the kernel computes only the band's blocks and reads no mask."""
    g, x, rows = new_graph(s)
    dh = s.head_dim
    kv_dim = kv_heads * dh
    q = proj(g, "q_proj", x, rows, s.d, s.d)
    k = proj(g, "k_proj", x, rows, s.d, kv_dim)
    v = proj(g, "v_proj", x, rows, s.d, kv_dim)
    cached = s.T if window is None else min(s.T, window)
    g.kv_cache(per_token=2 * kv_dim, tokens=cached)
    mask_with = None
    if s.phase == "decode":
        k, v = (append(g, t, s.batch * kv_dim, s.batch * cached * kv_dim) for t in (k, v))
        keys, fraction, mask = cached, 1.0, False
    else:
        keys = s.T
        if window is not None and kernel == "masked":
            fraction = 1.0
            mask_with = mask_buffer(g, "band_mask", s.T * s.T, boolean=False)
        elif window is not None:
            fraction = causal_pairs(s.T, window) / (s.T * s.T)
        elif s.causal and fused:
            fraction = causal_pairs(s.T, s.T) / (s.T * s.T)
        else:
            fraction = 1.0
        mask = s.causal and not fused
        if mask:
            mask_with = mask_buffer(g, "causal_mask", s.T * s.T)
    o = attention_core(g, s, q, k, v, groups=s.batch * kv_heads, qk_dim=dh, v_dim=dh, keys=keys,
                       fraction=fraction, fused=fused, mask=mask, mask_with=mask_with)
    if not fused and s.phase != "decode":
        _math_gradients_copied(g, s)
    g.output(proj(g, "o_proj", o, rows, s.d, s.d))
    return g


def copy_back(g: Graph, op: str, read: int) -> None:
    """Autograd copies the gradient of ``op``'s read ``read`` back into its tensor's layout
    (``Op.grad_copy``): the op read a view its gradient, written in the op's layout, cannot take."""
    found = next(o for o in g.ops if o.name == op)
    found.grad_copy += (read,)


def batched(g: Graph, op: str) -> str:
    """Mark ``op`` a torch.matmul of batched operands (a weight with a dimension of heads): bmm, even
    for one head, never F.linear's one mm (``Op.backward`` "bmm")."""
    next(o for o in g.ops if o.name == op).backward = "bmm"
    return op


def views_without_backward(g: Graph, name: str, count: int, part: str = "other") -> str:
    """``count`` host-only ops whose backward runs no view: slices of buffers (no gradient), or
    slices whose gradient is written by a copy (``slice_backward``) the graph lists as an op."""
    g.views(name, count, part)
    g.ops[-1].backward = "none"
    return name


def _math_gradients_copied(g: Graph, s: Shape) -> None:
    """The math path's gradients written head-major (bmm outputs) that reach token-major tensors:
    q's and v's where there are several heads; k's (read transposed) where several sequences, whose
    rows then do not fold into F.linear's 2-D gradient; the output's where its heads merged by a copy
    (the gradient, a transposed view, reshaped back into the bmm's batch). Each read is that of the
    op that copied it for torch.matmul where there is one (``heads_copied``)."""
    B, H, L = s.batch, s.heads, s.tokens
    copied = heads_copied(B, H, L)
    if H > 1 and L > 1:
        copy_back(g, *(("q.heads", 0) if copied else ("scores", 0)))
        copy_back(g, *(("v.heads", 0) if copied else ("av", 1)))
    if B > 1 and L > 1:
        copy_back(g, *(("k.heads", 0) if copied else ("scores", 1)))
    if copied:
        copy_back(g, "av.merged", 0)


def build_mha(s: Shape, p: Params):
    return _exact(s, s.heads, fused=False)


def build_flash(s: Shape, p: Params):
    return _exact(s, s.heads, fused=True)


class GQAParams(Params):
    kv_heads: Optional[int] = Field(None, ge=1, description="K/V heads (default: --kv-heads, else heads/4)")
    window: Optional[int] = Field(None, ge=1, description="sliding window, as Mistral 7B v0.1 (default: none)")
    kernel: Optional[WindowKernel] = Field(None, description=KERNEL_HELP + " (default with a window: flex)")

    def resolve(self, shape: Shape) -> "GQAParams":
        kv = self.kv_heads or shape.kv_heads or max(1, shape.heads // 4)
        if shape.heads % kv:
            raise VariantError(f"gqa.kv_heads={kv} must divide heads={shape.heads}")
        return self.model_copy(update={"kv_heads": kv})


def build_gqa(s: Shape, p: GQAParams):
    return _exact(s, p.kv_heads, fused=True, window=p.window, kernel=p.kernel or "flex")


def build_mqa(s: Shape, p: Params):
    return _exact(s, 1, fused=True)


class WindowParams(Params):
    window: int = Field(512, ge=1, description="keys each query sees (itself and the previous window-1)")
    kernel: WindowKernel = Field("flex", description=KERNEL_HELP)


def build_sliding_window(s: Shape, p: WindowParams):
    return _exact(s, s.heads, fused=True, window=p.window, kernel=p.kernel)


VARIANTS = [
    Variant("mha", "Multi-head attention, math path",
            "softmax(QK^T/sqrt(dh) + mask) V per head, every op written to memory; causal counted dense",
            "Vaswani et al. 2017, Attention Is All You Need", NoParams, build_mha, causal=None,
            cost="O(T^2 d) FLOPs; every head's T x T scores in memory; KV cache 2 d per token"),
    Variant("flash", "Exact attention, fused kernel",
            "the same attention in one SDPA kernel (FlashAttention / cuDNN / efficient); causal = half",
            "Dao et al. 2022; Dao 2023 (FlashAttention-2)", NoParams, build_flash, causal=None,
            cost="O(T^2 d) FLOPs (half when causal); O(T d) memory: no scores stored; KV cache 2 d per token"),
    Variant("gqa", "Grouped-query attention",
            "kv_heads K/V heads, each shared by heads/kv_heads query heads; fused kernel",
            "Ainslie et al. 2023, GQA", GQAParams, build_gqa, causal=None,
            cost="O(T^2 d) core as flash; K/V projections and KV cache kv_heads/heads of flash's"),
    Variant("mqa", "Multi-query attention",
            "one K/V head shared by all query heads; fused kernel",
            "Shazeer 2019, Fast Transformer Decoding", NoParams, build_mqa, causal=None,
            cost="O(T^2 d) core as flash; K/V projections and KV cache 1/heads of flash's"),
    Variant("sliding_window", "Sliding-window attention",
            "each query attends to the previous `window` keys (causal local attention); fused kernel; "
            "the KV cache keeps `window` tokens (rolling buffer)",
            "Beltagy et al. 2020 (Longformer); Jiang et al. 2023 (Mistral 7B)", WindowParams,
            build_sliding_window, causal=True,
            cost="O(T window d) FLOPs: linear in T; KV cache of window tokens, whatever T",
            notes=("causal by construction: the window looks back only",)),
]
