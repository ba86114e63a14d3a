"""Exact softmax attention: mha (math path), flash, gqa, mqa (SDPA), sliding_window (SDPA + band).

The ops are those of ``costmodel/variants/exact.py``: Q/K/V projections, the attention core, the
output projection; decode appends the new K and V to a cache of T slots and attends over it.
"""

import math

import torch

from . import flex
from .base import AttentionModule, linear, write_slot


class ExactAttention(AttentionModule):
    """Q/K/V projections, attention, output projection, with ``kv_heads`` K/V heads.

    ``fused=False`` (mha) is the explicit math path: matmul, multiply by 1/sqrt(dh),
    ``masked_fill`` of the causal mask (prefill), softmax, matmul; each op writes its output.
    ``fused=True`` calls ``F.scaled_dot_product_attention`` (``is_causal`` in a causal prefill;
    ``enable_gqa`` when kv_heads < heads) under the module's ``backend``.

    ``window`` (sliding_window, gqa with a window): with ``kernel="flex"`` on CUDA the prefill runs
    ``flex_attention`` with a sliding-window block mask (``modules.flex``), which computes only the
    band. Elsewhere (``kernel="masked"``, or no flex_attention) no SDPA backend takes a window, so the
    prefill passes an additive band mask (0 where query i sees key j, i - window < j <= i; -inf elsewhere),
    made once in the module's dtype: SDPA reads it as it is (a boolean mask would be turned into
    this one by a ``where`` on every call). The counters count the band (the cost model's
    T*w - w^2/2 pairs); the kernels that accept a mask (CPU flash, efficient, cuDNN, math) still
    compute every T x T tile, so measured time is that of dense attention, plus the mask read.
    Decode keeps a rolling buffer of min(T, window) slots.
    """

    def __init__(self, shape, params, backend="auto", *, kv_heads: int, fused: bool, window=None):
        super().__init__(shape, params, backend)
        self.kv_heads, self.fused, self.window = kv_heads, fused, window
        d, dh = self.d, self.dh
        self.q_proj = linear(d, d)
        self.k_proj = linear(d, kv_heads * dh)
        self.v_proj = linear(d, kv_heads * dh)
        self.o_proj = linear(d, d)
        self.scale = 1.0 / math.sqrt(dh)
        self.slots = self.T if window is None else min(self.T, window)
        wants_flex = window is not None and self.phase != "decode" and getattr(params, "kernel", "flex") == "flex"
        self.flex = flex.window_attention(self.T, window) if wants_flex else None
        if self.phase != "decode":
            if window is not None:
                if self.flex is None:
                    self.band_mask()
            elif self.causal and not fused:
                self.causal_mask()

    def band_mask(self) -> torch.Tensor:
        """(T, T), additive: 0 where query i sees key j (i - window < j <= i), else -inf."""
        def make():
            i = torch.arange(self.T)
            sees = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - self.window)
            return torch.zeros(self.T, self.T).masked_fill(~sees, float("-inf"))
        return self.mask("mask_band", make)

    def _core(self, q, k, v, *, prefill: bool):
        if not self.fused:
            s = torch.matmul(q, k.transpose(-1, -2))
            s = s * self.scale
            if prefill and self.causal:
                s = s.masked_fill(self.causal_mask(), float("-inf"))
            p = torch.softmax(s, dim=-1)
            return torch.matmul(p, v)
        if prefill and self.flex is not None:
            return self.flex(q, k, v, scale=self.scale)
        mask = self.band_mask() if (prefill and self.window is not None) else None
        return self.sdpa(q, k, v, is_causal=prefill and self.causal and mask is None, attn_mask=mask,
                         enable_gqa=self.kv_heads < self.H)

    def prefill(self, x):
        q = self.split_heads(self.q_proj(x), self.H)
        k = self.split_heads(self.k_proj(x), self.kv_heads)
        v = self.split_heads(self.v_proj(x), self.kv_heads)
        o = self._core(q, k, v, prefill=True)
        return self.o_proj(self.merge_heads(o))

    def decode(self, x, k_cache, v_cache):
        """x (B, 1, d); k_cache, v_cache (B, kv_heads, slots, dh): the new token goes to slot
        (T-1) mod slots, then attends over every slot (mha: no mask, all slots are past keys)."""
        q = self.split_heads(self.q_proj(x), self.H)
        slot = (self.T - 1) % self.slots
        write_slot(k_cache, 2, slot, self.split_heads(self.k_proj(x), self.kv_heads))
        write_slot(v_cache, 2, slot, self.split_heads(self.v_proj(x), self.kv_heads))
        o = self._core(q, k_cache, v_cache, prefill=False)
        return self.o_proj(self.merge_heads(o))

    def cache_from(self, x_past):
        """K and V of the previous tokens in a cache of ``slots`` slots (position p in slot p mod
        slots; a window keeps the last window-1 of them); slot (T-1) mod slots is left for x."""
        B, P = x_past.shape[:2]
        k = self.split_heads(self.k_proj(x_past), self.kv_heads)
        v = self.split_heads(self.v_proj(x_past), self.kv_heads)
        shape = (B, self.kv_heads, self.slots, self.dh)
        kc, vc = k.new_zeros(shape), v.new_zeros(shape)
        first = max(0, P - (self.slots - 1))
        pos = torch.arange(first, P, device=x_past.device)
        kc.index_copy_(2, pos % self.slots, k[:, :, first:])
        vc.index_copy_(2, pos % self.slots, v[:, :, first:])
        return kc, vc


class MHA(ExactAttention):
    variant = "mha"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend, kv_heads=shape.heads, fused=False)


class Flash(ExactAttention):
    variant = "flash"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend, kv_heads=shape.heads, fused=True)


class GQA(ExactAttention):
    variant = "gqa"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend, kv_heads=params.kv_heads, fused=True, window=params.window)


class MQA(ExactAttention):
    variant = "mqa"

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend, kv_heads=1, fused=True)


class SlidingWindow(ExactAttention):
    variant = "sliding_window"
    notes = ("prefill: SDPA with an additive band mask (no backend takes a window); counted "
             "as the band, computed by the kernel as dense tiles",)

    def __init__(self, shape, params, backend="auto"):
        super().__init__(shape, params, backend, kv_heads=shape.heads, fused=True, window=params.window)


MODULES = {m.variant: m for m in (MHA, Flash, GQA, MQA, SlidingWindow)}
