"""Variants where a small network replaces (part of) the scores: topk (seeds.md #2),
mlp_attention (Dense Synthesizer, seeds.md #1), msla (seeds.md #4), as in
``costmodel/variants/learned.py``."""

import math

import torch
import torch.nn as nn

from .base import AttentionModule, linear, uniform_, write_slot


class TopK(AttentionModule):
    """KeySelector MLP (dh -> hidden -> T logits, weights shared by the heads) on each head's
    query; causal mask (prefill); top-k key indices; the values they pick (k*dh per query and
    head, indexed out of V's (B, T, H, dh) view) go through the HeadApproximator MLP
    (k*dh -> hidden -> dh). No softmax, no K. Every tensor keeps the token-major layout
    (B, L, H, ...), so the heads merge back by a view. The indices carry no gradient: training reaches only the approximator and V, as in the seed,
    whose selector is distilled separately. Decode caches V (B, T, d), slot T-1 taking the new
    token's."""

    variant = "topk"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        d, dh, T = self.d, self.dh, self.T
        self.keys = min(params.k, T)
        self.q_proj, self.v_proj, self.o_proj = linear(d, d), linear(d, d), linear(d, d)
        self.selector_hidden = linear(dh, params.hidden)
        self.selector_out = linear(params.hidden, T)  # W_selector_out: hidden x T
        self.approx_hidden = linear(self.keys * dh, params.hidden)
        self.approx_out = linear(params.hidden, dh)
        # v[b, idx[b, l, h, j], h] as rows of V's (B*T*H, dh) view: row (b*T + idx)*H + h, one
        # index_select reading only the rows picked (its gradient adds into a tensor of V's size, not
        # of V expanded over the queries); row_base holds b*T*H + h
        base = (torch.arange(self.B).view(self.B, 1, 1, 1) * (self.T * self.H)
                + torch.arange(self.H).view(1, 1, self.H, 1))
        self.register_buffer("row_base", base, persistent=False)
        if self.phase != "decode" and self.causal:
            self.head_mask()

    def head_mask(self) -> torch.Tensor:
        """(T, 1, T): the causal mask broadcast over the heads of (B, T, H, T) logits."""
        return self.mask("mask_causal_heads", lambda: torch.ones(self.T, self.T, dtype=torch.bool).triu(1)[:, None, :])

    def prefill(self, x):
        return self._attend(x, self.v_proj(x), self.causal)

    def decode(self, x, v_cache):
        """v_cache (B, T, d), slot T-1 takes the new token's V."""
        write_slot(v_cache, 1, self.T - 1, self.v_proj(x))
        return self._attend(x, v_cache, False)

    def cache_from(self, x_past):
        B, P = x_past.shape[:2]
        cache = x_past.new_zeros(B, self.T, self.d)
        cache[:, :P] = self.v_proj(x_past)
        return (cache,)

    def _attend(self, x, v_all, mask: bool):
        B, L = x.shape[:2]
        H, dh, T, k = self.H, self.dh, v_all.shape[1], self.keys
        q = self.q_proj(x).view(B, L, H, dh)
        h = torch.relu(self.selector_hidden(q))
        logits = self.selector_out(h)  # (B, L, H, T)
        if mask:
            logits = logits.masked_fill(self.head_mask(), float("-inf"))
        idx = torch.topk(logits, k, dim=-1).indices  # (B, L, H, k)
        rows = torch.add(self.row_base, idx, alpha=H)  # (aten::index by three broadcast indices: 3-10x slower on a CPU)
        g = v_all.reshape(B * T * H, dh).index_select(0, rows.reshape(-1)).view(B, L, H, k, dh)
        a = torch.relu(self.approx_hidden(g.view(B, L, H, k * dh)))
        o = self.approx_out(a)  # (B, L, H, dh)
        return self.o_proj(o.view(B, L, self.d))


