"""DeepSeek's latent attention: MLA (DeepSeek-V2) and its sparse form DSA (DeepSeek-V3.2-Exp).

MLA (DeepSeek-V2, arXiv:2405.04434, section 2.1): K and V are compressed into one latent
c_KV = x W_DKV of kv_lora_rank = d_c elements per token, plus a shared RoPE key of rope_dim = d_r
(k_rope = RoPE(x W_KR)); queries go through their own latent of q_lora_rank = d_c'
(q_nope = c_Q W_UQ, q_rope = RoPE(c_Q W_QR)). The cache holds d_c + d_r elements per token per
layer (no factor 2 for K and V). DeepSeek-V2's sizes: d_c = 512 = 4*dh, d_c' = 1536 = 12*dh,
d_r = 64 = dh/2 with dh = 128; attncost scales them with dh by default.

Prefill (and train) up-projects K and V per head and runs one fused attention with qk head dim
dh + d_r. No fused kernel of torch's CPU build (nor CUDA's flash) takes a v head dim other than
the q/k one, so V is padded with d_r zero channels per head (as vLLM's MLA prefill does): the AV
product runs over dh + d_r channels, and the d_r extra output channels are dropped as the heads
are merged (a copy). Decode absorbs W_UK into the query and W_UV into the output ("absorbed
weights"): per head, q_latent = q_nope W_UK^T (dh -> d_c); attention is then MQA over the
latent cache, whose d_c + d_r channels serve as keys and as values (one tensor, FlashMLA's
layout), and the d_r RoPE channels of the output are dropped in the W_UV product.
Worked decode example (B=1, H=16, dh=64, d_c=256, d_r=32, T=1000): scores 2*16*288*1000 = 9.216 M
FLOPs, AV 2*16*1000*288 = 9.216 M FLOPs, of which 8.192 M make the d_c channels kept; cache 288
elements per token.

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

Op for op: each step lists the host-only views the module runs beside its kernels. Where the
module reads a row block of a tensor (DSA's query blocks, T > k), the graph reads the whole tensor.
"""

from typing import Optional

from pydantic import Field

from ..shape import Shape
from ..units import CAUSAL_FUSED_FRACTION, INDEX_BYTES
from .base import (LINEAR_VIEWS, LSE_BYTES, MATMUL_VIEWS, Params, Variant, VariantError, append, causal_pairs,
                   layout_copy, mask_buffer, new_graph, proj)
from .exact import batched, views_without_backward

INDEX_BLOCK_ELEMS = 2**27  # a DSA query block's indexer scores + kept latents, per sequence (256 MiB in bf16)
MAX_BLOCKS = 16  # past this many blocks, blocks grow instead (each is about ten kernels)
MAX_CHUNK_BLOCKS = 1024  # an explicit dsa.chunk may make at most this many

# host-only views of the module's steps
ROPE_VIEWS = 4  # the cos and sin rows of the positions, the input's two halves (and its odd channel: one more)
HEADS_VIEWS = 2  # cos and sin broadcast over the heads
ABSORB_Q_VIEWS = 4 + MATMUL_VIEWS  # q_nope as heads, transposed; the result transposed, viewed as (B, L, H, C)
ABSORB_OUT_VIEWS = 6 + MATMUL_VIEWS  # the d_c channels, as heads, transposed; W_UV^T; back; merged
MQA_VIEWS = 3  # queries and latents as (N, 1, rows, C), the output back
INDEX_VIEWS = LINEAR_VIEWS + 5 + 2 * MATMUL_VIEWS  # per-head queries, keys^T, weights, scores, the sum


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


