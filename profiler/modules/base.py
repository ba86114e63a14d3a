"""What every profiler module shares: the phase dispatch, SDPA with a chosen backend, RoPE, and
small layout helpers.

Conventions kept by every module, so that fvcore and FlopCounterMode count what the cost model's
graph lists, op for op:
- bias-free projections (``F.linear`` / ``nn.Linear(bias=False)``), products by ``torch.matmul``
  (never ``einsum``: fvcore rounds it);
- a scale is one multiply (or divide) per element, a mask one ``masked_fill``, reductions are
  ``sum`` / ``amax`` over the elements the graph names;
- scalar constants (``7I``, ``1/sqrt(dh)``, RoPE tables) are precomputed buffers, so no op on
  them runs in the forward;
- layout changes are views, ``cat``, ``pad``, ``gather``: data movement, 0 FLOPs on both sides;
  layouts are chosen so that a reshape aliases where it can (no needless ``clone``), and the copies
  PyTorch must still make (a bmm's head-major output merged back, ``torch.matmul`` folding head views
  of a projection: ``costmodel.variants.base.heads_copied``) are ops of the graph too, as are the
  host-only view ops (``costmodel.opkinds``, ``tests/test_op_match.py``).

Decode: the module keeps no state of its own. Its inputs are the new token and the cache (K/V
tensors of T token slots, a latent cache, or a recurrent state), built by ``cache_from`` from the
T-1 previous tokens with the module's own weights; ``decode`` writes the new token's entries into
slot T-1 in place, as a static KV cache does, and attends over all T slots.
"""

import math
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...costmodel.shape import Shape
from ...costmodel.variants import Params, VariantError
from ..device import BACKEND_CHOICES as BACKENDS
from ..device import sdpa_context, torch_dtype


def uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """nn.Linear's default range, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for hand-made weights."""
    bound = 1.0 / math.sqrt(max(1, fan_in))
    with torch.no_grad():
        return t.uniform_(-bound, bound)


def linear(d_in: int, d_out: int) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=False)


