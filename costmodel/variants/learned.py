"""Variants where a small network replaces (part of) the score computation.

topk (seeds.md #2, after Bonsignori 2024): a KeySelector MLP (dh -> hidden -> T logits) picks the
top k keys of each query; a HeadApproximator MLP (k*dh -> hidden -> dh) maps the gathered values
to the head output. The selector's last layer has T outputs per query, so it costs
2*B*H*T*hidden*T FLOPs and writes a B*H*T*T logits tensor: O(T^2) per sequence, not O(k).
  Worked example (B=1, T=512, d=768, H=12, dh=64, k=16, hidden=64): selector logits
  2*12*512*64*512 = 402.7 M FLOPs, the same as QK^T of exact attention at this shape.

mlp_attention (Dense Synthesizer, Tay et al. 2021, arXiv:2005.00743; seeds.md #1): per head an MLP
predicts the T attention weights of each token from its hidden state, B = W2 ReLU(W1 x), then
softmax(B) V. With hidden = dh its two T-sized products cost 4*B*H*T^2*dh, exactly dot-product
attention's; the MLP's weights (hidden x T per head) grow with the sequence length.

msla (seeds.md #4, `gpt2_with_MSLA.py`): each head scores its query against L learnable latent
keys (Q latent^T / sqrt(dh)), keeps the top k, softmaxes them and mixes the selected latent keys,
plus V. No token attends to another token, so there is no KV cache; k_proj is computed and never
used, and the GPT-2 patch applies GPT-2's c_proj after MSLA's own out_proj (both counted).
"""

from pydantic import Field

from ..shape import Shape
from ..units import INDEX_BYTES
from .base import (LINEAR_VIEWS, MATMUL_VIEWS, Params, Variant, VariantError, append, heads_copied,
                   mask_buffer, merge_heads, new_graph, proj, split_heads, topk)
from .exact import batched, copy_back, views_without_backward


class TopkParams(Params):
    k: int = Field(16, ge=1, description="keys kept per query (at most T)")
    hidden: int = Field(64, ge=1, description="hidden width of both MLPs")
    at_most_T = ("k",)


def build_topk(s: Shape, p: TopkParams):
    """Every tensor stays token-major (B, L, H, ...): the heads are views of the projections."""
    g, x, rows = new_graph(s)
    H, dh, T = s.heads, s.head_dim, s.T
    R = rows * H  # (token, head) rows
    keys = min(p.k, T)
    q = proj(g, "q_proj", x, rows, s.d, s.d)
    g.views("q.heads", 1, "core")  # (B, L, H, dh)
    v = proj(g, "v_proj", x, rows, s.d, s.d)
    g.kv_cache(per_token=s.d, tokens=T)
    if s.phase == "decode":
        v = append(g, v, rows * s.d, s.batch * T * s.d)
    h = proj(g, "selector_hidden", q, R, dh, p.hidden)
    h = g.elementwise("selector_relu", "relu", (h,), elems=R * p.hidden, part="proj")
    g.calls("selector_logits.call", 1, "core")  # nn.Linear, its output's part the core's
    g.views("selector_logits.views", LINEAR_VIEWS, "core")
    logits = g.matmul("selector_logits", h, g.weight("W_selector_out", p.hidden * T), m=R, k=p.hidden, n=T)
    if s.causal and s.phase != "decode":
        mask = mask_buffer(g, "causal_mask", T * T)  # (T, 1, T), broadcast over the heads
        logits = g.elementwise("selector_mask", "mask", (logits, mask), elems=R * T)
    _, idx = topk(g, "topk", logits, elems=R * T, out_elems=R * keys)
    # the picked rows of V's (B*T*H, dh) view: idx * H + (b*T*H + h), a buffer of B*H int64 row numbers
    g.input("row_base", s.batch * H * INDEX_BYTES / g.itemsize)
    rows_idx = g.elementwise("gather_rows", "offset", (idx, "row_base"), elems=R * keys, index_out=True)
    views_without_backward(g, "gather_rows.flat", 1, "core")
    g.views("gather.views", 2, "core")  # V as rows; the rows picked as (B, L, H, k, dh)
    gv = g.elementwise("gather_values", "gather", (v, rows_idx), elems=R * keys * dh)
    g.views("gathered.view", 1, "core")  # (B, L, H, k*dh)
    a = proj(g, "approx_hidden", gv, R, keys * dh, p.hidden, part="core")
    a = g.elementwise("approx_relu", "relu", (a,), elems=R * p.hidden)
    o = proj(g, "approx_out", a, R, p.hidden, dh, part="core")
    g.views("o.merge", 1, "other")  # (B, L, H, dh) -> (B, L, d)
    g.output(proj(g, "o_proj", o, rows, s.d, s.d))
    return g


