"""DeepSeek's latent attention: MLA (DeepSeek-V2) and DSA (DeepSeek-V3.2-Exp), as in
``costmodel/variants/latent.py``.

MLA prefill up-projects the latent per head (W_UK, W_UV) and runs one SDPA with qk head dim
dh + d_r and v head dim dh. The flash backend needs equal q/k/v head dims, so with rope_dim > 0
ask for auto, efficient, cudnn or math (torch's auto picks one that takes the shapes).

MLA decode is the absorbed form: q_latent = q_nope W_UK (per head, dh -> d_c), then one SDPA,
MQA over the latent cache [c_KV | k_rope] (d_c + d_r per token, no factor 2) with the H heads as
query rows: scores over d_c + d_r channels, values c_KV (d_c), then W_UV per head (d_c -> dh).
The attention scale stays 1/sqrt(dh + d_r) in both forms, so decode equals the prefill's last
token. The flash backend rejects the unequal score and value dims here too.

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
        qdim = H * (dh + self.dr)
        if self.dq:
            self.q_down = linear(d, self.dq)
            self.q_up = linear(self.dq, qdim)
        else:
            self.q_proj = linear(d, qdim)
        self.kv_down = linear(d, self.dc + self.dr)
        self.W_k_up = nn.Parameter(uniform_(torch.empty(H, dh, self.dc), self.dc))
        self.W_v_up = nn.Parameter(uniform_(torch.empty(H, dh, self.dc), self.dc))
        self.o_proj = linear(H * dh, d)
        self.rope = Rope(self.dr, self.T) if self.dr else None
        self.scale = 1.0 / math.sqrt(dh + self.dr)

    # -- shared pieces ----------------------------------------------------------------------
    def _queries(self, x, start: int):
        """Per-head queries [q_nope | rope(q_rope)] (B, L, H, dh + d_r) and the query latent."""
        B, L = x.shape[:2]
        c_q = self.q_down(x) if self.dq else x
        q = (self.q_up if self.dq else self.q_proj)(c_q).view(B, L, self.H, self.dh + self.dr)
        if self.dr:
            q = torch.cat([q[..., :self.dh], self.rope(q[..., self.dh:], start, heads=True)], -1)
        return q, c_q

    def _latent(self, x, start: int):
        """[c_KV | rope(k_rope)] per token: (B, L, d_c + d_r), what the cache holds."""
        ckv = self.kv_down(x)
        if self.dr:
            ckv = torch.cat([ckv[..., :self.dc], self.rope(ckv[..., self.dc:], start, heads=False)], -1)
        return ckv

    def _absorb_q(self, q):
        """(B, L, H, dh + d_r) -> (B, L, H, d_c + d_r): q_nope @ W_UK per head, then q_rope."""
        B, L = q.shape[:2]
        q_nope = q[..., :self.dh].reshape(B * L, self.H, self.dh).transpose(0, 1)
        q_lat = torch.matmul(q_nope, self.W_k_up)  # (H, B*L, d_c)
        q_lat = q_lat.transpose(0, 1).reshape(B, L, self.H, self.dc)
        return torch.cat([q_lat, q[..., self.dh:]], -1)

    def _absorb_out(self, o_lat):
        """(B, L, H, d_c) -> (B, L, H*dh): the latent output through W_UV per head."""
        B, L = o_lat.shape[:2]
        o = torch.matmul(o_lat.reshape(B * L, self.H, self.dc).transpose(0, 1), self.W_v_up.transpose(1, 2))
        return o.transpose(0, 1).reshape(B, L, self.H * self.dh)

    # -- phases -----------------------------------------------------------------------------
    def prefill(self, x):
        B, T, H = x.shape[0], x.shape[1], self.H
        q, _ = self._queries(x, 0)
        ckv = self._latent(x, 0)
        c = ckv[..., :self.dc]
        k = F.linear(c, self.W_k_up.reshape(H * self.dh, self.dc)).view(B, T, H, self.dh)
        v = F.linear(c, self.W_v_up.reshape(H * self.dh, self.dc)).view(B, T, H, self.dh)
        if self.dr:
            k = torch.cat([k, ckv[:, :, None, self.dc:].expand(B, T, H, self.dr)], -1)
        o = self.sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=self.causal,
                      scale=self.scale)
        return self.o_proj(self.merge_heads(o))

    def decode(self, x, cache):
        """x (B, 1, d); cache (B, T, d_c + d_r), slot T-1 takes the new token."""
        q, _ = self._queries(x, self.T - 1)
        write_slot(cache, 1, self.T - 1, self._latent(x, self.T - 1))
        return self.o_proj(self._absorb_out(self._mqa(self._absorb_q(q), cache[:, None])))

    def _mqa(self, q_lat, latents):
        """Absorbed attention, MQA over latents: q_lat (N, L, H, C) against latents (N, L, S, C),
        each of the N*L queries its own S latents, as one SDPA with the H heads as query rows and
        one K/V head (FlashMLA's layout); scores over all C = d_c + d_r channels, values over the
        first d_c. Returns (N, L, H, d_c)."""
        N, L = q_lat.shape[:2]
        C = self.dc + self.dr
        o = self.sdpa(q_lat.reshape(N * L, 1, self.H, C), latents.reshape(N * L, 1, -1, C),
                      latents[..., :self.dc].reshape(N * L, 1, -1, self.dc), scale=self.scale)
        return o.view(N, L, self.H, self.dc)

    def cache_from(self, x_past):
        B, P = x_past.shape[:2]
        ckv = self._latent(x_past, 0)
        cache = ckv.new_zeros(B, self.T, self.dc + self.dr)
        cache[:, :P] = ckv
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
        gather them (data movement; straight from ckv, so that the backward scatters into a
        tensor of ckv's size), then one SDPA per query over its own k latents."""
        B, L = q_lat.shape[:2]
        n, C = L * self.keys, self.dc + self.dr
        kept = torch.gather(ckv, 1, idx.reshape(B, n, 1).expand(B, n, C)).view(B, L, self.keys, C)
        return self._mqa(q_lat, kept)  # (B, L, H, d_c)

    def _prepare(self, x) -> dict:
        """What the blocks read: absorbed queries, latents, query latents, indexer keys and weights."""
        q, c_q = self._queries(x, 0)
        ckv = self._latent(x, 0)
        ki, wi = self.index_k(x), self.index_w(x)
        return {"q_lat": self._absorb_q(q), "ckv": ckv, "c_q": c_q, "ki": ki, "wi": wi}

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
        """The latent output (B, T, H, d_c): the first k queries at once, then block by block;
        ``st`` (from ``_prepare``) is emptied on the way."""
        parts, early = [], 0
        if self.causal:
            e = early = self.keys
            q_lat, ckv = st["q_lat"], st["ckv"]
            parts.append(self.sdpa(q_lat[:, :e].transpose(1, 2), ckv[:, None, :e], ckv[:, None, :e, :self.dc],
                                   is_causal=True, scale=self.scale, enable_gqa=self.H > 1).transpose(1, 2))
            del q_lat, ckv
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
        q, c_q = self._queries(x, self.T - 1)
        write_slot(cache, 1, self.T - 1, self._latent(x, self.T - 1))
        write_slot(index_cache, 1, self.T - 1, self.index_k(x))
        si = self._index([c_q, self.index_w(x), index_cache])
        idx = torch.topk(si, self.keys, dim=-1).indices
        return self.o_proj(self._absorb_out(self._sparse(self._absorb_q(q), cache, idx)))

    def cache_from(self, x_past):
        (cache,) = super().cache_from(x_past)
        B, P = x_past.shape[:2]
        icache = cache.new_zeros(B, self.T, self.di)
        icache[:, :P] = self.index_k(x_past)
        return cache, icache


MODULES = {m.variant: m for m in (MLA, DSA)}
