"""The token-mixing core of every attention variant as a pure function of one layer's Q, K, V.

``attncost fidelity`` compares these with exact softmax attention on the same inputs. The
profiler modules (``profiler/modules``) start from the layer input x and hide the attention
matrix, so each approximation is restated here, core only (no Q/K/V/O projections), with the same
formula as ``costmodel/variants`` and ``profiler/modules`` (cited per function), returning the
output and, where the variant has one, its T x T attention matrix.

Tensors: q, k, v of shape (B, H, T, dh), one row per (sequence, head, token); outputs (B, H, T, dh);
attention matrices (B, H, T, T), row i = the weights query i gives every key (for Linformer and
Nystromformer the effective matrix the factorised product equals). ``params`` is the variant's
resolved parameter model from ``costmodel.variants``.

What is deliberately left out, and why (each is stated again where it applies):
- Nystromformer's depthwise convolution on V is a learned residual beside the approximation; with
  untrained weights it only adds noise, so it is left at zero here (``conv_kernel`` is ignored).
- Linformer's E and F are trained in a real model. Untrained, the choice is ours: they pool K and
  V over T/k contiguous segments, one of the "general projections" of Linformer section 4
  (pooling with kernel = stride = T/k), which becomes exact at k = T.
- gqa / mqa on the same Q/K/V: K and V heads are mean-pooled within each group, the conversion of
  an MHA checkpoint in Ainslie et al. 2023 (section 2.1) before any uptraining.
- dsa: the top-k keys by the exact scores (an oracle indexer: what a perfectly trained lightning
  indexer would select), softmax over those.
- topk, causal: where a query sees fewer than k keys, the values of the extra (future) picks are
  zeroed rather than gathered.

tests/test_fidelity.py checks the definitions against the profiler modules: on a module's own
Q/K/V (and its E, F, random features or latents), these cores followed by the module's output
projection reproduce the module's output (nystrom with conv_kernel=0, performer causal and not,
linformer, sliding_window, msla).
"""

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Approx:
    """One variant's result on (q, k, v): out (B, H, T, dh) and attn (B, H, T, T) or None."""

    out: torch.Tensor
    attn: Optional[torch.Tensor] = None


# -- exact attention and its masks ------------------------------------------------------------
def hidden_mask(T: int, *, causal: bool, window: Optional[int] = None, device=None) -> Optional[torch.Tensor]:
    """(T, T) boolean, True where query i must not see key j: the future (causal) and keys at
    least ``window`` behind (sliding window: i - window < j <= i, as ``ExactAttention.band_mask``).
    None when every key is visible. Cached: do not modify the result in place."""
    if not causal and window is None:
        return None
    return _mask(T, window, str(torch.device(device if device is not None else "cpu")))


@functools.lru_cache(maxsize=8)
def _mask(T: int, window: Optional[int], device: str) -> torch.Tensor:
    i = torch.arange(T, device=device)
    hide = i[None, :] > i[:, None]  # a window looks back only: causal too
    if window is not None:
        hide = hide | (i[None, :] <= i[:, None] - window)
    return hide


def scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q k^T / sqrt(dh)."""
    return torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)


def exact(q, k, v, *, causal: bool, window: Optional[int] = None, rows: Optional[torch.Tensor] = None) -> Approx:
    """softmax(q k^T / sqrt(dh) + mask) v, the math path of ``mha`` (Vaswani et al. 2017).
    ``rows``: the query positions q holds, when it holds a subset of the T = k.shape[-2] queries."""
    s = scores(q, k)
    hide = hidden_mask(k.shape[-2], causal=causal, window=window, device=q.device)
    if hide is not None and rows is not None:
        hide = hide[rows]
    if hide is not None:
        s = s.masked_fill(hide, float("-inf"))
    a = torch.softmax(s, dim=-1)
    return Approx(torch.matmul(a, v), a)


def flash(q, k, v, params=None, *, causal: bool, **_) -> Approx:
    """The same attention through ``F.scaled_dot_product_attention`` (the ``flash`` variant); the
    fused kernel never forms the attention matrix."""
    return Approx(F.scaled_dot_product_attention(q, k, v, is_causal=causal))


def sliding_window(q, k, v, params, *, causal: bool = True, **_) -> Approx:
    """Causal local attention: query i sees keys i - window < j <= i (costmodel/variants/exact.py,
    Longformer / Mistral). Always causal: the window looks back only."""
    return exact(q, k, v, causal=True, window=params.window)


def grouped(q, k, v, kv_heads: int, *, causal: bool) -> Approx:
    """gqa / mqa on an MHA layer's Q/K/V: the K and V heads of each group of heads/kv_heads
    consecutive heads are mean-pooled (Ainslie et al. 2023, GQA, section 2.1: "mean pooling all
    the heads" of a group to convert a multi-head checkpoint), then query head h attends with K/V
    head h // (heads/kv_heads), as SDPA's ``enable_gqa`` pairs them. kv_heads = heads is mha."""
    B, H, T, dh = q.shape
    g = H // kv_heads
    kp = k.reshape(B, kv_heads, g, T, dh).mean(2).repeat_interleave(g, dim=1)
    vp = v.reshape(B, kv_heads, g, T, dh).mean(2).repeat_interleave(g, dim=1)
    return exact(q, kp, vp, causal=causal)


# -- Linformer ----------------------------------------------------------------------------------
def segments(T: int, m: int) -> list:
    """Sizes of m contiguous segments of T rows, as ``profiler.modules.base.segment_means`` cuts
    them: the first T % m segments hold one row more."""
    s, r = divmod(T, m)
    return [s + 1] * r + [s] * (m - r)


def pooling_matrix(T: int, m: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(m, T): row l averages segment l of the T positions (``segments``)."""
    P = torch.zeros(m, T, device=device, dtype=dtype)
    start = 0
    for l, n in enumerate(segments(T, m)):
        P[l, start:start + n] = 1.0 / n
        start += n
    return P


def segment_means(t: torch.Tensor, m: int) -> torch.Tensor:
    """Means of m contiguous segments of the rows of t (..., T, c)."""
    return torch.matmul(pooling_matrix(t.shape[-2], m, device=t.device, dtype=t.dtype), t)


def linformer(q, k, v, params, *, projections: Optional[tuple] = None, **_) -> Approx:
    """softmax(q (E k)^T / sqrt(dh)) (F v) with E, F (k x T) projecting along the sequence
    (Wang et al. 2020, eq. 7; costmodel/variants/lowrank.py), shared by all heads as in
    ``profiler.modules.lowrank.Linformer``. The attention matrix is the T x T product
    softmax(q (E k)^T / sqrt(dh)) F. Not causal: E and F mix all positions.

    E and F are trained in a real model; untrained, they are taken here as E = F = segment means
    (Linformer section 4, "general projections": pooling with kernel and stride T/k), the choice
    that is exact at k = T. (Random projections, Linformer's Theorem 2, are far worse untrained:
    measured cosine 0.06-0.28 at T = 256 for k = 16-256.) ``projections``: other (E, F), each
    (k, T), e.g. a trained model's."""
    T, m = q.shape[-2], params.k
    if projections is None:
        E = Fp = pooling_matrix(T, m, device=q.device, dtype=q.dtype)
    else:
        E, Fp = projections
    kp, vp = torch.matmul(E, k), torch.matmul(Fp, v)  # (B, H, k, dh)
    p = torch.softmax(scores(q, kp), dim=-1)  # (B, H, T, k)
    return Approx(torch.matmul(p, vp), torch.matmul(p, Fp))


# -- Nystromformer ------------------------------------------------------------------------------
def newton_schulz_pinv(a: torch.Tensor, iters: int) -> torch.Tensor:
    """Nystromformer's iterative pseudo-inverse (the authors' ``iterative_inv``, as
    ``profiler.modules.lowrank.Nystrom.pinv``): Z0 = A^T / max column sum of A, then ``iters``
    times Z = 1/4 Z (13I - AZ (15I - AZ (7I - AZ)))."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    z = a.transpose(-1, -2) / a.sum(-2).amax(-1)[..., None, None]
    for _ in range(iters):
        az = torch.matmul(a, z)
        z = 0.25 * torch.matmul(z, 13 * eye - torch.matmul(az, 15 * eye - torch.matmul(az, 7 * eye - az)))
    return z


def nystrom(q, k, v, params, **_) -> Approx:
    """softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V with Q, K scaled by dh^-1/4 and
    landmarks Q~, K~ = segment means (Xiong et al. 2021, eq. 14; the authors' code;
    costmodel/variants/lowrank.py). The attention matrix is the product of the three kernels with
    the pseudo-inverse (T x T). The depthwise convolution on V (``conv_kernel``) is a learned
    residual outside this approximation and is left out. Not causal: landmarks mix all positions."""
    m, s = params.landmarks, q.shape[-1] ** -0.25
    q, k = q * s, k * s
    ql, kl = segment_means(q, m), segment_means(k, m)
    k1 = torch.softmax(torch.matmul(q, kl.transpose(-1, -2)), dim=-1)  # (B, H, T, m)
    k2 = torch.softmax(torch.matmul(ql, kl.transpose(-1, -2)), dim=-1)  # (B, H, m, m)
    k3 = torch.softmax(torch.matmul(ql, k.transpose(-1, -2)), dim=-1)  # (B, H, m, T)
    a = torch.matmul(k1, newton_schulz_pinv(k2, params.pinv_iters))
    return Approx(torch.matmul(a, torch.matmul(k3, v)), torch.matmul(a, k3))


# -- Performer ----------------------------------------------------------------------------------
def performer_weights(dh: int, m: int, seed: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(dh, m) iid N(0, 1) projections, as ``profiler.modules.lowrank.Performer.W_rf`` (iid, not
    the orthogonal features of the paper's best variant), drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(dh, m, generator=gen).to(device=device, dtype=dtype)


def performer(q, k, v, params, *, causal: bool, seed: int = 0, W: Optional[torch.Tensor] = None, **_) -> Approx:
    """FAVOR+ (Choromanski et al. 2021, Lemma 1, positive random features):
    phi(x) = exp(w.x - |x|^2/2) / sqrt(m) on x scaled by dh^-1/4, so that
    E[phi(q).phi(k)] = exp(q.k / sqrt(dh)); attention = phi(Q) phi(K)^T (lower triangle if causal),
    each row normalised by its sum. The stabilisers of ``profiler.modules.lowrank.Performer``
    (queries: their row max; keys: one max per (batch, head)) cancel in the normalisation and are
    kept for the same floating-point range. The module computes the same rows by phi(Q)(phi(K)^T V)
    (non-causal) or chunked prefix sums (causal); the dense form here gives the same numbers up to
    rounding, and the attention matrix too. ``W``: the (dh, features) projections (default: drawn
    from ``seed``)."""
    dh, m = q.shape[-1], params.features
    if W is None:
        W = performer_weights(dh, m, seed, device=q.device, dtype=q.dtype)
    xs = dh ** -0.25

    def pre(t):
        t = t * xs
        return torch.matmul(t, W) - 0.5 * (t * t).sum(-1, keepdim=True)

    pq, pk = pre(q), pre(k)
    qf = torch.exp(pq - pq.amax(-1, keepdim=True)) * m ** -0.5
    kf = torch.exp(pk - pk.amax(dim=(-2, -1), keepdim=True)) * m ** -0.5
    a = torch.matmul(qf, kf.transpose(-1, -2))
    hide = hidden_mask(q.shape[-2], causal=causal, device=q.device)
    if hide is not None:
        a = a.masked_fill(hide, 0.0)
    a = a / a.sum(-1, keepdim=True)
    return Approx(torch.matmul(a, v), a)


# -- DSA with an oracle indexer -----------------------------------------------------------------
def topk_oracle(q, k, v, params, *, causal: bool = True, **_) -> Approx:
    """DeepSeek sparse attention's selection with a perfect indexer: each query keeps the k keys of
    highest exact score (among those it may see) and softmaxes over them (DeepSeek-V3.2-Exp; the
    lightning indexer is trained to match this). An upper bound on what the trained indexer
    reaches; the MLA around it is left out (exact attention on these Q/K/V). Causal by nature."""
    T = q.shape[-2]
    s = scores(q, k)
    hide = hidden_mask(T, causal=causal, device=q.device)
    if hide is not None:
        s = s.masked_fill(hide, float("-inf"))
    keep = min(params.k, T)
    if keep < T:
        thresh = torch.topk(s, keep, dim=-1).values[..., -1:]
        s = s.masked_fill(s < thresh, float("-inf"))
    a = torch.softmax(s, dim=-1)
    return Approx(torch.matmul(a, v), a)


# -- MSLA ---------------------------------------------------------------------------------------
def msla_latents(H: int, dh: int, L: int, seed: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, L, dh): the L latent keys of ``profiler.modules.learned.MSLA`` (randn(L, d) / sqrt(d),
    split into heads), untrained, drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    lat = torch.randn(L, H * dh, generator=gen) / math.sqrt(H * dh)
    return lat.view(L, H, dh).permute(1, 0, 2).to(device=device, dtype=dtype)


def msla(q, k, v, params, *, seed: int = 0, latents: Optional[torch.Tensor] = None, head0: int = 0, **_) -> Approx:
    """The seed's MSLA (seeds.md #4, gpt2_with_MSLA.py; costmodel/variants/learned.py): per head,
    s = q latents^T / sqrt(dh), keep the top k, softmax, mix the selected latents, add v. No token
    sees another token, so its token-to-token attention matrix is the identity (each token takes
    its own v with weight 1; the latents are not tokens). k is unused, as in the seed's code."""
    B, H, T, dh = q.shape
    if latents is None:
        latents = msla_latents(head0 + H, dh, params.latents, seed, device=q.device, dtype=q.dtype)
    lat = latents[head0:head0 + H]  # (H, L, dh)
    keep = min(params.k, lat.shape[1])
    s = torch.matmul(q, lat.transpose(-1, -2)) / math.sqrt(dh)  # (B, H, T, L)
    top, idx = torch.topk(s, keep, dim=-1)
    w = torch.softmax(top, dim=-1)
    sel = lat[torch.arange(H, device=q.device)[None, :, None, None], idx]  # (B, H, T, keep, dh)
    out = (w[..., None] * sel).sum(-2) + v
    eye = torch.eye(T, device=q.device, dtype=q.dtype).expand(B, H, T, T)
    return Approx(out, eye)


# -- learned variants: the MLPs distilled by profiler/fidelity.py --------------------------------
def _uniform(shape, fan_in: int, gen: torch.Generator) -> torch.Tensor:
    """nn.Linear's default range U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(1, fan_in))
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def _row_mask(T: int, causal: bool, rows: Optional[torch.Tensor], device) -> Optional[torch.Tensor]:
    """The hidden-key mask of the query positions ``rows`` (all T when None)."""
    hide = hidden_mask(T, causal=causal, device=device)
    if hide is None or rows is None:
        return hide
    return hide[rows]


class TopkMLPs(nn.Module):
    """seeds.md #2 (after Bonsignori 2024), as ``profiler.modules.learned.TopK``: a KeySelector MLP
    (dh -> hidden -> T logits, ReLU, bias-free, shared by the heads) on each query picks its top-k
    keys; a HeadApproximator MLP (k*dh -> hidden -> dh) maps the gathered values (in the
    selector's rank order) to the head output. No softmax, no K. Causal: masked logits; where a
    query has fewer than k visible keys, the extra picks are future keys, whose values are zeroed
    here (the module gathers them as they are).

    ``rows``: the query positions q holds (B, H, R, dh), for training on a subset of the T queries;
    None: all T, in order."""

    def __init__(self, dh: int, T: int, k: int, hidden: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.T, self.keys = T, min(k, T)
        self.sel_w1 = nn.Parameter(_uniform((dh, hidden), dh, gen))
        self.sel_w2 = nn.Parameter(_uniform((hidden, T), hidden, gen))
        self.app_w1 = nn.Parameter(_uniform((self.keys * dh, hidden), self.keys * dh, gen))
        self.app_w2 = nn.Parameter(_uniform((hidden, dh), hidden, gen))

    def logits(self, q: torch.Tensor, causal: bool, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, H, R, T) selector logits, -inf on hidden keys."""
        lg = torch.matmul(torch.relu(torch.matmul(q, self.sel_w1)), self.sel_w2)
        hide = _row_mask(self.T, causal, rows, q.device)
        return lg if hide is None else lg.masked_fill(hide, float("-inf"))

    def forward(self, q, v, *, causal: bool, rows: Optional[torch.Tensor] = None):
        """(out, logits, idx): out (B, H, R, dh); idx (B, H, R, k) the selected keys."""
        B, H, T, dh = v.shape
        R = q.shape[-2]
        lg = self.logits(q, causal, rows)
        top, idx = torch.topk(lg.detach(), self.keys, dim=-1)
        base = (torch.arange(B * H, device=v.device) * T).view(B, H, 1, 1)
        g = v.reshape(B * H * T, dh)[(idx + base).reshape(-1)].view(B, H, R, self.keys, dh)
        g = g * torch.isfinite(top)[..., None].to(g.dtype)  # no future values
        out = torch.matmul(torch.relu(torch.matmul(g.flatten(-2), self.app_w1)), self.app_w2)
        return out, lg, idx


def topk_learned(q, k, v, params, *, causal: bool, model: TopkMLPs, **_) -> Approx:
    """The topk variant with trained MLPs. Its attention matrix is the selector's softmax over its
    k chosen keys (zeros elsewhere): what the selector was distilled to reproduce; the
    HeadApproximator does not use these weights, so the output may differ more or less."""
    with torch.no_grad():
        out, lg, idx = model(q, v, causal=causal)
        w = torch.softmax(torch.gather(lg, -1, idx), dim=-1)
        w = torch.nan_to_num(w, nan=0.0)
        a = torch.zeros_like(lg).scatter_(-1, idx, w)
    return Approx(out, a)


class SynthesizerMLP(nn.Module):
    """Dense Synthesizer (Tay et al. 2021; seeds.md #1; ``profiler.modules.learned.MLPAttention``):
    per head h, logits = ReLU(x W1_h) W2_h (W2_h: hidden x T), causal mask, softmax over the T
    positions, then weights @ V; bias-free. The module's MLP reads the layer input x; at the core
    level the input of head h is its query q_h = x W_q,h, a linear map of x, so this MLP is one the
    module can represent (first layer W_q,h W1). ``rows`` as for ``TopkMLPs``; ``head0`` the first
    head q holds (for chunks of heads)."""

    def __init__(self, H: int, dh: int, T: int, hidden: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.T = T
        self.w1 = nn.Parameter(_uniform((H, dh, hidden), dh, gen))
        self.w2 = nn.Parameter(_uniform((H, hidden, T), hidden, gen))

    def logits(self, q: torch.Tensor, causal: bool, rows: Optional[torch.Tensor] = None, head0: int = 0) -> torch.Tensor:
        H = q.shape[1]
        lg = torch.matmul(torch.relu(torch.matmul(q, self.w1[head0:head0 + H])), self.w2[head0:head0 + H])
        hide = _row_mask(self.T, causal, rows, q.device)
        return lg if hide is None else lg.masked_fill(hide, float("-inf"))

    def forward(self, q, v, *, causal: bool, rows: Optional[torch.Tensor] = None, head0: int = 0):
        a = torch.softmax(self.logits(q, causal, rows, head0), dim=-1)
        return torch.matmul(a, v), a


def mlp_attention_learned(q, k, v, params, *, causal: bool, model: SynthesizerMLP, head0: int = 0, **_) -> Approx:
    """The mlp_attention variant with a trained synthesizer: its weights are its attention matrix."""
    with torch.no_grad():
        out, a = model(q, v, causal=causal, head0=head0)
    return Approx(out, a)


# name -> function of (q, k, v, params, *, causal, seed, ...) for the variants computed directly
FUNCTIONS = {
    "flash": flash,
    "sliding_window": sliding_window,
    "linformer": linformer,
    "nystrom": nystrom,
    "performer": performer,
    "dsa": topk_oracle,
    "msla": msla,
    "topk": topk_learned,
    "mlp_attention": mlp_attention_learned,
}
