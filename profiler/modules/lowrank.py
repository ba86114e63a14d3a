"""Approximations without the T x T score matrix: Linformer, Nystromformer, Performer (FAVOR+),
op for op as ``costmodel/variants/lowrank.py`` lists them."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import AttentionModule, linear, segment_means, uniform_


class _QKV(AttentionModule):
    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        d = self.d
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (linear(d, d) for _ in range(4))


class Linformer(_QKV):
    """softmax(Q (E K)^T / sqrt(dh)) (F V): E, F (k x T) project K and V along the sequence
    (``torch.matmul`` of (k, T) by (B, T, d)), then one non-causal SDPA over k keys. Not causal."""

    variant = "linformer"
    notes = ("not causal: E and F mix all positions",)

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        self.E = nn.Parameter(uniform_(torch.empty(params.k, self.T), self.T))
        self.F = nn.Parameter(uniform_(torch.empty(params.k, self.T), self.T))

    def prefill(self, x):
        q = self.split_heads(self.q_proj(x), self.H)
        kp = torch.matmul(self.E, self.k_proj(x))  # (B, k, d)
        vp = torch.matmul(self.F, self.v_proj(x))
        o = self.sdpa(q, self.split_heads(kp, self.H), self.split_heads(vp, self.H))
        return self.o_proj(self.merge_heads(o))


class Nystrom(_QKV):
    """Nystromformer as in the authors' code: Q and K scaled by dh^-1/4, landmarks = segment
    means, softmax(Q K~^T) pinv(softmax(Q~ K~^T)) (softmax(Q~ K^T) V) + depthwise conv on V.

    pinv: Z0 = A^T / max column sum of A (A is row-stochastic, so ||A||_inf = 1 and the column
    norm is the whole coefficient: the code's "exact" init), then ``pinv_iters`` times
    Z = 1/4 Z (13I - AZ (15I - AZ (7I - AZ))) with 7I, 15I, 13I precomputed. The convolution
    (kernel (conv_kernel, 1), one filter per head, no bias) pads so the output keeps T rows.
    Not causal.
    """

    variant = "nystrom"
    notes = ("not causal: segment means mix future tokens",)

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        m = params.landmarks
        self.m, self.iters, self.ks = m, params.pinv_iters, params.conv_kernel
        self.qk_scale = self.dh ** -0.25
        eye = torch.eye(m)
        for c in (7, 15, 13):
            self.register_buffer(f"eye{c}", c * eye, persistent=False)
        if self.ks:
            self.W_conv = nn.Parameter(uniform_(torch.empty(self.H, 1, self.ks, 1), self.ks))

    def pinv(self, a):
        z = a.sum(-2).amax(-1, keepdim=True)  # column sums, their max: (B, H, 1)
        z = a.transpose(-1, -2) / z[..., None]
        for _ in range(self.iters):
            az = torch.matmul(a, z)
            t = self.eye7 - az
            t = torch.matmul(az, t)
            t = self.eye15 - t
            t = torch.matmul(az, t)
            t = self.eye13 - t
            z = torch.matmul(z, t)
            z = z * 0.25
        return z

    def prefill(self, x):
        H = self.H
        q = self.split_heads(self.q_proj(x), H) * self.qk_scale
        k = self.split_heads(self.k_proj(x), H) * self.qk_scale
        v = self.split_heads(self.v_proj(x), H)
        ql, kl = segment_means(q, self.m, self.T), segment_means(k, self.m, self.T)
        k1 = torch.softmax(torch.matmul(q, kl.transpose(-1, -2)), dim=-1)  # (B, H, T, m)
        k2 = torch.softmax(torch.matmul(ql, kl.transpose(-1, -2)), dim=-1)  # (B, H, m, m)
        k3 = torch.softmax(torch.matmul(ql, k.transpose(-1, -2)), dim=-1)  # (B, H, m, T)
        z = self.pinv(k2)
        kv = torch.matmul(k3, v)
        a = torch.matmul(k1, z)
        o = torch.matmul(a, kv)
        if self.ks:
            vp = F.pad(v, (0, 0, (self.ks - 1) // 2, self.ks // 2))
            o = o + F.conv2d(vp, self.W_conv, groups=H)
        return self.o_proj(self.merge_heads(o))


class Performer(_QKV):
    """FAVOR+ (positive random features): phi(x) = exp(w.x - |x|^2/2 - stabiliser) / sqrt(m) on
    x scaled by dh^-1/4, w ~ N(0, I) (a fixed buffer; iid rather than orthogonal features).

    Stabilisers (they cancel between numerator and denominator): per query row, its max over the
    m features; for keys one constant per (batch, head), the max over all keys and features
    (Google's and lucidrains' choice). Each is 5 FLOPs per feature: subtract |x|^2/2 (one
    ``sub`` with alpha), max, subtract, exp, scale.

    Causal prefill: chunked prefix sums exactly as ``_performer_causal`` lists them (a masked
    C x C product inside each chunk, exclusive prefix sums of the chunk states phi(K)^T V and
    phi(K)^T 1 across chunks: cumsum less the chunk's own state); T is padded to a multiple of C
    (queries with 1, keys and values with 0; else V, a head view, is copied once into (B, H, T, dh),
    which both products with it read) and never a B*H*T*m*dh tensor is formed. Non-causal:
    phi(Q) (phi(K)^T V) / phi(Q) phi(K)^T 1.

    Decode: inputs (x, S, z, c) with the state S = sum phi(k) v^T (B, H, m, dh),
    z = sum phi(k) (B, H, m) and the keys' stabiliser c (B, H, 1, 1) the state was built with; the
    new key uses c (a state cannot change its stabiliser without rescaling), so its feature map
    is 4 FLOPs per feature, not 5. The step returns the output; S + phi(k) v^T and z + phi(k) are
    the next state.
    """

    variant = "performer"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        self.m, self.chunk = params.features, params.chunk
        self.register_buffer("W_rf", torch.randn(self.dh, self.m), persistent=False)
        self.x_scale = self.dh ** -0.25
        self.ratio = self.m ** -0.5
        self.C = min(self.chunk, self.T)
        self.n = math.ceil(self.T / self.C)
        self.register_buffer("chunk_mask", torch.ones(self.C, self.C, dtype=torch.bool).triu(1), persistent=False)

    def _pre(self, t):
        """w.x - |x|^2/2 for t (B, H, L, dh): scale, square-sum, project, subtract."""
        t = t * self.x_scale
        sq = (t * t).sum(-1, keepdim=True)
        pr = torch.matmul(t, self.W_rf)
        return torch.sub(pr, sq, alpha=0.5)

    def phi_query(self, t):
        pr = self._pre(t)
        return torch.exp(pr - pr.amax(-1, keepdim=True)) * self.ratio

    def phi_key(self, t, c=None):
        """Key features and the stabiliser used (the max over all keys and features, or c)."""
        pr = self._pre(t)
        if c is None:
            c = pr.amax(dim=(-2, -1), keepdim=True)
        return torch.exp(pr - c) * self.ratio, c

    def _qkv(self, x):
        return (self.split_heads(p(x), self.H) for p in (self.q_proj, self.k_proj, self.v_proj))

    def prefill(self, x):
        q, k, v = self._qkv(x)
        qf, (kf, _) = self.phi_query(q), self.phi_key(k)
        if self.causal:
            o = self._causal(qf, kf, v)
        else:
            kv = torch.matmul(kf.transpose(-1, -2), v)  # (B, H, m, dh)
            ks = kf.sum(-2)  # (B, H, m)
            num = torch.matmul(qf, kv)
            den = torch.matmul(qf, ks[..., None])
            o = num / den
        return self.o_proj(self.merge_heads(o))

    def _causal(self, qf, kf, v):
        B, H, T, m = qf.shape
        C, n, dh = self.C, self.n, self.dh
        pad = n * C - T
        if pad:
            qf = F.pad(qf, (0, 0, 0, pad), value=1.0)  # padded queries: a positive denominator
            kf, v = F.pad(kf, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
        else:  # v is a head view of its projection: one copy into (B, H, T, dh), read by two products
            v = v.contiguous()
        qf, kf, v = qf.view(B, H, n, C, m), kf.view(B, H, n, C, m), v.view(B, H, n, C, dh)
        a = torch.matmul(qf, kf.transpose(-1, -2))  # (B, H, n, C, C)
        a = a.masked_fill(self.chunk_mask, 0.0)
        num_in = torch.matmul(a, v)
        den_in = a.sum(-1, keepdim=True)  # (B, H, n, C, 1), as den_out: no select, no unsqueeze
        st = torch.matmul(kf.transpose(-1, -2), v)  # (B, H, n, m, dh)
        zs = kf.sum(-2)  # (B, H, n, m)
        # exclusive prefix over chunks: the inclusive one less each chunk's own term
        st = torch.cumsum(st, 2) - st
        zs = torch.cumsum(zs, 2) - zs
        num_out = torch.matmul(qf, st)
        den_out = torch.matmul(qf, zs[..., None])
        num = num_in + num_out
        den = den_in + den_out
        o = (num / den).reshape(B, H, n * C, dh)
        return o[:, :, :T] if pad else o

    def decode(self, x, S, z, c):
        # one token: (B, 1, H*dh) is (B, H, 1, dh) in memory, a plain view whose feature-map matmul
        # torch.matmul folds into one (B*H, dh) @ (dh, m) product (a transposed head view would not fold)
        B = x.shape[0]
        q, k, v = (p(x).view(B, self.H, 1, self.dh) for p in (self.q_proj, self.k_proj, self.v_proj))
        qf = self.phi_query(q)
        kf, _ = self.phi_key(k, c)
        S = torch.addcmul(S, kf.transpose(-1, -2), v)  # S + phi(k)^T v (B, H, m, dh), one kernel
        z = z + kf[:, :, 0]
        num = torch.matmul(qf, S)
        den = torch.matmul(qf, z[..., None])
        return self.o_proj(self.merge_heads(num / den))

    def cache_from(self, x_past):
        B = x_past.shape[0]
        _, k, v = self._qkv(x_past)
        if k.shape[2] == 0:
            zeros = k.new_zeros
            return zeros(B, self.H, self.m, self.dh), zeros(B, self.H, self.m), zeros(B, self.H, 1, 1)
        kf, c = self.phi_key(k)
        return torch.matmul(kf.transpose(-1, -2), v), kf.sum(-2), c


MODULES = {m.variant: m for m in (Linformer, Nystrom, Performer)}
