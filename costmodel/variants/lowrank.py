"""Approximations that avoid the T x T score matrix: Linformer, Nystromformer, Performer.

Linformer (Wang et al. 2020, arXiv:2006.04768): K and V are projected along the sequence by
E, F (k x T): softmax(Q (E K)^T / sqrt(dh)) (F V). Not causal (E mixes all positions), no decode.
  Worked example (B=1, T=1024, d=512, H=8, k=256): E K and F V 2 x 2*256*1024*512 = 536.9 M;
  scores 2*8*1024*64*256 = 268.4 M; AV the same.

Nystromformer (Xiong et al. 2021, arXiv:2102.03902; the authors' code): landmarks are segment means
of Q and K; out = softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V + DConv(V), the
pseudo-inverse by pinv_iters Newton-Schulz iterations of 4 (m x m x m) matmuls each. Not causal.

Performer (Choromanski et al. 2021, arXiv:2009.14794), FAVOR+ positive random features
phi(x) = exp(w.x - |x|^2/2) / sqrt(m) on x scaled by dh^-1/4. Non-causal: phi(Q) (phi(K)^T V),
normalised by phi(Q) phi(K)^T 1. Causal: prefix sums, computed chunk by chunk: inside a chunk of C
tokens a masked C x C product; across chunks a running m x dh state per head (never the naive
B*H*T*m*dh tensor), its exclusive prefix sum taken as the inclusive one less each chunk's own
state. Decode carries that state: a constant-size cache.

Op for op: each graph lists the kernels ``profiler/modules/lowrank.py`` runs, one op per kernel
(the feature map's steps apart), and the host-only views beside them; a head view (B, H, T, dh)
of a projection is copied where torch.matmul cannot fold it into one batch (``heads_copied``).
Where a module reads a row block of a tensor (Nystromformer's unequal segments, T % m != 0; the
causal Performer's padded rows, T % chunk != 0), the graph reads the whole tensor.
"""

import math
from typing import Optional

from pydantic import Field

from ..shape import Shape
from .base import (MATMUL_VIEWS, Params, Variant, attention_core, heads_copied, layout_copy, mask_buffer,
                   merge_heads, new_graph, proj, split_heads)
from .exact import views_without_backward


def _qkv(g, s: Shape, x: str, rows: int):
    return tuple(proj(g, n, x, rows, s.d, s.d) for n in ("q_proj", "k_proj", "v_proj"))


def _matmul(g, name: str, a: str, b: str, views: int = MATMUL_VIEWS, **mm) -> str:
    """torch.matmul of two batched tensors (one bmm) and its host-only views (expand and view of
    each input, the output viewed back; ``views`` counts transposes of an input too)."""
    g.views(name + ".views", views, mm.get("part", "core"))
    return g.matmul(name, a, b, **mm)


# -- Linformer ---------------------------------------------------------------------------
class LinformerParams(Params):
    k: int = Field(256, ge=1, description="length k that E and F project K and V down to along the sequence (at most T)")
    at_most_T = ("k",)


def build_linformer(s: Shape, p: LinformerParams):
    g, x, rows = new_graph(s)
    T, B, d = s.T, s.batch, s.d
    q = proj(g, "q_proj", x, rows, d, d)
    # E (k, T) @ K (B, T, d): torch.matmul transposes, broadcasts E over the batch, one bmm; F V alike
    kp, vp = (_matmul(g, f"{n}_seq_proj", g.weight(w, p.k * T), proj(g, f"{n}_proj", x, rows, d, d),
                      MATMUL_VIEWS + 1, batch=B, m=p.k, k=T, n=d, part="proj") for n, w in (("k", "E"), ("v", "F")))
    o = attention_core(g, s, q, kp, vp, groups=B * s.heads, qk_dim=s.head_dim, v_dim=s.head_dim,
                       keys=p.k, fraction=1.0, fused=True, mask=False)
    g.output(proj(g, "o_proj", o, rows, d, d))
    return g