class SynthesizerParams(Params):
    hidden: int = Field(64, ge=1, description="hidden width of the per-head MLP")


def build_mlp_attention(s: Shape, p: SynthesizerParams):
    """V is cached head-major (B, H, T, dh); in prefill torch.matmul copies V's head view where it
    cannot fold it (``heads_copied``), and the heads of the output merge back by a copy. Gradients
    written head-major are copied back into token-major tensors (``Op.grad_copy``): those of the
    MLP's hidden layer and of V where there are several heads; those of the weights, transposed
    from (B, H, L, T) back to (H, B*L, T), and of the output where the heads do not fold."""
    g, x, rows = new_graph(s)
    H, dh, T = s.heads, s.head_dim, s.T
    heads = H > 1 and s.tokens > 1
    folds = not heads_copied(s.batch, H, s.tokens)
    v = proj(g, "v_proj", x, rows, s.d, s.d)
    split_heads(g, "v.heads", 1)
    g.kv_cache(per_token=s.d, tokens=T)
    if s.phase == "decode":
        v = append(g, v, rows * s.d, s.batch * T * s.d)
    h = proj(g, "mlp_hidden", x, rows, s.d, H * p.hidden)
    h = g.elementwise("mlp_relu", "relu", (h,), elems=rows * H * p.hidden, part="proj")
    g.views("mlp_logits.views", 2 + MATMUL_VIEWS, "core")  # h as (H, B*L, hidden), then torch.matmul
    w = batched(g, g.matmul("mlp_logits", h, g.weight("W_mlp_out", H * p.hidden * T), batch=H, m=rows, k=p.hidden,
                            n=T, grad_copy=(0,) if heads else ()))
    g.views("weights.heads", 2, "core")  # (H, B, L, T) -> (B, H, L, T)
    dense = rows * H * T
    masked = s.causal and s.phase != "decode"
    if masked:
        w = g.elementwise("mask", "mask", (w, mask_buffer(g, "causal_mask", T * T)), elems=dense)
    w = g.elementwise("softmax", "softmax", (w,), elems=dense)
    g.views("av.views", MATMUL_VIEWS, "core")
    if s.phase != "decode" and not folds:
        v = g.elementwise("v.heads_copy", "copy", (v,), elems=rows * s.d, part="other")
    o = g.matmul("av", w, v, batch=s.batch * H, m=s.tokens, k=T, n=dh)
    o = merge_heads(g, s, o, dh, contiguous=True)
    if s.phase != "decode" and heads:
        copy_back(g, "av" if folds else "v.heads_copy", 1 if folds else 0)
    if not folds:
        copy_back(g, "mask" if masked else "softmax", 0)
        copy_back(g, o, 0)
    g.output(proj(g, "o_proj", o, rows, s.d, s.d))
    return g


class MSLAParams(Params):
    latents: int = Field(64, ge=1, description="learnable latent keys L")
    k: int = Field(4, ge=1, description="latents kept per query (at most latents)")
    c_proj: bool = Field(True, description="count GPT-2's c_proj applied after MSLA's out_proj")

    def resolve(self, shape: Shape) -> "MSLAParams":
        if self.k > self.latents:
            raise VariantError(f"msla.k={self.k} must be at most msla.latents={self.latents}")
        return self