def _rope(g, s: Shape, name: str, t: str, elems: int, dim: int, heads: bool) -> str:
    """RoPE as ``profiler.modules.base.Rope`` runs it: rotate = the halves of t swapped (a cat of slices),
    then t * cos + rotate * sin (mul, mul, add: 3 FLOPs per element). cos and sin are the rows of
    the module's tables at this call's positions (buffers shared by the queries and the key)."""
    if "rope_cos" not in g.tensors:
        g.weight("rope_cos", s.tokens * dim, trainable=False)
        g.weight("rope_sin", s.tokens * dim, trainable=False)
    odd = dim % 2 == 1
    g.calls(name + ".call", 1, "other")  # the Rope module
    views_without_backward(g, name + ".views", ROPE_VIEWS + (1 if odd else 0) + (HEADS_VIEWS if heads else 0))
    slices = (t, t, t) if odd else (t, t)  # a cat of slices of t: its two halves (and its odd channel)
    rot = g.elementwise(name + "_rotate", "copy", slices, elems=elems, part="other")
    a = g.elementwise(name + "_cos", "mul", (t, "rope_cos"), elems=elems, part="other")
    b = g.elementwise(name + "_sin", "mul", (rot, "rope_sin"), elems=elems, part="other")
    return g.elementwise(name, "add", (a, b), elems=elems, part="other")


def _queries(g, s: Shape, p: MLAParams, x: str, rows: int) -> tuple:
    """(q_nope, rotated q_rope or None, the query latent c_Q): q_nope = c_Q W_UQ (H*dh),
    q_rope = RoPE(c_Q W_QR) (H*d_r), c_Q = x W_DQ (or x without a query latent)."""
    H, dh, dr = s.heads, s.head_dim, p.rope_dim
    c_q = proj(g, "q_down", x, rows, s.d, p.q_lora_rank) if p.q_lora_rank else x
    width = p.q_lora_rank or s.d
    q_nope = proj(g, "q_up" if p.q_lora_rank else "q_proj", c_q, rows, width, H * dh)
    if not dr:
        return q_nope, None, c_q
    q_rope = proj(g, "q_rope", c_q, rows, width, H * dr)
    g.views("q_rope.heads", 1, "other")
    return q_nope, _rope(g, s, "q_rotated", q_rope, rows * H * dr, dr, heads=True), c_q


def _latent_kv(g, s: Shape, p: MLAParams, x: str, rows: int) -> tuple:
    """(c_KV = x W_DKV (d_c), the rotated shared RoPE key RoPE(x W_KR) (d_r) or None)."""
    ckv = proj(g, "kv_down", x, rows, s.d, p.kv_lora_rank)
    if not p.rope_dim:
        return ckv, None
    k_rope = proj(g, "k_rope", x, rows, s.d, p.rope_dim)
    return ckv, _rope(g, s, "k_rotated", k_rope, rows * p.rope_dim, p.rope_dim, heads=False)


def _cache_latent(g, s: Shape, p: MLAParams, ckv: str, k_rope: Optional[str], rows: int) -> str:
    """Decode: c_KV and k_rope of the new token into slot T-1 of the latent cache (two copies)."""
    for name, t, n in (("latent_cache_append", ckv, p.kv_lora_rank), ("k_rope_cache_append", k_rope, p.rope_dim)):
        if t is not None:
            g.views(name + ".views", 2, "other")  # the channels, then the slot
            g.elementwise(name, "copy", (t,), elems=rows * n, part="other")
    return g.cache("latent_cache", s.batch * s.T * (p.kv_lora_rank + p.rope_dim))


def _absorb_query(g, s: Shape, p: MLAParams, q_nope: str, q_rope: Optional[str], rows: int,
                  cuts: Optional[list] = None):
    """q_latent = q_nope W_UK per head (dh -> d_c), then [q_latent | q_rope] (d_c + d_r). With
    ``cuts`` (row blocks of each sequence), a list of one tensor per block (``_row_blocks``)."""
    H, dh, dc, dr = s.heads, s.head_dim, p.kv_lora_rank, p.rope_dim
    w = g.weight("W_k_up", dc * H * dh)
    # q_nope's gradient, written head-major, is copied back into its projection's layout
    q_lat = batched(g, g.matmul("q_absorb", q_nope, w, batch=H, m=rows, k=dh, n=dc, part="proj",
                                grad_copy=(0,) if H > 1 and rows > 1 else ()))
    g.views("q_absorb.views", ABSORB_Q_VIEWS + (1 if dr else 0), "proj")  # q_rope as heads
    if not dr:
        return q_lat if cuts is None else [q_lat] * len(cuts)
    blocks = _row_blocks(g, s, "q_concat", (q_lat, q_rope), H * (dc + dr), cuts or [s.tokens])
    return blocks if cuts else blocks[0]