# -- Nystromformer -----------------------------------------------------------------------
class NystromParams(Params):
    landmarks: int = Field(64, ge=1, description="landmarks m (segment means of Q and K; at most T)")
    pinv_iters: int = Field(6, ge=0, description="Newton-Schulz iterations of the pseudo-inverse")
    conv_kernel: int = Field(33, ge=0, description="depthwise convolution on V along the sequence (0: none)")
    at_most_T = ("landmarks",)


def build_nystrom(s: Shape, p: NystromParams):
    g, x, rows = new_graph(s)
    T, B, H, dh, m = s.T, s.batch, s.heads, s.head_dim, p.landmarks
    BH = B * H
    # Q and K / dh^(1/4). Their gradients come back head-major: Q's is copied back into its projection;
    # K's, transposed (its products read K^T), folds into F.linear's rows only within one sequence
    q, k = (g.elementwise(f"{n}_scale", "scale", (proj(g, f"{n}_proj", x, rows, s.d, s.d),), elems=rows * s.d,
                          grad_copy=c) for n, c in (("q", _head_view_copied(s)), ("k", _rows_copied(s))))
    v = proj(g, "v_proj", x, rows, s.d, s.d)
    split_heads(g, "heads.split", 3)
    ql = _segment_means(g, s, "q_landmarks", q, m)
    kl = _segment_means(g, s, "k_landmarks", k, m, transposed=True)
    copied = heads_copied(B, H, T)  # q, k, v: head views of BTHD tensors, copied by torch.matmul
    if copied:
        q = layout_copy(g, "q.heads", q, rows * s.d)
    k1 = _matmul(g, "kernel_1", q, kl, MATMUL_VIEWS + 1, batch=BH, m=T, k=dh, n=m)  # kl^T
    k1 = g.elementwise("softmax_1", "softmax", (k1,), elems=BH * T * m)
    k2 = _matmul(g, "kernel_2", ql, kl, MATMUL_VIEWS + 1, batch=BH, m=m, k=dh, n=m)
    k2 = g.elementwise("softmax_2", "softmax", (k2,), elems=BH * m * m)
    if copied:
        k = layout_copy(g, "k.heads", k, rows * s.d)
    k3 = _matmul(g, "kernel_3", ql, k, MATMUL_VIEWS + 1, batch=BH, m=m, k=dh, n=T)
    k3 = g.elementwise("softmax_3", "softmax", (k3,), elems=BH * m * T)
    z = _pinv(g, k2, BH, m, p.pinv_iters)
    vh = _heads_copy(g, v, rows * s.d) if copied else v
    kv = _matmul(g, "kernel_3_v", k3, vh, batch=BH, m=m, k=T, n=dh, grad_copy=() if copied else _head_view_copied(s, 1))
    a = _matmul(g, "kernel_1_pinv", k1, z, batch=BH, m=T, k=m, n=m)
    o = _matmul(g, "nystrom_out", a, kv, batch=BH, m=T, k=m, n=dh)
    if p.conv_kernel:
        ks = p.conv_kernel
        vp = g.elementwise("v_pad", "copy", (v,), elems=BH * (T + ks - 1) * dh, part="other")  # T rows out
        c = g.conv("v_conv", vp, g.weight("W_conv", H * ks), macs=BH * T * dh * ks, out_elems=BH * T * dh)
        # the output's gradient, token-major as the heads merged, copied into the bmm's batch layout
        o = g.elementwise("conv_add", "add", (o, c), elems=BH * T * dh, grad_copy=(0,) if copied else ())
    g.output(proj(g, "o_proj", merge_heads(g, s, o, dh, contiguous=True), rows, s.d, s.d))
    return g


