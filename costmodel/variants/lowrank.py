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
B*H*T*m*dh tensor). Decode carries that state: a constant-size cache.
"""

import math

from pydantic import Field

from ..shape import Shape
from .base import Params, Variant, VariantError, attention_core, new_graph, proj


def _qkv(g, s: Shape, x: str, rows: int):
    return tuple(proj(g, n, x, rows, s.d, s.d) for n in ("q_proj", "k_proj", "v_proj"))


# -- Linformer ---------------------------------------------------------------------------
class LinformerParams(Params):
    k: int = Field(256, ge=1, description="rows K and V are projected to along the sequence")

    def resolve(self, shape: Shape) -> "LinformerParams":
        if self.k > shape.T:
            raise VariantError(f"linformer.k={self.k} must be at most T={shape.T}")
        return self


def build_linformer(s: Shape, p: LinformerParams):
    g, x, rows = new_graph(s)
    T, B, d = s.T, s.batch, s.d
    q, k, v = _qkv(g, s, x, rows)
    kp = g.matmul("k_seq_proj", g.weight("E", p.k * T), k, batch=B, m=p.k, k=T, n=d, part="proj")
    vp = g.matmul("v_seq_proj", g.weight("F", p.k * T), v, batch=B, m=p.k, k=T, n=d, part="proj")
    o = attention_core(g, s, q, kp, vp, groups=B * s.heads, qk_dim=s.head_dim, v_dim=s.head_dim,
                       keys=p.k, fraction=1.0, fused=True, mask=False)
    g.output(proj(g, "o_proj", o, rows, d, d))
    return g


# -- Nystromformer -----------------------------------------------------------------------
class NystromParams(Params):
    landmarks: int = Field(64, ge=1, description="landmarks m (segment means of Q and K)")
    pinv_iters: int = Field(6, ge=0, description="Newton-Schulz iterations of the pseudo-inverse")
    conv_kernel: int = Field(33, ge=0, description="depthwise convolution on V along the sequence (0: none)")

    def resolve(self, shape: Shape) -> "NystromParams":
        if self.landmarks > shape.T:
            raise VariantError(f"nystrom.landmarks={self.landmarks} must be at most T={shape.T}")
        return self


def build_nystrom(s: Shape, p: NystromParams):
    g, x, rows = new_graph(s)
    T, B, H, dh, m = s.T, s.batch, s.heads, s.head_dim, p.landmarks
    BH = B * H
    q, k, v = _qkv(g, s, x, rows)
    q = g.elementwise("q_scale", "scale", (q,), elems=rows * s.d)  # Q / dh^(1/4)
    k = g.elementwise("k_scale", "scale", (k,), elems=rows * s.d)  # K / dh^(1/4)
    ql = g.elementwise("q_landmarks", "mean", (q,), elems=rows * s.d, out_elems=BH * m * dh, part="proj")
    kl = g.elementwise("k_landmarks", "mean", (k,), elems=rows * s.d, out_elems=BH * m * dh, part="proj")
    k1 = g.matmul("kernel_1", q, kl, batch=BH, m=T, k=dh, n=m)
    k1 = g.elementwise("softmax_1", "softmax", (k1,), elems=BH * T * m)
    k2 = g.matmul("kernel_2", ql, kl, batch=BH, m=m, k=dh, n=m)
    k2 = g.elementwise("softmax_2", "softmax", (k2,), elems=BH * m * m)
    k3 = g.matmul("kernel_3", ql, k, batch=BH, m=m, k=dh, n=T)
    k3 = g.elementwise("softmax_3", "softmax", (k3,), elems=BH * m * T)
    z = _pinv(g, k2, BH, m, p.pinv_iters)
    kv = g.matmul("kernel_3_v", k3, v, batch=BH, m=m, k=T, n=dh)
    a = g.matmul("kernel_1_pinv", k1, z, batch=BH, m=T, k=m, n=m)
    o = g.matmul("nystrom_out", a, kv, batch=BH, m=T, k=m, n=dh)
    if p.conv_kernel:
        c = g.conv("v_conv", v, g.weight("W_conv", H * p.conv_kernel), macs=BH * T * dh * p.conv_kernel,
                   out_elems=BH * T * dh)
        o = g.elementwise("conv_add", "add", (o, c), elems=BH * T * dh)
    g.output(proj(g, "o_proj", o, rows, s.d, s.d))
    return g


def _pinv(g, a: str, BH: int, m: int, iters: int) -> str:
    """Moore-Penrose pseudo-inverse by the Newton-Schulz iteration of Nystromformer's code:
    Z0 = A^T / max column sum of A (A = softmax(...) is row-stochastic, so ||A||_inf = 1 and the
    code's iterative_inv computes column sums only); each iteration AZ = A Z,
    Z = 1/4 Z (13I - AZ (15I - AZ (7I - AZ))): 4 matmuls of m x m x m and 3 updates of m x m."""
    mm = BH * m * m
    z = g.elementwise("pinv_norm", "max", (a,), elems=mm + BH * m, out_elems=BH)  # column sums, their max
    z = g.elementwise("pinv_init", "div", (a, z), elems=mm)  # A^T / max column sum
    for i in range(iters):
        az = g.matmul(f"pinv{i}_az", a, z, batch=BH, m=m, k=m, n=m)
        t = g.elementwise(f"pinv{i}_u1", "pinv_update", (az,), elems=mm)
        t = g.matmul(f"pinv{i}_mm1", az, t, batch=BH, m=m, k=m, n=m)
        t = g.elementwise(f"pinv{i}_u2", "pinv_update", (t,), elems=mm)
        t = g.matmul(f"pinv{i}_mm2", az, t, batch=BH, m=m, k=m, n=m)
        t = g.elementwise(f"pinv{i}_u3", "pinv_update", (t,), elems=mm)
        z = g.matmul(f"pinv{i}_z", z, t, batch=BH, m=m, k=m, n=m)
        z = g.elementwise(f"pinv{i}_scale", "scale", (z,), elems=mm)
    return z


# -- Performer ---------------------------------------------------------------------------
class PerformerParams(Params):
    features: int = Field(256, ge=1, description="random features m")
    chunk: int = Field(64, ge=1, description="causal form: tokens per chunk of the prefix sum")


def _features(g, s: Shape, t: str, w: str, rows_h: int, name: str, fn: str = "feature_map") -> str:
    """phi(t) for rows_h (token, head) rows: scale, project on the m random features, exp map.
    ``fn`` "feature_map_fixed": a decode key, whose stabiliser is the one the state was built with
    (a data-dependent max would change the scale of S and z), so no max is taken."""
    dh = s.head_dim
    m = g.tensors[w].elems // dh
    t = g.elementwise(f"{name}_scale", "scale", (t,), elems=rows_h * dh)
    sq = g.elementwise(f"{name}_sqnorm", "square_sum", (t,), elems=rows_h * dh, out_elems=rows_h, part="proj")
    pr = g.matmul(f"{name}_rf", t, w, m=rows_h, k=dh, n=m, part="proj")
    return g.elementwise(f"{name}_phi", fn, (pr, sq), elems=rows_h * m, part="proj")


def build_performer(s: Shape, p: PerformerParams):
    g, x, rows = new_graph(s)
    B, H, dh, m = s.batch, s.heads, s.head_dim, p.features
    BH, R = B * H, rows * H  # R: (token, head) rows
    q, k, v = _qkv(g, s, x, rows)
    w = g.weight("W_rf", m * dh, trainable=False)
    qf = _features(g, s, q, w, R, "q")
    kf = _features(g, s, k, w, R, "k", "feature_map_fixed" if s.phase == "decode" else "feature_map")
    if s.phase == "decode":
        o = _performer_step(g, s, qf, kf, v, m)
    elif s.causal:
        o = _performer_causal(g, s, qf, kf, v, m, p.chunk)
    else:
        T = s.T
        kv = g.matmul("kv", kf, v, batch=BH, m=m, k=T, n=dh)
        ks = g.elementwise("k_sum", "mean", (kf,), elems=BH * T * m, out_elems=BH * m)
        num = g.matmul("numerator", qf, kv, batch=BH, m=T, k=m, n=dh)
        den = g.matmul("denominator", qf, ks, batch=BH, m=T, k=m, n=1)
        o = g.elementwise("normalise", "div", (num, den), elems=BH * T * dh)
    g.output(proj(g, "o_proj", o, rows, s.d, s.d))
    return g


def _performer_causal(g, s: Shape, qf, kf, v, m: int, chunk: int) -> str:
    """Chunked prefix sums. With C = min(chunk, T) and n = ceil(T/C) chunks (T padded to n*C):
    intra-chunk masked phi(Q)phi(K)^T (C x m x C) and its product with V (C x C x dh);
    chunk states phi(K)^T V (m x C x dh), exclusive prefix sum over chunks, phi(Q) S (C x m x dh);
    the normaliser the same way with a column of ones in place of V."""
    C = min(chunk, s.T)
    n = math.ceil(s.T / C)
    BHn, dh = s.batch * s.heads * n, s.head_dim
    a = g.matmul("intra_scores", qf, kf, batch=BHn, m=C, k=m, n=C)
    a = g.elementwise("intra_mask", "mask", (a,), elems=BHn * C * C)
    num_in = g.matmul("intra_av", a, v, batch=BHn, m=C, k=C, n=dh)
    den_in = g.elementwise("intra_rowsum", "mean", (a,), elems=BHn * C * C, out_elems=BHn * C)
    st = g.matmul("chunk_state", kf, v, batch=BHn, m=m, k=C, n=dh)
    zs = g.elementwise("chunk_ksum", "mean", (kf,), elems=BHn * C * m, out_elems=BHn * m)
    st = g.elementwise("state_prefix", "cumsum", (st,), elems=BHn * m * dh)
    zs = g.elementwise("ksum_prefix", "cumsum", (zs,), elems=BHn * m)
    num_out = g.matmul("inter_num", qf, st, batch=BHn, m=C, k=m, n=dh)
    den_out = g.matmul("inter_den", qf, zs, batch=BHn, m=C, k=m, n=1)
    num = g.elementwise("num_add", "add", (num_in, num_out), elems=BHn * C * dh)
    den = g.elementwise("den_add", "add", (den_in, den_out), elems=BHn * C)
    return g.elementwise("normalise", "div", (num, den), elems=BHn * C * dh)


def _performer_step(g, s: Shape, qf, kf, v, m: int) -> str:
    """Decode: S += phi(k) v^T, z += phi(k); out = phi(q) S / phi(q) z. State: m*(dh+1) per head."""
    BH, dh = s.batch * s.heads, s.head_dim
    g.kv_cache(fixed=s.heads * m * (dh + 1))
    state = g.cache("state", BH * m * (dh + 1))
    upd = g.matmul("state_outer", kf, v, batch=BH, m=m, k=1, n=dh)
    st = g.elementwise("state_add", "add", (upd, state), elems=BH * m * (dh + 1), part="other")
    num = g.matmul("numerator", qf, st, batch=BH, m=1, k=m, n=dh)
    den = g.matmul("denominator", qf, st, batch=BH, m=1, k=m, n=1)
    return g.elementwise("normalise", "div", (num, den), elems=BH * dh)


VARIANTS = [
    Variant("linformer", "Linformer",
            "softmax(Q (E K)^T / sqrt(dh)) (F V) with E, F (k x T) projecting along the sequence",
            "Wang et al. 2020, Linformer (arXiv:2006.04768)", LinformerParams, build_linformer,
            causal=False, decode=False,
            notes=("E and F mix all positions, future tokens included; no decode path",)),
    Variant("nystrom", "Nystromformer",
            "softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V + DConv(V), landmarks = segment means",
            "Xiong et al. 2021, Nystromformer (arXiv:2102.03902)", NystromParams, build_nystrom,
            causal=False, decode=False,
            notes=("segment means mix future tokens; no decode path",)),
    Variant("performer", "Performer (FAVOR+)",
            "phi(Q) (phi(K)^T V) normalised, phi = positive random features; causal by chunked prefix sums",
            "Choromanski et al. 2021, Rethinking Attention with Performers (arXiv:2009.14794)",
            PerformerParams, build_performer, causal=None,
            notes=("decode keeps an m x (dh+1) state per head instead of a KV cache (causal form only)",)),
]
