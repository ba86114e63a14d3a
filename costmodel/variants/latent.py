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

As eager PyTorch runs it (``profiler/modules/latent.py``), query by query block: the per-head
indexer scores of all queries at once would be a B x (T*index_heads) x T tensor (256 GiB in bf16
at T = 32768), so the queries go in blocks of ``chunk`` rows (``query_blocks``). Each block scores
its queries against all keys, masks, keeps the top k, gathers the kept latents into memory (no
sparse-attention kernel in PyTorch) and attends over them in one fused kernel. In a causal
prefill the first k queries see at most k keys, all of them kept: they attend in one causal
fused kernel over the first k latents (k^2/2 pairs), so the pairs add up to T*k - k^2/2. Peak
memory is then that of one block, plus the projections.
"""

from typing import Optional

from pydantic import Field

from ..shape import Shape
from ..units import CAUSAL_FUSED_FRACTION
from .base import Params, Variant, VariantError, append, attention_core, causal_pairs, new_graph, proj

INDEX_BLOCK_ELEMS = 2**27  # a DSA query block's indexer scores + kept latents, per sequence (256 MiB in bf16)
MAX_BLOCKS = 16  # past this many blocks, blocks grow instead (each is about ten kernels)
MAX_CHUNK_BLOCKS = 1024  # an explicit dsa.chunk may make at most this many


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


def _absorb_query(g, s: Shape, p: MLAParams, q: str, rows: int) -> str:
    """q_latent = q_nope W_UK per head (dh -> d_c), then [q_latent | q_rope] (d_c + d_r)."""
    H, dh, dc, dr = s.heads, s.head_dim, p.kv_lora_rank, p.rope_dim
    q_lat = g.matmul("q_absorb", q, g.weight("W_k_up", dc * H * dh), batch=H, m=rows, k=dh, n=dc, part="proj")
    return g.elementwise("q_concat", "copy", (q_lat, q), elems=rows * H * (dc + dr), part="other")


def _latent_attention(g, s: Shape, p: MLAParams, q_lat: str, cache: str, rows: int, keys: int,
                      fraction: float, tag: str = "") -> str:
    """One fused kernel, MQA over latents: each of ``rows`` queries (H heads) scores ``keys``
    latents over d_c + d_r channels and mixes their first d_c (values). Returns (rows, H, d_c)."""
    H, dc, dr = s.heads, p.kv_lora_rank, p.rope_dim
    kernel = "attention" + tag
    dense = rows * H * keys
    sc = g.matmul("scores" + tag, q_lat, cache, batch=rows, m=H, k=dc + dr, n=keys, kernel=kernel,
                  fraction=fraction, recompute=True)
    sc = g.elementwise("scale" + tag, "scale", (sc,), elems=dense * fraction, out_elems=dense, kernel=kernel,
                       recompute=True)
    pr = g.elementwise("softmax" + tag, "softmax", (sc,), elems=dense * fraction, out_elems=dense, kernel=kernel,
                       recompute=True)
    return g.matmul("av" + tag, pr, cache, batch=rows, m=H, k=keys, n=dc, kernel=kernel, fraction=fraction)


def _absorb_output(g, s: Shape, p: MLAParams, o_lat: str, rows: int) -> str:
    """The latent output through W_UV per head (d_c -> dh)."""
    H, dh, dc = s.heads, s.head_dim, p.kv_lora_rank
    return g.matmul("out_absorb", o_lat, g.weight("W_v_up", dc * H * dh), batch=H, m=rows, k=dc, n=dh, part="proj")


def build_mla(s: Shape, p: MLAParams):
    g, x, rows = new_graph(s)
    H, dh, dc, dr = s.heads, s.head_dim, p.kv_lora_rank, p.rope_dim
    q, _ = _queries(g, s, p, x, rows)
    ckv = _latent_kv(g, s, p, x, rows)
    g.kv_cache(per_token=dc + dr, tokens=s.T)
    if s.phase == "decode":
        cache = append(g, ckv, rows * (dc + dr), s.batch * s.T * (dc + dr))
        o_lat = _latent_attention(g, s, p, _absorb_query(g, s, p, q, rows), cache, rows, s.T, 1.0)
        o = _absorb_output(g, s, p, o_lat, rows)
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
    chunk: Optional[int] = Field(None, ge=1, description="queries scored, selected and attended per block "
                                                         "(default: a block's indexer scores and kept latents "
                                                         "within 2^27 elements per sequence, at most 16 blocks)")

    def resolve(self, shape: Shape) -> "DSAParams":
        if self.chunk is not None and -(-shape.T // self.chunk) > MAX_CHUNK_BLOCKS:
            raise VariantError(f"dsa.chunk={self.chunk} makes more than {MAX_CHUNK_BLOCKS} blocks of queries at "
                               f"T={shape.T}: give at least {-(-shape.T // MAX_CHUNK_BLOCKS)}")
        return super().resolve(shape)


def block_rows(s: Shape, p: DSAParams) -> int:
    """Queries per DSA block: ``p.chunk``, or by default as many as keep a block's indexer scores
    and kept latents within INDEX_BLOCK_ELEMS per sequence, in at most MAX_BLOCKS blocks. The
    default depends on T, so it is derived here, never stored in the parameters."""
    T = s.T
    if p.chunk is not None:
        return min(T, p.chunk)
    gathers = T > p.k or not s.causal  # a causal prefill of T <= k keeps every key, gathers none
    per_query = p.index_heads * T + (min(p.k, T) * (p.kv_lora_rank + p.rope_dim) if gathers else 0)
    return min(T, max(INDEX_BLOCK_ELEMS // per_query, -(-T // MAX_BLOCKS), 1))


def query_blocks(tokens: int, chunk: int) -> list:
    """[(start, stop), ...]: the blocks of ``chunk`` queries DSA processes one after the other."""
    return [(r, min(r + chunk, tokens)) for r in range(0, tokens, chunk)]


def build_dsa(s: Shape, p: DSAParams):
    g, x, rows = new_graph(s)
    Hi, di, dc, dr = p.index_heads, p.index_dim, p.kv_lora_rank, p.rope_dim
    q, c_q = _queries(g, s, p, x, rows)
    ckv = _latent_kv(g, s, p, x, rows)
    # lightning indexer: keys and weights of every token at once, queries block by block
    w_qi = g.weight("W_index_q", (p.q_lora_rank or s.d) * Hi * di)
    ki = proj(g, "index_k", x, rows, s.d, di)
    wi = proj(g, "index_w", x, rows, s.d, Hi)
    g.kv_cache(per_token=dc + dr + di, tokens=s.T)
    T, B = s.T, s.batch
    if s.phase == "decode":
        ckv = append(g, ckv, rows * (dc + dr), B * T * (dc + dr))
        ki = append(g, ki, rows * di, B * T * di)
    keys = min(p.k, T)
    q_lat = _absorb_query(g, s, p, q, rows)
    masked = s.phase != "decode" and s.causal
    early = keys if masked else 0  # queries t < k keep all t+1 keys: one causal kernel over k latents
    parts = []
    if early:
        parts.append(_latent_attention(g, s, p, q_lat, ckv, B * early, early, CAUSAL_FUSED_FRACTION, ":early"))
    blocks = query_blocks(s.tokens, block_rows(s, p))
    for n, (start, stop) in enumerate(blocks):
        tag = f"[{n}]" if len(blocks) > 1 else ""
        L = stop - start
        qi = g.matmul("index_q" + tag, c_q, w_qi, m=B * L, k=p.q_lora_rank or s.d, n=Hi * di, part="proj")
        si = g.matmul("index_scores" + tag, qi, ki, batch=B, m=L * Hi, k=di, n=T)
        si = g.elementwise("index_relu" + tag, "relu", (si,), elems=B * L * Hi * T)
        si = g.matmul("index_weigh" + tag, wi, si, batch=B * L, m=1, k=Hi, n=T)
        if masked:
            si = g.elementwise("index_mask" + tag, "mask", (si,), elems=B * L * T)
        idx = g.elementwise("topk" + tag, "topk", (si,), elems=B * L * T, out_elems=B * L * keys, index_out=True)
        sparse = B * (stop - max(start, early))
        if sparse > 0:
            kept = g.elementwise("gather_topk" + tag, "gather", (ckv, idx), elems=sparse * keys * (dc + dr))
            parts.append(_latent_attention(g, s, p, q_lat, kept, sparse, keys, 1.0, tag))
    o_lat = parts[0]
    if len(parts) > 1:
        o_lat = g.elementwise("o_concat", "copy", tuple(parts), elems=rows * s.heads * dc, part="other")
    o = _absorb_output(g, s, p, o_lat, rows)
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
            notes=("the indexer scores all T keys per query: O(T^2) FLOPs, cheap per pair",
                   "queries in blocks of `chunk`, each gathering its kept latents into memory (as eager "
                   "PyTorch runs it: no sparse-attention kernel); peak memory is one block's")),
]