def _segment_means(g, s: Shape, name: str, t: str, m: int, transposed: bool = False) -> str:
    """Means of m contiguous segments of the T rows of each head (``profiler.modules.base.segment_means``):
    one reduction over a (B, H, m, T/m, dh) view; T % m != 0: two (the first T % m segments one
    row longer), then a cat. ``transposed``: the means' gradient comes back transposed (they are
    read as a transpose), and is copied to take the (B, H, T, dh) shape where a segment has
    several rows."""
    B, H, dh, T = s.batch, s.heads, s.head_dim, s.T
    out = B * H * m * dh
    r = T % m
    if not r:
        g.views(name + ".views", 1, "proj")
        return g.elementwise(name, "mean", (t,), elems=B * T * s.d, out_elems=out, part="proj",
                             grad_copy=(0,) if transposed and T > m else ())
    big, small = r * (T // m + 1), T - r * (T // m + 1)
    g.views(name + ".views", 4, "proj")  # the two row blocks, as segments
    a = g.elementwise(name + "[long]", "mean", (t,), elems=B * H * big * dh, out_elems=B * H * r * dh, part="proj")
    b = g.elementwise(name + "[short]", "mean", (t,), elems=B * H * small * dh, out_elems=out - B * H * r * dh,
                      part="proj")
    return g.elementwise(name, "copy", (a, b), elems=out, part="proj")


def _pinv(g, a: str, BH: int, m: int, iters: int) -> str:
    """Moore-Penrose pseudo-inverse by the Newton-Schulz iteration of Nystromformer's code:
    Z0 = A^T / max column sum of A (A = softmax(...) is row-stochastic, so ||A||_inf = 1 and the
    code's iterative_inv computes column sums only); each iteration AZ = A Z,
    Z = 1/4 Z (13I - AZ (15I - AZ (7I - AZ))): 4 matmuls of m x m x m and 3 updates of m x m, each
    reading its constant c*I (a buffer): c*I - X, whose gradient is the negated one."""
    mm = BH * m * m
    z = g.elementwise("pinv_colsum", "mean", (a,), elems=mm, out_elems=BH * m, backward="sum")  # column sums
    z = g.elementwise("pinv_norm", "max", (z,), elems=BH * m, out_elems=BH)  # their max
    g.views("pinv_init.views", 2, "core")  # the max broadcast, A^T
    z = g.elementwise("pinv_init", "div", (a, z), elems=mm)  # A^T / max column sum
    eye = [g.weight(f"eye{c}", m * m, trainable=False) for c in (7, 15, 13)] if iters else []
    for i in range(iters):
        az = _matmul(g, f"pinv{i}_az", a, z, batch=BH, m=m, k=m, n=m)
        t = g.elementwise(f"pinv{i}_u1", "pinv_update", (eye[0], az), elems=mm, backward="sub")
        t = _matmul(g, f"pinv{i}_mm1", az, t, batch=BH, m=m, k=m, n=m)
        t = g.elementwise(f"pinv{i}_u2", "pinv_update", (eye[1], t), elems=mm, backward="sub")
        t = _matmul(g, f"pinv{i}_mm2", az, t, batch=BH, m=m, k=m, n=m)
        t = g.elementwise(f"pinv{i}_u3", "pinv_update", (eye[2], t), elems=mm, backward="sub")
        z = _matmul(g, f"pinv{i}_z", z, t, batch=BH, m=m, k=m, n=m)
        z = g.elementwise(f"pinv{i}_scale", "scale", (z,), elems=mm)
    return z


# -- Performer ---------------------------------------------------------------------------
class PerformerParams(Params):
    features: int = Field(256, ge=1, description="random features m")
    chunk: int = Field(64, ge=1, description="causal form: tokens per chunk of the prefix sum")


def _features(g, s: Shape, t: str, w: str, rows_h: int, name: str, stabilisers: int,
              fixed: Optional[str] = None) -> str:
    """phi(t) for rows_h (token, head) rows, step by step as ``Performer.phi_query`` / ``phi_key``
    run it: scale; |t|^2 (mul, sum); project on the m random features (t copied into a batch of
    heads where torch.matmul cannot fold it); subtract |t|^2/2; subtract the stabiliser (a max:
    ``stabilisers`` of them, one per query row, one per (sequence, head) for keys; ``fixed``: a
    decode key subtracts the one its state was built with, a cache); exp; scale by m^-1/2. The
    feature map's 5 FLOPs per feature (4 with ``fixed``), its |t|^2 2 per input element."""
    dh = s.head_dim
    m = g.tensors[w].elems // dh
    # the gradient, head-major, is copied back into the token-major projection
    t = g.elementwise(f"{name}_scale", "scale", (t,), elems=rows_h * dh, grad_copy=_head_view_copied(s))
    sq = g.elementwise(f"{name}_square", "mul", (t, t), elems=rows_h * dh, part="proj")  # t * t
    sq = g.elementwise(f"{name}_sqnorm", "mean", (sq,), elems=rows_h * dh, out_elems=rows_h, part="proj",
                       backward="sum_kept")
    if heads_copied(s.batch, s.heads, s.tokens):
        t = layout_copy(g, f"{name}.heads", t, rows_h * dh)
    # torch.matmul folds (B, H, L, dh) @ (dh, m) into one mm (a view in, a view out) only where the
    # head view is one matrix: one head and one token, or decode's token viewed as (B, H, 1, dh)
    folds = (s.heads == 1 and s.tokens == 1) or s.phase == "decode"
    # else one bmm over (sequence, head), the features broadcast
    batch, rows = (1, rows_h) if folds else (s.batch * s.heads, s.tokens)
    pr = _matmul(g, f"{name}_rf", t, w, 2 if folds else MATMUL_VIEWS, batch=batch, m=rows, k=dh, n=m, part="proj")
    pr = g.elementwise(f"{name}_sub_norm", "add", (pr, sq), elems=rows_h * m, part="proj", backward="sub_alpha")
    c = fixed or g.elementwise(f"{name}_stabiliser", "max", (pr,), elems=rows_h * m,
                               out_elems=stabilisers, part="proj")
    pr = g.elementwise(f"{name}_sub_max", "add", (pr, c), elems=rows_h * m, part="proj", backward="sub")
    pr = g.elementwise(f"{name}_exp", "exp", (pr,), elems=rows_h * m, part="proj")
    return g.elementwise(f"{name}_phi", "scale", (pr,), elems=rows_h * m, part="proj")


def _head_view_copied(s: Shape, read: int = 0) -> tuple:
    """``grad_copy`` of an op reading a head view (B, H, L, dh) of a token-major projection: its
    gradient, written head-major, is copied back where there are several heads and tokens."""
    return (read,) if s.heads > 1 and s.tokens > 1 else ()


def _rows_copied(s: Shape) -> tuple:
    """``grad_copy`` of an op reading a head view of a projection whose gradient comes back
    transposed: F.linear's gradient folds its rows into one dimension only within one sequence."""
    return (0,) if s.batch > 1 and s.tokens > 1 else ()


def _heads_copy(g, v: str, elems: float) -> str:
    """V's head view copied into (B, H, T, dh); its gradient is copied back (``Op.grad_copy``)."""
    return g.elementwise("v.heads", "copy", (v,), elems=elems, part="other", grad_copy=(0,))


def build_performer(s: Shape, p: PerformerParams):
    g, x, rows = new_graph(s)
    B, H, dh, m = s.batch, s.heads, s.head_dim, p.features
    BH, R = B * H, rows * H  # R: (token, head) rows
    decode = s.phase == "decode"
    q, k, v = _qkv(g, s, x, rows)
    if decode:  # one token: a plain view each (Performer.decode)
        g.views("heads.split", 3, "other")
    else:
        split_heads(g, "heads.split", 3)
    w = g.weight("W_rf", m * dh, trainable=False)
    if s.causal:  # the recurrent state a decode step keeps, as the exact variants declare their KV cache
        g.kv_cache(fixed=H * (m * (dh + 1) + 1))
    state = _state(g, s, m) if decode else None
    qf = _features(g, s, q, w, R, "q", R)
    kf = _features(g, s, k, w, R, "k", BH, state[2] if decode else None)
    if decode:
        o = _performer_step(g, s, qf, kf, v, m, state)
    elif s.causal:
        o = _performer_causal(g, s, qf, kf, v, m, p.chunk)
    else:
        T = s.T
        if heads_copied(B, H, T):
            v = _heads_copy(g, v, rows * s.d)
        kv = _matmul(g, "kv", kf, v, MATMUL_VIEWS + 1, batch=BH, m=m, k=T, n=dh,  # phi(K)^T
                     grad_copy=() if heads_copied(B, H, T) else _head_view_copied(s, 1))
        ks = g.elementwise("k_sum", "mean", (kf,), elems=BH * T * m, out_elems=BH * m, backward="sum")
        num = _matmul(g, "numerator", qf, kv, batch=BH, m=T, k=m, n=dh)
        den = _matmul(g, "denominator", qf, ks, MATMUL_VIEWS + 1, batch=BH, m=T, k=m, n=1)  # a column
        o = g.elementwise("normalise", "div", (num, den), elems=BH * T * dh)
    g.output(proj(g, "o_proj", merge_heads(g, s, o, dh, contiguous=True), rows, s.d, s.d))
    return g


def _performer_causal(g, s: Shape, qf, kf, v, m: int, chunk: int) -> str:
    """Chunked prefix sums. With C = min(chunk, T) and n = ceil(T/C) chunks (T padded to n*C:
    three pads; else V, a head view, copied once where it is not contiguous): intra-chunk masked phi(Q)phi(K)^T (C x m x C)
    and its product with V (C x C x dh); chunk states phi(K)^T V (m x C x dh), their exclusive
    prefix sum over chunks (cumsum, less each chunk's own), phi(Q) S (C x m x dh); the normaliser
    the same way with a column of ones in place of V. The rows past T are dropped as the heads
    are merged."""
    C = min(chunk, s.T)
    n = math.ceil(s.T / C)
    BHn, dh = s.batch * s.heads * n, s.head_dim
    if n * C > s.T:  # V's gradient, cut back from the padded one, is copied back into its projection
        qf, kf, v = (g.elementwise(f"{t}_pad", "copy", (t,), elems=BHn * C * w, part="other", grad_copy=c)
                     for t, w, c in ((qf, m, ()), (kf, m, ()), (v, dh, _head_view_copied(s))))
    elif s.heads > 1 and s.T > 1:  # v.contiguous(): a head view is contiguous with one head or token
        v = _heads_copy(g, v, BHn * C * dh)
    # phi(K)'s gradient, summed from transposed bmm gradients, is copied back into (B, H, T, m)
    # where the chunks do not fold into one dimension (several chunks)
    a = _matmul(g, "intra_scores", qf, kf, 4 + MATMUL_VIEWS, batch=BHn, m=C, k=m, n=C,  # chunks, phi(K)^T
                grad_copy=(1,) if n > 1 else ())
    a = g.elementwise("intra_mask", "mask", (a, mask_buffer(g, "chunk_mask", C * C)), elems=BHn * C * C)
    num_in = _matmul(g, "intra_av", a, v, batch=BHn, m=C, k=C, n=dh)
    den_in = g.elementwise("intra_rowsum", "mean", (a,), elems=BHn * C * C, out_elems=BHn * C, backward="sum_kept")
    st = _matmul(g, "chunk_state", kf, v, MATMUL_VIEWS + 1, batch=BHn, m=m, k=C, n=dh)  # phi(K)^T
    zs = g.elementwise("chunk_ksum", "mean", (kf,), elems=BHn * C * m, out_elems=BHn * m, backward="sum")
    one = "pass" if n == 1 else ""  # a prefix sum over one chunk: its gradient is the gradient itself
    st_in = g.elementwise("state_prefix", "cumsum", (st,), elems=BHn * m * dh, backward=one)
    st = g.elementwise("state_exclusive", "add", (st_in, st), elems=BHn * m * dh, backward="sub")
    zs_in = g.elementwise("ksum_prefix", "cumsum", (zs,), elems=BHn * m, backward=one)
    zs = g.elementwise("ksum_exclusive", "add", (zs_in, zs), elems=BHn * m, backward="sub")
    num_out = _matmul(g, "inter_num", qf, st, batch=BHn, m=C, k=m, n=dh)
    den_out = _matmul(g, "inter_den", qf, zs, MATMUL_VIEWS + 1, batch=BHn, m=C, k=m, n=1)  # a column
    # the output's gradient, token-major as the heads merged, is copied into each bmm's batch layout
    # where its (sequence, head, chunk) dimensions do not fold into one
    merged = (0, 1) if n * C == s.T and s.heads > 1 and (n > 1 or s.batch > 1) else ()
    num = g.elementwise("num_add", "add", (num_in, num_out), elems=BHn * C * dh, grad_copy=merged)
    den = g.elementwise("den_add", "add", (den_in, den_out), elems=BHn * C)  # columns, broadcast over dh
    o = g.elementwise("normalise", "div", (num, den), elems=BHn * C * dh)
    g.views("chunks.merge", 1, "other")  # (B, H, n*C, dh)
    if n * C > s.T:  # its first T rows (their gradient: a copy)
        views_without_backward(g, "chunks.rows", 1)
    if n * C > s.T and s.heads == 1:  # merged without a copy, those rows reach o_proj strided:
        g.views("o_proj.rows", 3, "other")  # F.linear takes torch.matmul's broadcast path
    return o


def _state(g, s: Shape, m: int) -> tuple:
    """Decode's recurrent state, per (sequence, head): S = sum phi(k) v^T (m x dh), z = sum phi(k)
    (m) and the keys' stabiliser c (1)."""
    BH, dh = s.batch * s.heads, s.head_dim
    return g.cache("state_S", BH * m * dh), g.cache("state_z", BH * m), g.cache("state_c", BH)


def _performer_step(g, s: Shape, qf, kf, v, m: int, state: tuple) -> str:
    """Decode: S += phi(k) v^T (one addcmul of phi(k)^T, a view, and v), z += phi(k); out = phi(q) S /
    phi(q) z."""
    BH, dh = s.batch * s.heads, s.head_dim
    S, z, _ = state
    g.views("state_update.views", 1, "other")  # phi(k)^T
    S = g.elementwise("state_update", "addcmul", (S, kf, v), elems=BH * m * dh, part="other")
    g.views("ksum_add.views", 1, "other")
    z = g.elementwise("ksum_add", "add", (kf, z), elems=BH * m, part="other")
    num = _matmul(g, "numerator", qf, S, batch=BH, m=1, k=m, n=dh)
    den = _matmul(g, "denominator", qf, z, MATMUL_VIEWS + 1, batch=BH, m=1, k=m, n=1)  # z as a column
    return g.elementwise("normalise", "div", (num, den), elems=BH * dh)


VARIANTS = [
    Variant("linformer", "Linformer",
            "softmax(Q (E K)^T / sqrt(dh)) (F V) with E, F (k x T) projecting along the sequence",
            "Wang et al. 2020, Linformer (arXiv:2006.04768)", LinformerParams, build_linformer,
            causal=False, decode=False, cost="O(T k d) FLOPs: linear in T; no decode, no KV cache",
            notes=("E and F mix all positions, future tokens included; no decode path",)),
    Variant("nystrom", "Nystromformer",
            "softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V + DConv(V), landmarks = segment means",
            "Xiong et al. 2021, Nystromformer (arXiv:2102.03902)", NystromParams, build_nystrom,
            causal=False, decode=False,
            cost="O(T m d) FLOPs with m landmarks, plus an m x m pseudo-inverse per head; no decode",
            notes=("segment means mix future tokens; no decode path",)),
    Variant("performer", "Performer (FAVOR+)",
            "phi(Q) (phi(K)^T V) normalised, phi = positive random features; causal by chunked prefix sums",
            "Choromanski et al. 2021, Rethinking Attention with Performers (arXiv:2009.14794)",
            PerformerParams, build_performer, causal=None,
            cost="O(T m d) FLOPs with m features: linear in T; decode state m x (dh+1) per head, whatever T",
            notes=("decode keeps an m x (dh+1) state per head (and the keys' stabiliser) instead of a KV "
                   "cache (causal form only)",)),
]
