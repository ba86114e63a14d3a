"""DeepSeek's latent attention: MLA (DeepSeek-V2) and DSA (DeepSeek-V3.2-Exp), as in
``costmodel/variants/latent.py``.

Projections as DeepSeek-V2 writes them (arXiv:2405.04434, section 2.1): the query latent c_Q = x W_DQ,
q_nope = c_Q W_UQ and the RoPE query q_rope = RoPE(c_Q W_QR); the latent c_KV = x W_DKV and the one
shared RoPE key k_rope = RoPE(x W_KR). Keeping W_QR and W_KR as projections of their own (rather
than columns of W_UQ and W_DKV to be sliced out) lets every later op read whole tensors.

SDPA with unequal head dims: the scores use dh + d_r channels, the values dh (prefill) or d_c
(absorbed decode). torch's CPU build has one fused kernel (flash), which needs q, k and v of one
head dim; on CUDA flash refuses them too (efficient and cuDNN accept them), so torch would fall
back to its math path (a T x T score tensor, a causal mask built each call). The module instead
gives V the q/k head dim, so that one fused SDPA runs with any backend:
- prefill pads each head's v with d_r zeros (``F.pad``, as vLLM's MLA prefill does for
  FlashAttention) and drops the d_r extra output channels (a copy, as the heads are merged);
- absorbed attention (MLA decode, all of DSA) passes the latents [c_KV | k_rope] as both K and V
  (one tensor, read once: FlashMLA's layout) and drops the d_r RoPE channels of the output in
  the W_UV product.
The AV product then runs over dh + d_r (prefill) or d_c + d_r (absorbed) channels. On CUDA,
flash takes head dims up to 256: past that (the absorbed form at DeepSeek's sizes, 512 + 64)
torch's auto choice is the efficient kernel; ``profiler.device.sdpa_backends_used`` records which.

MLA decode is the absorbed form: q_latent = q_nope W_UK (per head, dh -> d_c), then one SDPA,
MQA over the latent cache [c_KV | k_rope] (d_c + d_r per token, no factor 2) with the H heads as
query rows, then W_UV per head (d_c -> dh). The attention scale stays 1/sqrt(dh + d_r) in both
forms, so decode equals the prefill's last token.

DSA: the lightning indexer I(t, s) = sum_j w(t, j) ReLU(q(t, j) . k(s)) scores every key, the
causal mask hides future keys, top-k keeps k of them, and MLA in its absorbed (MQA) form attends
over the kept latents. The queries go in blocks of ``chunk`` rows (``query_blocks``), so the
per-head scores exist for one block at a time (B x chunk*index_heads x T, not B x T*index_heads x T):
each block scores, masks, keeps its top k, gathers its kept latents and attends over them. A query
t < k has only t+1 valid keys, and all of them are kept: for those first k queries the module
runs causal MLA over the first k latents in one SDPA (counted as k^2/2 pairs, the fused-causal
convention); the later queries attend densely over their k gathered latents. Together that is
the cost model's T*k - k^2/2 pairs, the number of (query, key) pairs a sparse kernel that skips
invalid indices computes. Each step is a method, so that its temporaries are freed as it returns,
when the cost model's graph frees them.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...costmodel.variants.latent import block_rows, query_blocks
from .base import AttentionModule, Rope, linear, uniform_, write_slot


class MLA(AttentionModule):
    variant = "mla"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        d, H, dh = self.d, self.H, self.dh
        self.dc, self.dq, self.dr = params.kv_lora_rank, params.q_lora_rank, params.rope_dim
        if self.dq:
            self.q_down = linear(d, self.dq)
            self.q_up = linear(self.dq, H * dh)
        else:
            self.q_proj = linear(d, H * dh)
        self.kv_down = linear(d, self.dc)
        if self.dr:
            self.q_rope = linear(self.dq or d, H * self.dr)
            self.k_rope = linear(d, self.dr)
            self.rope = Rope(self.dr, self.T)
        self.W_k_up = nn.Parameter(uniform_(torch.empty(H, dh, self.dc), self.dc))
        self.W_v_up = nn.Parameter(uniform_(torch.empty(H, dh, self.dc), self.dc))
        self.o_proj = linear(H * dh, d)
        self.scale = 1.0 / math.sqrt(dh + self.dr)

    # -- shared pieces ----------------------------------------------------------------------
    def _queries(self, x, start: int):
        """q_nope (B, L, H*dh), the rotated RoPE queries (B, L, H, d_r) or None, the query latent."""
        c_q = self.q_down(x) if self.dq else x
        q_nope = (self.q_up if self.dq else self.q_proj)(c_q)
        if not self.dr:
            return q_nope, None, c_q
        B, L = x.shape[:2]
        return q_nope, self.rope(self.q_rope(c_q).view(B, L, self.H, self.dr), start, heads=True), c_q

    def _latent(self, x, start: int):
        """c_KV (B, L, d_c) and the rotated shared RoPE key (B, L, d_r) or None."""
        return self.kv_down(x), self.rope(self.k_rope(x), start, heads=False) if self.dr else None

    def _absorb_q(self, q_nope, q_rope):
        """(B, L, H*dh), (B, L, H, d_r) -> (B, L, H, d_c + d_r): q_nope @ W_UK per head, then q_rope."""
        B, L = q_nope.shape[:2]
        q_lat = torch.matmul(q_nope.view(B * L, self.H, self.dh).transpose(0, 1), self.W_k_up)  # (H, B*L, d_c)
        q_lat = q_lat.transpose(0, 1)
        if self.dr:
            q_lat = torch.cat([q_lat, q_rope.view(B * L, self.H, self.dr)], -1)
        return q_lat.view(B, L, self.H, self.dc + self.dr)

    def _absorb_out(self, o_lat):
        """(B, L, H, d_c + d_r) -> (B, L, H*dh): the first d_c channels through W_UV per head (the
        d_r others are the RoPE keys' share of the output, dropped)."""
        B, L = o_lat.shape[:2]
        o = o_lat[..., :self.dc].reshape(B * L, self.H, self.dc).transpose(0, 1)
        o = torch.matmul(o, self.W_v_up.transpose(1, 2))  # (H, B*L, dh)
        return o.transpose(0, 1).reshape(B, L, self.H * self.dh)

    def _mqa(self, q_lat, latents):
        """Absorbed attention, MQA over latents: q_lat (N, L, H, C) against latents (N, L, S, C),
        each of the N*L queries its own S latents, as one SDPA with the H heads as query rows and
        one K/V head (FlashMLA's layout); the latents are both keys and values, over all
        C = d_c + d_r channels. Returns (N, L, H, C)."""
        N, L = q_lat.shape[:2]
        C = self.dc + self.dr
        kv = latents.reshape(N * L, 1, -1, C)
        o = self.sdpa(q_lat.reshape(N * L, 1, self.H, C), kv, kv, scale=self.scale)
        return o.view(N, L, self.H, C)

    # -- phases -----------------------------------------------------------------------------
    def prefill(self, x):
        B, T, H, dh, dr = x.shape[0], x.shape[1], self.H, self.dh, self.dr
        q_nope, q_rope, _ = self._queries(x, 0)
        c_kv, k_rope = self._latent(x, 0)
        q = q_nope.view(B, T, H, dh)
        k = F.linear(c_kv, self.W_k_up.view(H * dh, self.dc)).view(B, T, H, dh)
        v = F.linear(c_kv, self.W_v_up.view(H * dh, self.dc)).view(B, T, H, dh)
        if dr:
            q = torch.cat([q, q_rope], -1)
            k = torch.cat([k, k_rope[:, :, None].expand(B, T, H, dr)], -1)
            v = F.pad(v, (0, dr))  # the q/k head dim, so that a fused kernel takes it
        o = self.sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=self.causal,
                      scale=self.scale).transpose(1, 2)
        if dr:
            o = o[..., :dh]
        return self.o_proj(o.reshape(B, T, H * dh))

    def decode(self, x, cache):
        """x (B, 1, d); cache (B, T, d_c + d_r), slot T-1 takes the new token."""
        q_nope, q_rope, _ = self._queries(x, self.T - 1)
        self._write_latent(cache, x)
        return self.o_proj(self._absorb_out(self._mqa(self._absorb_q(q_nope, q_rope), cache[:, None])))

    def _write_latent(self, cache, x) -> None:
        """Slot T-1 of the latent cache: [c_KV | k_rope] of the new token, two copies."""
        c_kv, k_rope = self._latent(x, self.T - 1)
        write_slot(cache[..., :self.dc], 1, self.T - 1, c_kv)
        if self.dr:
            write_slot(cache[..., self.dc:], 1, self.T - 1, k_rope)

    def cache_from(self, x_past):
        B, P = x_past.shape[:2]
        c_kv, k_rope = self._latent(x_past, 0)
        cache = c_kv.new_zeros(B, self.T, self.dc + self.dr)
        cache[:, :P, :self.dc] = c_kv
        if self.dr:
            cache[:, :P, self.dc:] = k_rope
        return (cache,)