class MLPAttention(AttentionModule):
    """Dense Synthesizer: per head, logits = ReLU(x W1_h) W2_h (W2_h: hidden x T, grows with T),
    causal mask (prefill), softmax over the T positions, then weights @ V. No Q, no K, no scale.
    Decode caches V head-major (B, H, T, dh), as exact attention caches K and V: the product with
    the weights reads it as it is, with no copy of the cache per step."""

    variant = "mlp_attention"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        d, H, T = self.d, self.H, self.T
        self.hidden = params.hidden
        self.v_proj, self.o_proj = linear(d, d), linear(d, d)
        self.mlp_hidden = linear(d, H * params.hidden)
        self.W_mlp_out = nn.Parameter(uniform_(torch.empty(H, params.hidden, T), params.hidden))
        if self.phase != "decode" and self.causal:
            self.causal_mask()

    def prefill(self, x):
        return self._attend(x, self.split_heads(self.v_proj(x), self.H), self.causal)

    def decode(self, x, v_cache):
        """v_cache (B, H, T, dh), slot T-1 takes the new token's V."""
        write_slot(v_cache, 2, self.T - 1, self.split_heads(self.v_proj(x), self.H))
        return self._attend(x, v_cache, False)

    def cache_from(self, x_past):
        B, P = x_past.shape[:2]
        cache = x_past.new_zeros(B, self.H, self.T, self.dh)
        cache[:, :, :P] = self.split_heads(self.v_proj(x_past), self.H)
        return (cache,)

    def _attend(self, x, v, mask: bool):
        """v: (B, H, T, dh)."""
        B, L = x.shape[:2]
        H, T = self.H, v.shape[2]
        h = torch.relu(self.mlp_hidden(x))  # (B, L, H*hidden)
        h = h.view(B * L, H, self.hidden).transpose(0, 1)  # (H, B*L, hidden)
        w = torch.matmul(h, self.W_mlp_out)  # (H, B*L, T)
        w = w.view(H, B, L, T).transpose(0, 1)  # (B, H, L, T)
        if mask:
            w = w.masked_fill(self.causal_mask(), float("-inf"))
        w = torch.softmax(w, dim=-1)
        o = torch.matmul(w, v)  # (B, H, L, dh)
        return self.o_proj(self.merge_heads(o))


class MSLA(AttentionModule):
    """The seed's MSLA: per head, scores of Q against L learnable latent keys (/ sqrt(dh)), the
    top k kept (topk's own values), softmax, the selected latents weighted and summed, plus V;
    out_proj, then GPT-2's c_proj (``c_proj``). k_proj is computed and never used, as in the
    seed's code. No token sees another token: decode is the same computation on one token,
    with no cache."""

    variant = "msla"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        d = self.d
        self.L, self.keys = params.latents, min(params.k, params.latents)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (linear(d, d) for _ in range(4))
        self.c_proj = linear(d, d) if params.c_proj else None
        self.latent_keys = nn.Parameter(torch.randn(self.L, d) / math.sqrt(d))
        # latent_keys[idx[h, r, j], h] as rows of its (L*H, dh) view: row idx*H + h, one index_select
        # reading only the latents picked
        self.register_buffer("head_index", torch.arange(self.H).view(self.H, 1, 1), persistent=False)
        self.sqrt_dh = math.sqrt(self.dh)

    def prefill(self, x):
        B, Lt = x.shape[:2]
        H, dh, R = self.H, self.dh, x.shape[0] * x.shape[1]
        q = self.q_proj(x).view(R, H, dh).transpose(0, 1)  # (H, rows, dh)
        self.keep(self.k_proj(x))  # computed, never used (the seed's code does the same)
        v = self.v_proj(x).view(R, H, dh)
        lat = self.latent_keys.view(self.L, H, dh).permute(1, 0, 2)  # (H, L, dh)
        s = torch.matmul(q, lat.transpose(1, 2)) / self.sqrt_dh  # (H, rows, L)
        top, idx = torch.topk(s, self.keys, dim=-1)  # (H, rows, k): the values and their indices
        w = torch.softmax(top, dim=-1)
        rows = torch.add(self.head_index, idx, alpha=H)  # (aten::index by two broadcast indices: 7x slower on a CPU)
        sel = self.latent_keys.view(self.L * H, dh).index_select(0, rows.reshape(-1)).view(H, R, self.keys, dh)
        mix = (w[..., None] * sel).sum(2)  # (H, rows, dh)
        o = (v + mix.transpose(0, 1)).reshape(B, Lt, self.d)  # row-major like v: a view
        o = self.out_proj(o)
        return self.c_proj(o) if self.c_proj is not None else o

    def decode(self, x):
        return self.prefill(x)


MODULES = {m.variant: m for m in (TopK, MLPAttention, MSLA)}
