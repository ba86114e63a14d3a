"""DeepSeek's latent attention: MLA (DeepSeek-V2) and its sparse form DSA (DeepSeek-V3.2-Exp).

MLA (DeepSeek-V2, arXiv:2405.04434, section 2.1): K and V are compressed into one latent
c_KV = x W_DKV of kv_lora_rank = d_c elements per token, plus a shared RoPE key of rope_dim = d_r;
queries go through their own latent of q_lora_rank = d_c'. The cache holds d_c + d_r elements per
token per layer (no factor 2 for K and V). DeepSeek-V2's sizes: d_c = 512 = 4*dh,
d_c' = 1536 = 12*dh, d_r = 64 = dh/2 with dh = 128; attncost scales them with dh by default.

Prefill (and train) up-projects K and V per head and runs one fused attention with
qk head dim dh + d_r and v head dim dh. Decode absorbs W_UK into the query and W_UV into the
output ("absorbed weights"): per head, q_latent = q_nope W_UK^T (dh -> d_c); attention is then
MQA over the latent cache with head dim d_c + d_r = 576 for scores and d_c = 512 for values.
Worked decode example (B=1, H=16, dh=64, d_c=256, d_r=32, T=1000): scores 2*16*288*1000 = 9.216 M
FLOPs, AV 2*16*1000*256 = 8.192 M FLOPs; cache 288 elements per token.

DSA (DeepSeek-V3.2-Exp technical report): a lightning indexer with index_heads heads of
index_dim scores every previous token, I(t,s) = sum_j w(t,j) ReLU(q(t,j) . k(s)), the top
k tokens are kept and MLA (in its MQA, absorbed form) attends over them only. The indexer itself
is still quadratic in T: 2*B*T*T*index_heads*index_dim FLOPs for its scores (dense, then masked).
"""

from typing import Optional

from pydantic import Field

from ..shape import Shape
from .base import Params, Variant, append, attention_core, causal_pairs, new_graph, proj


