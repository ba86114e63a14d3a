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
from .base import Params, Variant, append, new_graph, proj


class TopkParams(Params):
    k: int = Field(16, ge=1, description="keys kept per query")
    hidden: int = Field(64, ge=1, description="hidden width of both MLPs")


def build_topk(s: Shape, p: TopkParams):
    g, x, rows = new_graph(s)
    H, dh, T = s.heads, s.head_dim, s.T
    R = rows * H  # (token, head) rows
    q = proj(g, "q_proj", x, rows, s.d, s.d)
    v = proj(g, "v_proj", x, rows, s.d, s.d)
    g.kv_cache(per_token=s.d, tokens=T)
    if s.phase == "decode":
        v = append(g, v, rows * s.d, s.batch * T * s.d)
    h = proj(g, "selector_hidden", q, R, dh, p.hidden)
    h = g.elementwise("selector_relu", "relu", (h,), elems=R * p.hidden, part="proj")
    logits = g.matmul("selector_logits", h, g.weight("W_selector_out", p.hidden * T), m=R, k=p.hidden, n=T)
    if s.causal and s.phase != "decode":
        logits = g.elementwise("selector_mask", "mask", (logits,), elems=R * T)
    keys = min(p.k, T)
    idx = g.elementwise("topk", "topk", (logits,), elems=R * T, out_elems=R * keys, index_out=True)
    gv = g.elementwise("gather_values", "gather", (v, idx), elems=R * keys * dh)
    a = proj(g, "approx_hidden", gv, R, keys * dh, p.hidden, part="core")
    a = g.elementwise("approx_relu", "relu", (a,), elems=R * p.hidden)
    o = proj(g, "approx_out", a, R, p.hidden, dh, part="core")
    g.output(proj(g, "o_proj", o, rows, s.d, s.d))
    return g


class SynthesizerParams(Params):
    hidden: int = Field(64, ge=1, description="hidden width of the per-head MLP")


def build_mlp_attention(s: Shape, p: SynthesizerParams):
    g, x, rows = new_graph(s)
    H, dh, T = s.heads, s.head_dim, s.T
    v = proj(g, "v_proj", x, rows, s.d, s.d)
    g.kv_cache(per_token=s.d, tokens=T)
    if s.phase == "decode":
        v = append(g, v, rows * s.d, s.batch * T * s.d)
    h = proj(g, "mlp_hidden", x, rows, s.d, H * p.hidden)
    h = g.elementwise("mlp_relu", "relu", (h,), elems=rows * H * p.hidden, part="proj")
    w = g.matmul("mlp_logits", h, g.weight("W_mlp_out", H * p.hidden * T), batch=H, m=rows, k=p.hidden, n=T)
    dense = rows * H * T
    if s.causal and s.phase != "decode":
        w = g.elementwise("mask", "mask", (w,), elems=dense)
    w = g.elementwise("softmax", "softmax", (w,), elems=dense)
    o = g.matmul("av", w, v, batch=s.batch * H, m=s.tokens, k=T, n=dh)
    g.output(proj(g, "o_proj", o, rows, s.d, s.d))
    return g


class MSLAParams(Params):
    latents: int = Field(64, ge=1, description="learnable latent keys L")
    k: int = Field(4, ge=1, description="latents kept per query")
    c_proj: bool = Field(True, description="count GPT-2's c_proj applied after MSLA's out_proj")


def build_msla(s: Shape, p: MSLAParams):
    g, x, rows = new_graph(s)
    H, dh, L = s.heads, s.head_dim, p.latents
    R = rows * H
    keys = min(p.k, L)
    q = proj(g, "q_proj", x, rows, s.d, s.d)
    proj(g, "k_proj", x, rows, s.d, s.d)  # computed and never used, as in the seed's code
    v = proj(g, "v_proj", x, rows, s.d, s.d)
    lat = g.weight("latent_keys", L * s.d)
    sc = g.matmul("latent_scores", q, lat, batch=H, m=rows, k=dh, n=L)
    sc = g.elementwise("scale", "div", (sc,), elems=R * L)
    idx = g.elementwise("topk", "topk", (sc,), elems=R * L, out_elems=R * keys, index_out=True)
    top = g.elementwise("topk_values", "gather", (sc, idx), elems=R * keys)
    w = g.elementwise("softmax", "softmax", (top,), elems=R * keys)
    sel = g.elementwise("gather_latents", "gather", (lat, idx), elems=R * keys * dh)
    mix = g.elementwise("weigh_latents", "mul", (w, sel), elems=R * keys * dh)
    mix = g.elementwise("sum_latents", "mean", (mix,), elems=R * keys * dh, out_elems=R * dh)
    o = g.elementwise("add_v", "add", (mix, v), elems=R * dh)
    o = proj(g, "out_proj", o, rows, s.d, s.d)
    if p.c_proj:
        o = proj(g, "c_proj", o, rows, s.d, s.d)
    g.output(o)
    return g


VARIANTS = [
    Variant("topk", "Top-k keys by an MLP selector",
            "KeySelector MLP (dh -> hidden -> T logits) picks k keys per query; HeadApproximator MLP "
            "(k*dh -> hidden -> dh) maps the gathered values to the head output",
            "seeds.md #2, after Bonsignori 2024", TopkParams, build_topk, causal=None,
            notes=("the selector emits T logits per query: O(T^2) per sequence, not O(k)",
                   "its last layer's weights (hidden x T) grow with the sequence length")),
    Variant("mlp_attention", "MLP attention (Dense Synthesizer)",
            "per head softmax(W2 ReLU(W1 x)) V: an MLP predicts each token's T attention weights",
            "Tay et al. 2021, Synthesizer (arXiv:2005.00743); seeds.md #1", SynthesizerParams,
            build_mlp_attention, causal=None,
            notes=("still quadratic: hidden x T weights per head and a T x T weight matrix",)),
    Variant("msla", "Multi-head Sparse Latent Attention (seed #4)",
            "per head: top-k of Q latent^T over L learned latents, softmax, mix the selected latents, add V; "
            "no token-to-token mixing",
            "seeds.md #4, gpt2_with_MSLA.py", MSLAParams, build_msla, causal=None,
            notes=("no token attends to another token: not attention in the usual sense, no KV cache",)),
]