def _row_blocks(g, s: Shape, name: str, reads: tuple, width: int, cuts: list) -> list:
    """A copy kernel (a cat) whose output is listed as the row blocks of each sequence, ``cuts``
    rows each in order (covering its rows, ``width`` elements per row): one tensor per block, so
    that a later kernel reading one block reads only it."""
    if len(cuts) == 1:
        return [g.elementwise(name, "copy", reads, elems=s.batch * cuts[0] * width, part="other")]
    return [g.elementwise(f"{name}[{n}]", "copy", reads, elems=s.batch * rows * width, part="other",
                          kernel=name) for n, rows in enumerate(cuts)]


def _fused(g, tag: str, q: str, k: str, v: str, *, batch: int, m: int, qk_dim: int, keys: int, v_dim: int,
           kept: int, fraction: float) -> tuple:
    """One fused SDPA kernel: softmax(scale * q k^T) v for ``batch`` groups of ``m`` query rows over
    ``keys`` keys, writing the rows' log-sum-exp beside its output. v has ``v_dim`` channels, of
    which the caller reads the first ``kept``: the AV product is listed as two matmuls in the
    kernel, the kept channels and the others (written, never read). Returns both (None for the
    others where v has no more channels)."""
    kernel = "attention" + tag
    dense = batch * m * keys
    sc = g.matmul("scores" + tag, q, k, batch=batch, m=m, k=qk_dim, n=keys, kernel=kernel,
                  fraction=fraction, recompute=True)
    sc = g.elementwise("scale" + tag, "scale", (sc,), elems=dense * fraction, out_elems=dense, kernel=kernel,
                       recompute=True)
    pr = g.elementwise("softmax" + tag, "softmax", (sc,), elems=dense * fraction, out_elems=dense, kernel=kernel,
                       recompute=True)
    out = g.matmul("av" + tag, pr, v, batch=batch, m=m, k=keys, n=kept, kernel=kernel, fraction=fraction)
    dropped = None
    if v_dim > kept:
        dropped = g.matmul("av_dropped" + tag, pr, v, batch=batch, m=m, k=keys, n=v_dim - kept, kernel=kernel,
                           fraction=fraction)
    g.elementwise("lse" + tag, "copy", (pr,), elems=batch * m * LSE_BYTES / g.itemsize, kernel=kernel)
    return out, dropped


def _latent_attention(g, s: Shape, p: MLAParams, q_lat: str, latents: str, rows: int, keys: int,
                      fraction: float, tag: str = "") -> tuple:
    """One fused kernel, MQA over latents: each of ``rows`` queries (H heads) scores ``keys``
    latents over d_c + d_r channels and mixes them (keys = values); returns the d_c channels
    kept (rows, H, d_c) and the d_r dropped ones (None without RoPE)."""
    C = p.kv_lora_rank + p.rope_dim
    return _fused(g, tag, q_lat, latents, latents, batch=rows, m=s.heads, qk_dim=C, keys=keys, v_dim=C,
                  kept=p.kv_lora_rank, fraction=fraction)


def _absorb_output(g, s: Shape, p: MLAParams, o_lat: str, rows: int) -> str:
    """The latent output's d_c channels through W_UV per head (d_c -> dh), heads merged: a copy
    where more than one row of more than one head is transposed back."""
    H, dh, dc = s.heads, s.head_dim, p.kv_lora_rank
    # W_UV^T's gradient, transposed, is copied into the weight's layout
    o = batched(g, g.matmul("out_absorb", o_lat, g.weight("W_v_up", dc * H * dh), batch=H, m=rows, k=dc, n=dh,
                            part="proj", grad_copy=(1,)))
    views_without_backward(g, "out_absorb.kept", 1, "proj")  # the d_c channels (their gradient: a copy)
    g.views("out_absorb.views", ABSORB_OUT_VIEWS - 1, "proj")
    if rows > 1 and H > 1:
        o = g.elementwise("o_heads", "copy", (o,), elems=rows * H * dh, part="other")
    return o