class DSA(MLA):
    variant = "dsa"
    notes = ("queries in blocks of `chunk`: each block scores, selects, gathers its kept latents and "
             "attends; queries t < k keep every previous key: one causal SDPA over the first k latents",)

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend)
        d = self.d
        self.Hi, self.di = params.index_heads, params.index_dim
        self.keys = min(params.k, self.T)
        self.chunk = block_rows(shape, params)
        self.index_q = linear(self.dq or d, self.Hi * self.di)
        self.index_k = linear(d, self.di)
        self.index_w = linear(d, self.Hi)
        if self.phase != "decode" and self.causal:
            self.causal_mask()
        # the first row of each sequence among the B*T rows of the latents, for index_select
        self.register_buffer("row_offsets", torch.arange(0, shape.batch * self.T, self.T).view(-1, 1),
                             persistent=False)

    def _index(self, inputs: list):
        """Indexer scores (B, L, S) of L queries: ``inputs`` = [c_q (B, L, d_c'), wi (B, L, Hi),
        ki (B, S, d_i)], the queries' latents and weights and the keys. Per-head ReLU scores
        (B, L*Hi, S), summed with the weights. The list is emptied and each tensor let go after
        its last read, so that one the caller no longer holds is freed there."""
        c_q, wi, ki = inputs
        inputs.clear()
        B, L = c_q.shape[:2]
        S = ki.shape[1]
        qi = self.index_q(c_q).view(B, L * self.Hi, self.di)
        del c_q
        s = torch.matmul(qi, ki.transpose(1, 2))
        del qi, ki
        s = torch.relu(s)
        return torch.matmul(wi.reshape(B * L, 1, self.Hi), s.view(B * L, self.Hi, S)).view(B, L, S)

    def _sparse(self, q_lat, ckv, idx):
        """Absorbed MLA of q_lat (B, L, H, C) over the latents ckv (B, T, C) that idx (B, L, k) keeps:
        copy those rows (index_select of the B*T rows, each sequence's indices offset to its own rows;
        straight from ckv, so that the backward adds into a tensor of ckv's size), then one SDPA per
        query over its own k latents. (torch.gather by an index expanded over the C channels moves the
        same bytes, 6-18x slower on a CPU.)"""
        B, L = q_lat.shape[:2]
        T, C = ckv.shape[1:]
        rows = idx.reshape(B, L * self.keys)
        if B > 1:
            rows = rows + self.row_offsets
        kept = ckv.reshape(B * T, C).index_select(0, rows.reshape(-1)).view(B, L, self.keys, C)
        return self._mqa(q_lat, kept)  # (B, L, H, C)

    def _prepare(self, x) -> dict:
        """What the blocks read: absorbed queries, latents, query latents, indexer keys and weights."""
        q_nope, q_rope, c_q = self._queries(x, 0)
        c_kv, k_rope = self._latent(x, 0)
        ckv = torch.cat([c_kv, k_rope], -1) if self.dr else c_kv
        ki, wi = self.index_k(x), self.index_w(x)
        return {"q_lat": self._absorb_q(q_nope, q_rope), "ckv": ckv, "c_q": c_q, "ki": ki, "wi": wi}

    def _block(self, start, stop, early, st: dict, last: bool):
        """Queries start..stop-1: indexer scores, mask, top-k; the part of the output of those
        from ``early`` on (None if none is). The last block takes the indexer's inputs out of
        ``st``, so that each is freed after its last read, as the cost model's graph has it."""
        take = st.pop if last else st.get
        si = self._index([take("c_q")[:, start:stop], take("wi")[:, start:stop], take("ki")])
        if self.causal:
            si = si.masked_fill(self.causal_mask()[start:stop], float("-inf"))
        idx = torch.topk(si, self.keys, dim=-1).indices
        del si
        first = max(start, early)
        if first >= stop:
            self.keep(idx)  # every key is kept: the indices are computed (as DSA does), not needed
            return None
        return self._sparse(st["q_lat"][:, first:stop], st["ckv"], idx[:, first - start:])

    def _attend(self, st: dict):
        """The latent output (B, T, H, C): the first k queries at once, then block by block;
        ``st`` (from ``_prepare``) is emptied on the way."""
        parts, early = [], 0
        if self.causal:
            e = early = self.keys
            q_lat, kv = st["q_lat"][:, :e].transpose(1, 2), st["ckv"][:, :e].unsqueeze(1)
            parts.append(self.sdpa(q_lat, kv, kv, is_causal=True, scale=self.scale,
                                   enable_gqa=self.H > 1).transpose(1, 2))
            del q_lat, kv
        blocks = query_blocks(self.T, self.chunk)
        for n, (start, stop) in enumerate(blocks):
            part = self._block(start, stop, early, st, n == len(blocks) - 1)
            if part is not None:
                parts.append(part)
        st.clear()
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]

    def prefill(self, x):
        return self.o_proj(self._absorb_out(self._attend(self._prepare(x))))

    def decode(self, x, cache, index_cache):
        """x (B, 1, d); cache (B, T, d_c + d_r) and index_cache (B, T, d_i), slot T-1 for x."""
        q_nope, q_rope, c_q = self._queries(x, self.T - 1)
        self._write_latent(cache, x)
        write_slot(index_cache, 1, self.T - 1, self.index_k(x))
        si = self._index([c_q, self.index_w(x), index_cache])
        idx = torch.topk(si, self.keys, dim=-1).indices
        return self.o_proj(self._absorb_out(self._sparse(self._absorb_q(q_nope, q_rope), cache, idx)))

    def cache_from(self, x_past):
        (cache,) = super().cache_from(x_past)
        B, P = x_past.shape[:2]
        icache = cache.new_zeros(B, self.T, self.di)
        icache[:, :P] = self.index_k(x_past)
        return cache, icache


MODULES = {m.variant: m for m in (MLA, DSA)}