def build_msla(s: Shape, p: MSLAParams):
    """Scores, top-k and mixing run head-major (H, rows, ...); V stays row-major (rows, H, dh), so
    the sum with V writes the output row-major and the heads merge back by a view."""
    g, x, rows = new_graph(s)
    H, dh, L = s.heads, s.head_dim, p.latents
    R = rows * H
    keys = min(p.k, L)
    q = proj(g, "q_proj", x, rows, s.d, s.d)
    proj(g, "k_proj", x, rows, s.d, s.d)  # computed and never used, as in the seed's code
    v = proj(g, "v_proj", x, rows, s.d, s.d)
    g.views("v.heads", 1, "core")  # (rows, H, dh)
    g.views("q.heads", 2, "core")  # (rows, H, dh) -> (H, rows, dh), beside the op that reads it
    lat = g.weight("latent_keys", L * s.d)
    g.views("latent.heads", 2 + 1 + MATMUL_VIEWS, "core")  # (H, L, dh) by view and permute; lat^T; torch.matmul
    # q's gradient, written head-major, is copied back into its token-major projection
    sc = batched(g, g.matmul("latent_scores", q, lat, batch=H, m=rows, k=dh, n=L,
                             grad_copy=(0,) if H > 1 and rows > 1 else ()))
    sc = g.elementwise("scale", "div", (sc,), elems=R * L)
    top, idx = topk(g, "topk", sc, elems=R * L, out_elems=R * keys)
    w = g.elementwise("softmax", "softmax", (top,), elems=R * keys)
    # the picked rows of the latents' (L*H, dh) view: idx * H + h, a buffer of H int64 head numbers
    g.weight("head_index", H * INDEX_BYTES / g.itemsize, trainable=False)
    rows_idx = g.elementwise("gather_rows", "offset", (idx, "head_index"), elems=R * keys, index_out=True)
    views_without_backward(g, "gather_rows.flat", 1, "core")
    g.views("gather.views", 2, "core")  # the latents as rows; the rows picked as (H, rows, k, dh)
    sel = g.elementwise("gather_latents", "gather", (lat, rows_idx), elems=R * keys * dh)
    g.views("weights.view", 1, "core")  # w[..., None]
    # the latents' gradient, written by the product in its own layout, is copied to reach them by a view
    mix = g.elementwise("weigh_latents", "mul", (w, sel), elems=R * keys * dh, grad_copy=(1,))
    mix = g.elementwise("sum_latents", "mean", (mix,), elems=R * keys * dh, out_elems=R * dh, backward="sum")
    g.views("mix.rows", 1, "core")  # (rows, H, dh), a transpose
    o = g.elementwise("add_v", "add", (v, mix), elems=R * dh)
    g.views("o.merge", 1, "other")  # (B, L, d)
    o = proj(g, "out_proj", o, rows, s.d, s.d)
    if p.c_proj:
        o = proj(g, "c_proj", o, rows, s.d, s.d)
    g.output(o)
    return g


VARIANTS = [
    Variant("topk", "Top-k keys by an MLP selector",
            "KeySelector MLP (dh -> hidden -> T logits) picks k keys per query; HeadApproximator MLP "
            "(k*dh -> hidden -> dh) maps the gathered values to the head output",
            "after Bonsignori 2024 (a learned top-k key selector)", TopkParams, build_topk, causal=None,
            cost="O(T^2 hidden) per head for the selector's T logits per query, then O(T k dh): quadratic, not O(k)",
            notes=("the selector emits T logits per query: O(T^2) per sequence, not O(k)",
                   "its last layer's weights (hidden x T) grow with the sequence length")),
    Variant("mlp_attention", "MLP attention (Dense Synthesizer)",
            "per head softmax(W2 ReLU(W1 x)) V: an MLP predicts each token's T attention weights",
            "Tay et al. 2021, Synthesizer (arXiv:2005.00743)", SynthesizerParams,
            build_mlp_attention, causal=None,
            cost="O(T^2 (hidden + dh)) per head: T weights per token, a T x T matrix in memory",
            notes=("still quadratic: hidden x T weights per head and a T x T weight matrix",)),
    Variant("msla", "Multi-head Sparse Latent Attention",
            "per head: top-k of Q latent^T over L learned latents, softmax, mix the selected latents, add V; "
            "no token-to-token mixing",
            "no paper: a GPT-2 experiment with sparse latent attention (MSLA)", MSLAParams, build_msla, causal=None,
            cost="O(T L dh) per head with L latents: linear in T, no T x T term",
            notes=("no token attends to another token: not attention in the usual sense, no KV cache",)),
]