def build_mla(s: Shape, p: MLAParams):
    g, x, rows = new_graph(s)
    H, dh, dc, dr = s.heads, s.head_dim, p.kv_lora_rank, p.rope_dim
    q, q_rope, _ = _queries(g, s, p, x, rows)
    ckv, k_rope = _latent_kv(g, s, p, x, rows)
    g.kv_cache(per_token=dc + dr, tokens=s.T)
    if s.phase == "decode":
        cache = _cache_latent(g, s, p, ckv, k_rope, rows)
        q_lat = _absorb_query(g, s, p, q, q_rope, rows)
        g.views("latent_cache.kv", 1 + MQA_VIEWS, "core")  # one K/V head
        o = _absorb_output(g, s, p, _latent_attention(g, s, p, q_lat, cache, rows, s.T, 1.0)[0], rows)
    else:
        o = _prefill_attention(g, s, p, q, q_rope, ckv, k_rope, rows)
    g.output(proj(g, "o_proj", o, rows, H * dh, s.d))
    return g


def _prefill_attention(g, s: Shape, p: MLAParams, q: str, q_rope: Optional[str], ckv: str,
                       k_rope: Optional[str], rows: int) -> str:
    """K and V up-projected per head; [q | q_rope], [k | k_rope], v padded to dh + d_r; one fused
    causal SDPA; the dh channels kept, heads merged (a copy where the d_r others are dropped)."""
    H, dh, dc, dr = s.heads, s.head_dim, p.kv_lora_rank, p.rope_dim
    k = g.matmul("k_up", ckv, g.weight("W_k_up", dc * H * dh), m=rows, k=dc, n=H * dh, part="proj")
    v = g.matmul("v_up", ckv, g.weight("W_v_up", dc * H * dh), m=rows, k=dc, n=H * dh, part="proj")
    g.views("kv_up.views", 2 * (LINEAR_VIEWS + 2) + 1, "proj")  # W_UK, W_UV and q, k, v as heads
    if dr:
        # the gradients of q and k, slices of the concatenations', are copied back into (B, T, H*dh)
        sliced = (0,) if H > 1 else ()
        q = g.elementwise("q_concat", "copy", (q, q_rope), elems=rows * H * (dh + dr), part="other", grad_copy=sliced)
        g.views("k_rope.heads", 1, "other")  # the shared key as one head
        views_without_backward(g, "k_rope.expand", 1)  # broadcast over the heads (its gradient: a sum)
        k = g.elementwise("k_concat", "copy", (k, k_rope), elems=rows * H * (dh + dr), part="other", grad_copy=sliced)
        v = g.elementwise("v_pad", "copy", (v,), elems=rows * H * (dh + dr), part="other")
    fraction = causal_pairs(s.T, s.T) / (s.T * s.T) if s.causal else 1.0
    g.views("attention.heads", 4, "core")  # q, k, v and the output transposed
    o, _ = _fused(g, "", q, k, v, batch=s.batch * H, m=s.T, qk_dim=dh + dr, keys=s.T, v_dim=dh + dr, kept=dh,
                  fraction=fraction)
    if dr:
        views_without_backward(g, "attention.kept", 1)  # the dh channels (their gradient: a copy)
    g.views("attention.merge", 1, "other")  # the heads merged
    if dr and H > 1:
        o = g.elementwise("o_heads", "copy", (o,), elems=rows * H * dh, part="other")
    return o