class AttentionModule(nn.Module):
    """One attention layer of a variant at one shape; ``forward`` runs the shape's phase.

    ``forward(x)`` in prefill and train (x: B x T x d), ``forward(x, *cache)`` in decode (x: B x 1 x d).
    The output is always (B, tokens, d). ``variant``, ``shape``, ``params`` and ``backend`` (the SDPA
    backend this module asks for: auto | flash | cudnn | efficient | math) say what it is;
    ``notes`` says where it departs from the obvious implementation.
    """

    variant = ""
    notes: tuple = ()

    def __init__(self, shape: Shape, params: Params, backend: str = "auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise VariantError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.shape, self.params, self.backend = shape, params, backend
        self.phase = shape.phase
        self.B, self.T, self.d, self.H, self.dh = shape.batch, shape.T, shape.d, shape.heads, shape.head_dim
        self.causal = shape.causal

    # -- phases -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *cache: torch.Tensor) -> torch.Tensor:
        self._kept = []
        out = self.decode(x, *cache) if self.phase == "decode" else self.prefill(x)
        kept, self._kept = self._kept, []
        if kept:  # only while torch.jit traces the module (fvcore): see ``keep``
            return (out, *kept)
        return out

    def keep(self, t: torch.Tensor) -> None:
        """Mark a tensor that is computed and never read (msla's k_proj; DSA's top-k indices
        when every key is kept). Eager PyTorch runs the ops that make it, but torch.jit's trace,
        which fvcore counts, drops dead code: while tracing, the module returns such tensors as
        extra outputs so that the trace keeps what eager runs. Eager calls return only the output."""
        if torch.jit.is_tracing():
            self._kept.append(t)

    def prefill(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, x: torch.Tensor, *cache: torch.Tensor) -> torch.Tensor:
        raise VariantError(f"{self.variant} has no decode path: it is not causal")

    def cache_from(self, x_past: torch.Tensor) -> tuple:
        """The decode inputs after x_past (B x (T-1) x d): what ``decode`` reads besides x."""
        return ()

    # -- helpers ----------------------------------------------------------------------------
    def sdpa(self, q, k, v, *, is_causal=False, attn_mask=None, scale=None, enable_gqa=False):
        """F.scaled_dot_product_attention under this module's backend choice."""
        kw = {"enable_gqa": True} if enable_gqa else {}
        with sdpa_context(self.backend):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                                  scale=scale, **kw)

    def split_heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """(B, L, n*dh) -> (B, n, L, dh), a view."""
        B, L = t.shape[:2]
        return t.view(B, L, n, t.shape[-1] // n).transpose(1, 2)

    @staticmethod
    def merge_heads(t: torch.Tensor) -> torch.Tensor:
        """(B, n, L, dh) -> (B, L, n*dh)."""
        B, n, L, dh = t.shape
        return t.transpose(1, 2).reshape(B, L, n * dh)

    def mask(self, name: str, make) -> torch.Tensor:
        """A mask buffer (boolean, or additive in the weights' dtype), made on first use: prefill
        and train modules make theirs in __init__; a decode module (whose prefill only the tests
        call) never holds a T x T mask."""
        t = self._buffers.get(name)
        if t is None:
            ref = next(self.parameters(), None)
            t = make()
            if ref is not None:
                t = t.to(ref.device, ref.dtype) if t.is_floating_point() else t.to(ref.device)
            self.register_buffer(name, t, persistent=False)
        return t

    def causal_mask(self) -> torch.Tensor:
        """(T, T), True above the diagonal: the keys a query must not see."""
        return self.mask("mask_causal", lambda: torch.ones(self.T, self.T, dtype=torch.bool).triu(1))


def write_slot(cache: torch.Tensor, dim: int, slot: int, new: torch.Tensor) -> None:
    """Decode: copy the new token's entries into ``slot`` of the cache, in place (0 FLOPs)."""
    cache.narrow(dim, slot, 1).copy_(new)


class Rope(nn.Module):
    """Rotary embedding of the last ``dim`` channels: x*cos + rotate(x)*sin, 3 FLOPs per element
    (the cost model's "rope"). rotate() is a permutation (pairs channel i with i + dim//2), the
    sign is folded into the precomputed sin table, an odd last channel is left unrotated
    (cos 1, sin 0), so the forward is exactly two multiplies and one add per element."""

    def __init__(self, dim: int, positions: int, base: float = 10000.0):
        super().__init__()
        self.dim, self.half = dim, dim // 2
        h = self.half
        f64 = dict(dtype=torch.float64, device="cpu")  # tables in double precision (MPS has no float64)
        inv = 1.0 / (base ** (torch.arange(h, **f64) * 2 / max(1, dim)))
        ang = torch.arange(positions, **f64)[:, None] * inv[None, :]
        cos, sin = ang.cos(), ang.sin()
        one = torch.ones(positions, dim - 2 * h, **f64)
        zero = torch.zeros_like(one)
        at = dict(device=torch.get_default_device(), dtype=torch.get_default_dtype())  # where modules are built
        self.register_buffer("cos", torch.cat([cos, cos, one], -1).to(**at), persistent=False)
        self.register_buffer("sin", torch.cat([-sin, sin, zero], -1).to(**at), persistent=False)

    def forward(self, x: torch.Tensor, start: int, heads: bool) -> torch.Tensor:
        """x: (B, L, [heads,] dim) at positions start .. start+L-1."""
        L = x.shape[1]
        cos, sin = self.cos[start:start + L], self.sin[start:start + L]
        if heads:
            cos, sin = cos[:, None, :], sin[:, None, :]
        h = self.half
        odd = [x[..., 2 * h:]] if self.dim > 2 * h else []  # the unrotated channel
        rot = torch.cat([x[..., h:2 * h], x[..., :h]] + odd, -1)
        return x * cos + rot * sin


def segment_means(t: torch.Tensor, m: int, T: int) -> torch.Tensor:
    """Means of m contiguous segments of the T rows of t (B, H, T, c): one add per input element.
    T not divisible by m: the first T % m segments get one token more (two reductions)."""
    B, H, _, c = (int(n) for n in t.shape)
    s, r = divmod(T, m)
    if r == 0:
        return t.reshape(B, H, m, s, c).mean(-2)
    big = t[:, :, : r * (s + 1)].reshape(B, H, r, s + 1, c).mean(-2)
    small = t[:, :, r * (s + 1):].reshape(B, H, m - r, s, c).mean(-2)
    return torch.cat([big, small], -2)


def resolve_dtype(dtype, shape: Shape) -> torch.dtype:
    """A torch dtype from bf16 / fp16 / fp32, torch's own names or a torch dtype (None: the shape's)."""
    return torch_dtype(shape.dtype if dtype is None else dtype)