class MLAParams(Params):
    kv_lora_rank: Optional[int] = Field(None, ge=1, description="d_c, latent size of K/V (default 4*dh)")
    q_lora_rank: Optional[int] = Field(None, ge=0, description="d_c', latent size of Q (default 12*dh; 0: no Q compression)")
    rope_dim: Optional[int] = Field(None, ge=0, description="d_r, decoupled RoPE dims (default dh/2)")

    def resolve(self, shape: Shape) -> "MLAParams":
        dh = shape.head_dim
        return self.model_copy(update=dict(
            kv_lora_rank=self.kv_lora_rank or 4 * dh,
            q_lora_rank=12 * dh if self.q_lora_rank is None else self.q_lora_rank,
            rope_dim=max(1, dh // 2) if self.rope_dim is None else self.rope_dim))


def _queries(g, s: Shape, p: MLAParams, x: str, rows: int):
    """Query latent (if any) and per-head queries [q_nope (dh) | q_rope (d_r)]; returns (q, c_q)."""
    H, dh, dr = s.heads, s.head_dim, p.rope_dim
    c_q = x
    if p.q_lora_rank:
        c_q = proj(g, "q_down", x, rows, s.d, p.q_lora_rank)
    q = proj(g, "q_up" if p.q_lora_rank else "q_proj", c_q, rows, p.q_lora_rank or s.d, H * (dh + dr))
    if dr:
        q = g.elementwise("q_rope", "rope", (q,), elems=rows * H * dr, out_elems=rows * H * (dh + dr), part="other")
    return q, c_q


def _latent_kv(g, s: Shape, p: MLAParams, x: str, rows: int) -> str:
    """c_KV and the shared RoPE key of each token: x W_DKV (d -> d_c + d_r)."""
    ckv = proj(g, "kv_down", x, rows, s.d, p.kv_lora_rank + p.rope_dim)
    if p.rope_dim:
        ckv = g.elementwise("k_rope", "rope", (ckv,), elems=rows * p.rope_dim,
                            out_elems=rows * (p.kv_lora_rank + p.rope_dim), part="other")
    return ckv


def _absorbed(g, s: Shape, p: MLAParams, q: str, cache: str, rows: int, keys: int, fraction: float,
              gathered: Optional[int] = None) -> str:
    """MQA over the latent cache with W_UK absorbed into q and W_UV into the output (decode, DSA)."""
    H, dh, dc, dr = s.heads, s.head_dim, p.kv_lora_rank, p.rope_dim
    w_uk, w_uv = g.weight("W_k_up", dc * H * dh), g.weight("W_v_up", dc * H * dh)
    q_lat = g.matmul("q_absorb", q, w_uk, batch=H, m=rows, k=dh, n=dc, part="proj")
    q_lat = g.elementwise("q_concat", "copy", (q_lat, q), elems=rows * H * (dc + dr), part="other")
    kernel = "attention"
    if gathered is not None:  # DSA: the selected latents are gathered inside the sparse kernel
        cache = g.elementwise("gather_topk", "gather", (cache, gathered), elems=rows * keys * (dc + dr),
                              kernel=kernel, recompute=True)
    dense = rows * H * keys
    sc = g.matmul("scores", q_lat, cache, batch=rows, m=H, k=dc + dr, n=keys, kernel=kernel,
                  fraction=fraction, recompute=True)
    sc = g.elementwise("scale", "scale", (sc,), elems=dense * fraction, out_elems=dense, kernel=kernel, recompute=True)
    pr = g.elementwise("softmax", "softmax", (sc,), elems=dense * fraction, out_elems=dense, kernel=kernel, recompute=True)
    o_lat = g.matmul("av", pr, cache, batch=rows, m=H, k=keys, n=dc, kernel=kernel, fraction=fraction)
    return g.matmul("out_absorb", o_lat, w_uv, batch=H, m=rows, k=dc, n=dh, part="proj")


def build_mla(s: Shape, p: MLAParams):
    g, x, rows = new_graph(s)
    H, dh, dc, dr = s.heads, s.head_dim, p.kv_lora_rank, p.rope_dim
    q, _ = _queries(g, s, p, x, rows)
    ckv = _latent_kv(g, s, p, x, rows)
    g.kv_cache(per_token=dc + dr, tokens=s.T)
    if s.phase == "decode":
        cache = append(g, ckv, rows * (dc + dr), s.batch * s.T * (dc + dr))
        o = _absorbed(g, s, p, q, cache, rows, s.T, 1.0)
    else:
        k_nope = g.matmul("k_up", ckv, g.weight("W_k_up", dc * H * dh), m=rows, k=dc, n=H * dh, part="proj")
        v = g.matmul("v_up", ckv, g.weight("W_v_up", dc * H * dh), m=rows, k=dc, n=H * dh, part="proj")
        k = g.elementwise("k_concat", "copy", (k_nope, ckv), elems=rows * H * (dh + dr), part="other")
        fraction = causal_pairs(s.T, s.T) / (s.T * s.T) if s.causal else 1.0
        o = attention_core(g, s, q, k, v, groups=s.batch * H, qk_dim=dh + dr, v_dim=dh, keys=s.T,
                           fraction=fraction, fused=True, mask=False)
    g.output(proj(g, "o_proj", o, rows, H * dh, s.d))
    return g


class DSAParams(MLAParams):
    index_heads: int = Field(64, ge=1, description="indexer heads")
    index_dim: int = Field(128, ge=1, description="indexer head dim")
    k: int = Field(2048, ge=1, description="tokens each query keeps")


def build_dsa(s: Shape, p: DSAParams):
    g, x, rows = new_graph(s)
    Hi, di, dc, dr = p.index_heads, p.index_dim, p.kv_lora_rank, p.rope_dim
    q, c_q = _queries(g, s, p, x, rows)
    ckv = _latent_kv(g, s, p, x, rows)
    # lightning indexer
    qi = proj(g, "index_q", c_q, rows, p.q_lora_rank or s.d, Hi * di)
    ki = proj(g, "index_k", x, rows, s.d, di)
    wi = proj(g, "index_w", x, rows, s.d, Hi)
    g.kv_cache(per_token=dc + dr + di, tokens=s.T)
    T = s.T
    if s.phase == "decode":
        ckv = append(g, ckv, rows * (dc + dr), s.batch * T * (dc + dr))
        ki = append(g, ki, rows * di, s.batch * T * di)
    scores_elems = rows * T
    si = g.matmul("index_scores", qi, ki, batch=s.batch, m=s.tokens * Hi, k=di, n=T, part="core")
    si = g.elementwise("index_relu", "relu", (si,), elems=scores_elems * Hi, part="core")
    si = g.matmul("index_weigh", wi, si, batch=rows, m=1, k=Hi, n=T, part="core")
    if s.phase != "decode" and s.causal:
        si = g.elementwise("index_mask", "mask", (si,), elems=scores_elems, part="core")
    keys = min(p.k, T)
    idx = g.elementwise("topk", "topk", (si,), elems=scores_elems, out_elems=rows * keys, part="core",
                        index_out=True)
    if s.phase == "decode":
        fraction = 1.0
    else:
        fraction = (causal_pairs(T, keys) if s.causal else T * keys) / (T * keys)
    o = _absorbed(g, s, p, q, ckv, rows, keys, fraction, gathered=idx)
    g.output(proj(g, "o_proj", o, rows, s.heads * s.head_dim, s.d))
    return g


VARIANTS = [
    Variant("mla", "Multi-head latent attention",
            "K,V from a shared latent c_KV = x W_DKV (d_c) + a RoPE key (d_r); prefill up-projects per "
            "head and runs fused attention; decode absorbs W_UK/W_UV and attends as MQA over the latent cache",
            "DeepSeek-AI 2024, DeepSeek-V2 (arXiv:2405.04434)", MLAParams, build_mla, causal=True,
            notes=("defaults scale DeepSeek-V2's d_c=4*dh, d_c'=12*dh, d_r=dh/2 with the head dim",)),
    Variant("dsa", "DeepSeek sparse attention",
            "a lightning indexer I(t,s) = sum_j w_tj ReLU(q_tj . k_s) scores every previous token; the top k "
            "are kept and MLA (absorbed, MQA form) attends over them; the indexer stays quadratic",
            "DeepSeek-AI 2025, DeepSeek-V3.2-Exp", DSAParams, build_dsa, causal=True,
            notes=("the indexer scores all T keys per query: O(T^2) FLOPs, cheap per pair",)),
]