class DSAParams(MLAParams):
    index_heads: int = Field(64, ge=1, description="indexer heads (DeepSeek-V3.2's 64)")
    index_dim: Optional[int] = Field(None, ge=1, description="indexer head dim (default dh: DeepSeek-V3.2's 128 "
                                                             "at dh 128, scaled with the head dim as MLA's ranks)")
    k: int = Field(2048, ge=1, description="tokens each query keeps")
    chunk: Optional[int] = Field(None, ge=1, description="queries scored, selected and attended per block "
                                                         "(default: a block's indexer scores and kept latents "
                                                         "within 2^27 elements per sequence, at most 16 blocks)")

    def resolve(self, shape: Shape) -> "DSAParams":
        if self.chunk is not None and -(-shape.T // self.chunk) > MAX_CHUNK_BLOCKS:
            raise VariantError(f"dsa.chunk={self.chunk} makes more than {MAX_CHUNK_BLOCKS} blocks of queries at "
                               f"T={shape.T}: give at least {-(-shape.T // MAX_CHUNK_BLOCKS)}")
        resolved = super().resolve(shape)
        return resolved.model_copy(update=dict(index_dim=self.index_dim or shape.head_dim))


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
    count = -(-tokens // chunk)  # the last block ends at ``tokens``, whole or not: one structure either way
    return [(n * chunk, (n + 1) * chunk if n + 1 < count else tokens) for n in range(count)]


def _split_blocks(tokens: int, chunk: int, early: int) -> list:
    """[(rows, early rows, sparse rows), ...] of each of ``query_blocks``: its rows, those before
    ``early`` (they keep every key) and the others. Every whole block gives the number ``chunk``
    itself, so that the fast path (``tape``) records the costs of like blocks once."""
    blocks = query_blocks(tokens, chunk)
    out = []
    for n, (start, stop) in enumerate(blocks):
        rows = chunk if n + 1 < len(blocks) else stop - start
        if start >= early:
            out.append((rows, 0, rows))
        elif stop <= early:
            out.append((rows, rows, 0))
        else:
            out.append((rows, early - start, stop - early))
    return out


def _topk(g, name: str, scores: str, elems: int, kept: int, unread: int = 0) -> str:
    """torch.topk: one kernel writing the kept indices (int64) and their values; the indices are
    written even where no later kernel reads them (a causal prefill of T <= k keeps every key).
    ``unread`` of the ``kept`` indices (the rows of queries before k, in the block where the
    sparse queries start) are listed apart, so that the gather reads only the others."""
    idx = g.elementwise(name, "topk", (scores,), elems=elems, out_elems=kept - unread, index_out=True)
    if unread:
        g.elementwise(name + ".early", "topk", (scores,), elems=0, out_elems=unread, index_out=True, kernel=name)
    g.elementwise(name + ".values", "gather", (scores,), elems=kept, kernel=name)
    return idx


def _indexer(g, s: Shape, p: DSAParams, c_q: str, w_qi: str, ki: str, wi: str, rows: int, tag: str) -> str:
    """Indexer scores of ``rows`` queries (per sequence): per-head queries, ReLU scores against
    every key, summed with the query's weights (a row block of them, L < T, of more than one
    sequence is copied by the reshape into a batch of rows)."""
    B, T, Hi, di = s.batch, s.T, p.index_heads, p.index_dim
    g.calls("index_q" + tag + ".call", 1, "proj")  # nn.Linear, its weight shared by the blocks
    qi = g.matmul("index_q" + tag, c_q, w_qi, m=B * rows, k=p.q_lora_rank or s.d, n=Hi * di, part="proj")
    g.views("index" + tag + ".views", INDEX_VIEWS, "core")
    si = g.matmul("index_scores" + tag, qi, ki, batch=B, m=rows * Hi, k=di, n=T)
    si = g.elementwise("index_relu" + tag, "relu", (si,), elems=B * rows * Hi * T)
    if B > 1 and rows < s.tokens:
        wi = layout_copy(g, "index_w" + tag + ".rows", wi, B * rows * Hi)
    return g.matmul("index_weigh" + tag, wi, si, batch=B * rows, m=1, k=Hi, n=T)


def _sparse_attention(g, s: Shape, p: DSAParams, q_lat: str, ckv: tuple, idx: str, rows: int, keys: int,
                      tag: str) -> tuple:
    """The kept latents of ``rows`` queries copied from the latents (``ckv``: the tensors holding
    them) by index_select of their rows, each sequence's indices offset to its own rows (an add, of
    more than one sequence), then one fused MQA kernel over them (its queries, a row block L < T of
    more than one sequence, copied by the reshape into a batch of rows)."""
    C = p.kv_lora_rank + p.rope_dim
    views_without_backward(g, "gather" + tag + ".index", 1)  # the indices, a row per sequence
    if s.batch > 1:
        if "row_offsets" not in g.tensors:  # B int64 row numbers (a buffer of the batch's size, read as an input)
            g.input("row_offsets", s.batch * INDEX_BYTES / g.itemsize)
        idx = g.elementwise("gather_rows" + tag, "offset", (idx, "row_offsets"), elems=rows * keys, index_out=True)
    views_without_backward(g, "gather" + tag + ".flat", 1)  # the indices flat
    g.views("gather" + tag + ".views", 2, "other")  # the latents as rows; the kept latents
    kept = g.elementwise("gather_topk" + tag, "gather", ckv + (idx,), elems=rows * keys * C)
    if s.batch > 1 and rows < s.batch * s.tokens:
        q_lat = layout_copy(g, "q_lat" + tag + ".rows", q_lat, rows * s.heads * C)
    g.views("attention" + tag + ".views", MQA_VIEWS, "core")
    return _latent_attention(g, s, p, q_lat, kept, rows, keys, 1.0, tag)


def build_dsa(s: Shape, p: DSAParams):
    g, x, rows = new_graph(s)
    Hi, di, dc, dr = p.index_heads, p.index_dim, p.kv_lora_rank, p.rope_dim
    T, B = s.T, s.batch
    decode = s.phase == "decode"
    keys = min(p.k, T)
    early = keys if not decode and s.causal else 0  # queries t < k keep all t+1 keys: one causal kernel
    q, q_rope, c_q = _queries(g, s, p, x, rows)
    ckv, k_rope = _latent_kv(g, s, p, x, rows)
    if decode:
        ckv = (_cache_latent(g, s, p, ckv, k_rope, rows),)
    elif dr:  # the first k latents apart, as the causal kernel reads them
        ckv = tuple(_row_blocks(g, s, "latent_concat", (ckv, k_rope), dc + dr,
                                [early, T - early] if 0 < early < T else [T]))
    else:
        ckv = (ckv,)
    # lightning indexer: keys and weights of every token at once, queries block by block
    w_qi = g.weight("W_index_q", (p.q_lora_rank or s.d) * Hi * di)
    ki = proj(g, "index_k", x, rows, s.d, di)
    if decode:
        ki = append(g, ki, rows * di, B * T * di)
    wi = proj(g, "index_w", x, rows, s.d, Hi)
    g.kv_cache(per_token=dc + dr + di, tokens=T)
    if decode:
        si = _indexer(g, s, p, c_q, w_qi, ki, wi, 1, "")
        idx = _topk(g, "topk", si, B * T, B * keys)
        q_lat = _absorb_query(g, s, p, q, q_rope, rows)
        parts = [_sparse_attention(g, s, p, q_lat, ckv, idx, rows, keys, "")]
    else:
        parts = _prefill_blocks(g, s, p, (q, q_rope), ckv, (c_q, w_qi, ki, wi), early, keys)
    o_lat = parts[0][0]
    if len(parts) > 1:
        reads = tuple(t for part in parts for t in part if t is not None)
        if dr:  # the d_r dropped channels travel with the parts
            g.elementwise("o_concat_dropped", "copy", reads, elems=0, out_elems=rows * s.heads * dr,
                          part="other", kernel="o_concat")
        # the gradient of a sparse part, rows of several sequences, is copied into its kernel's batch
        copied = tuple(reads.index(part[0]) for part in parts[1 if early else 0:]) if B > 1 else ()
        o_lat = g.elementwise("o_concat", "copy", reads, elems=rows * s.heads * dc, part="other", grad_copy=copied)
    o = _absorb_output(g, s, p, o_lat, rows)
    g.output(proj(g, "o_proj", o, rows, s.heads * s.head_dim, s.d))
    return g


def _prefill_blocks(g, s: Shape, p: DSAParams, q: tuple, ckv: tuple, index_in: tuple, early: int,
                    keys: int) -> list:
    """The absorbed queries (as the row blocks the attentions read), the causal kernel of the
    first ``early`` queries, then the blocks: indexer scores, mask, top-k, and (past ``early``)
    the gathered latents and their attention. Returns the parts of the latent output, in order.

    A block of L < T rows: F.linear takes torch.matmul's broadcast path for its query latents (three
    views more); of more than one sequence, its rows are not one stride apart, and the reshapes of
    its weights and absorbed queries copy them (``_indexer``, ``_sparse_attention``)."""
    B, T = s.batch, s.T
    blocks = _split_blocks(s.tokens, block_rows(s, p), early)
    sparse = [after for _, _, after in blocks if after]
    q_lat = iter(_absorb_query(g, s, p, *q, B * T, ([early] if early else []) + sparse))
    parts = []
    if early:
        views_without_backward(g, "attention:early.rows", 2, "core")  # queries and latents of the first k
        g.views("attention:early.views", 3, "core")  # as heads; back
        parts.append(_latent_attention(g, s, p, next(q_lat), ckv[0], B * early, early, CAUSAL_FUSED_FRACTION,
                                       ":early"))
    c_q, w_qi, ki, wi = index_in
    for n, (L, before, after) in enumerate(blocks):
        tag = f"[{n}]" if len(blocks) > 1 else ""
        # the block's query latents and weights; index_q on a row block: torch.matmul's broadcast path
        g.views("block" + tag + ".rows", 2 + (LINEAR_VIEWS if L < T else 0), "core")
        si = _indexer(g, s, p, c_q, w_qi, ki, wi, L, tag)
        if s.causal:
            g.views("index_mask" + tag + ".rows", 1, "core")
            if "mask_causal" not in g.tensors:
                mask_buffer(g, "mask_causal", T * T)
            si = g.elementwise("index_mask" + tag, "mask", (si, "mask_causal"), elems=B * L * T)
        idx = _topk(g, "topk" + tag, si, B * L * T, B * L * keys, B * before * keys if before and after else 0)
        if after:
            # the block's queries and indices past early
            views_without_backward(g, "block" + tag + ".sparse", 2, "core")
            parts.append(_sparse_attention(g, s, p, next(q_lat), ckv, idx, B * after, keys, tag))
    return parts


VARIANTS = [
    Variant("mla", "Multi-head latent attention",
            "K,V from a shared latent c_KV = x W_DKV (d_c) + a RoPE key (d_r); prefill up-projects per "
            "head and runs fused attention; decode absorbs W_UK/W_UV and attends as MQA over the latent cache",
            "DeepSeek-AI 2024, DeepSeek-V2 (arXiv:2405.04434)", MLAParams, build_mla, causal=True,
            cost="O(T^2 d) core as flash (q/k head dim dh + d_r); KV cache d_c + d_r per token, shared by all heads",
            notes=("defaults scale DeepSeek-V2's d_c=4*dh, d_c'=12*dh, d_r=dh/2 with the head dim",
                   "V takes the q/k head dim (prefill: v padded with d_r zeros; decode: the latents are "
                   "keys and values) so that one fused kernel runs; the extra output channels are dropped")),
    Variant("dsa", "DeepSeek sparse attention",
            "a lightning indexer I(t,s) = sum_j w_tj ReLU(q_tj . k_s) scores every previous token; the top k "
            "are kept and MLA (absorbed, MQA form) attends over them; the indexer stays quadratic",
            "DeepSeek-AI 2025, DeepSeek-V3.2-Exp", DSAParams, build_dsa, causal=True,
            cost="O(T^2 index_heads index_dim) indexer + O(T k d_c) attention; KV cache d_c + d_r + index_dim per "
                 "token",
            notes=("the indexer scores all T keys per query: O(T^2) FLOPs, cheap per pair",
                   "defaults: the MLA ranks, and the indexer head dim (index_dim = dh), scale with the head dim as "
                   "in DeepSeek-V3.2 (64 indexer heads of 128 at dh 128)",
                   "queries in blocks of `chunk`, each gathering its kept latents into memory (as eager "
                   "PyTorch runs it: no sparse-attention kernel); peak memory is one block's")),
]
