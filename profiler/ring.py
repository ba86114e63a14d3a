"""Context-parallel attention on torch.distributed: ring attention and DeepSpeed-Ulysses, forward and backward.

Ring attention (Liu et al. 2023; Megatron-LM context parallel): each rank holds its queries and a
K/V block; in N steps the K/V blocks travel around the ring (async ``isend`` / ``irecv`` of the
next block posted before the current one is computed, so transfer and compute overlap), and each
block's output is merged into the running one by log-sum-exp. Causal: the sequence is cut into 2N
chunks and rank r holds chunks r and 2N-1-r (zig-zag), so every rank does the same work: step 0 is
causal over its own chunks; a block from an earlier rank is attended by all local queries over its
first chunk only; a block from a later rank by the second local chunk only (its first would see none).

Backward (as ring-flash-attention and Megatron-LM): the K/V blocks travel the ring again; each
block's gradient is the flash backward with the final output and log-sum-exp (Dao 2023, FlashAttention-2,
Algorithm 2), and the dK/dV of each block are accumulated in fp32 on a buffer that follows its
block from the next rank round to its owner: N-1 K/V blocks and N-1 dK/dV blocks sent per rank.

Grouped K/V heads (gqa, mqa) travel as they are; a rank repeats them to the query heads for its
kernel and folds their gradients back.

Ulysses (Jacobs et al. 2023): ``all_to_all_single`` turns Q, K, V from sequence shards of every head
into the whole sequence of H/N heads (K/V: of kv/N heads), attention runs locally (a sliding window
too), and one more all-to-all turns the output back; backward: the same all-to-alls reversed. Every
collective waits at most ``timeout`` (a rank that fails makes the others raise, not hang).

``Sent`` counts the bytes each rank sends to the others: what ``costmodel.parallel`` predicts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist


@dataclass
class Sent:
    """Bytes this rank sent to other ranks."""

    bytes: int = 0


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def wait(works: list, timeout: timedelta) -> None:
    """Wait for each async transfer, at most ``timeout`` each (TimeoutError, not a hang)."""
    for w in works:
        if not w.wait(timeout):
            raise TimeoutError(f"a transfer between ranks did not finish within {timeout.total_seconds():g} s")


def zigzag_index(T: int, n: int, rank: int) -> torch.Tensor:
    """Token positions rank ``rank`` of ``n`` holds under the causal zig-zag split of ``T`` tokens."""
    c = T // (2 * n)
    return torch.cat([torch.arange(rank * c, (rank + 1) * c), torch.arange((2 * n - 1 - rank) * c, (2 * n - rank) * c)])


@functools.lru_cache(maxsize=8)  # made once per shape, as the single-device module keeps its mask
def band_mask(T: int, window: int, device, dtype) -> torch.Tensor:
    """(T, T), additive: 0 where query i sees key j (i - window < j <= i), else -inf (as the profiled module)."""
    i = torch.arange(T, device=device)
    sees = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
    return torch.zeros(T, T, device=device, dtype=dtype).masked_fill(~sees, float("-inf"))


def local_attention(q, k, v, *, causal: bool, window: Optional[int] = None) -> torch.Tensor:
    """SDPA over the whole sequence of some heads: grouped K/V heads, a sliding window as a band mask."""
    mask = None if window is None else band_mask(q.shape[-2], window, q.device, q.dtype)
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal and mask is None, enable_gqa=k.shape[1] < q.shape[1])


# -- ring attention ---------------------------------------------------------------------------------

def expand(t: torch.Tensor, heads: int) -> torch.Tensor:
    """K or V of grouped heads repeated to ``heads`` query heads (dim 1)."""
    g = heads // t.shape[1]
    return t if g == 1 else t.repeat_interleave(g, dim=1)


def fold(grad: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """The gradient of ``expand``: sum each group of query heads back onto its K/V head."""
    B, H, rows, dh = grad.shape
    return grad if H == kv_heads else grad.view(B, kv_heads, H // kv_heads, rows, dh).sum(2)


def block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple:
    """(output, log-sum-exp per query row) of softmax(q k^T / sqrt(dh)) v, (B, H, rows, dh) tensors
    (K/V of grouped heads repeated): the CPU flash kernel; on CUDA the memory-efficient kernel."""
    k, v = expand(k, q.shape[1]), expand(v, q.shape[1])
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)[:2]
        return out, lse
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal)[:2]
    return out, lse[..., : q.shape[-2]]


def block_grads(dout, q, k, v, out, lse, causal: bool) -> tuple:
    """(dQ, dK, dV) of one block given the final ``out`` and ``lse`` of the rows (FlashAttention-2's
    backward: P = exp(S - lse), dV = P^T dO, dS = P (dO V^T - rowsum(dO out)), dQ = dS K s, dK = dS^T Q s);
    the CPU flash backward kernel, the formulas themselves elsewhere. dK/dV folded to K/V's heads."""
    kv = k.shape[1]
    k, v = expand(k, q.shape[1]), expand(v, q.shape[1])
    if q.device.type == "cpu":
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, k, v, out, lse, 0.0, causal)
    else:
        dq, dk, dv = formula_grads(dout, q, k, v, out, lse, causal)
    return dq, fold(dk, kv), fold(dv, kv)


def formula_grads(dout, q, k, v, out, lse, causal: bool) -> tuple:
    """``block_grads``' formulas themselves (K/V with the query heads), in fp32: where no kernel takes lse."""
    scale = q.shape[-1] ** -0.5
    s = (q @ k.transpose(-1, -2)).float() * scale
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    p = (s - lse.unsqueeze(-1)).exp()
    dp = (dout @ v.transpose(-1, -2)).float()
    ds = p * (dp - (dout.float() * out.float()).sum(-1, keepdim=True))
    dq, dk = (ds.to(q.dtype) @ k) * scale, (ds.transpose(-1, -2).to(q.dtype) @ q) * scale
    return dq, dk, p.transpose(-1, -2).to(q.dtype) @ dout


def merge(out: torch.Tensor, lse: torch.Tensor, blk: torch.Tensor, blk_lse: torch.Tensor) -> tuple:
    """Merge a block's (output, lse) into the running one: the ops ``costmodel.parallel.merge_s`` prices."""
    new = torch.logaddexp(lse, blk_lse)
    a = (lse - new).exp()
    b = (blk_lse - new).exp()
    return out * a.unsqueeze(-1) + blk * b.unsqueeze(-1), new


def pass_on(tensors: tuple, group, sent: Sent) -> tuple:
    """Post the async send of ``tensors`` to the next rank and the receive of the previous rank's:
    (works, buffers that will hold what arrives)."""
    n, rank = dist.get_world_size(group), dist.get_rank(group)
    works, incoming = [], tuple(torch.empty_like(t) for t in tensors)
    for t, buf in zip(tensors, incoming):
        works.append(dist.isend(t.contiguous(), (rank + 1) % n, group=group))
        works.append(dist.irecv(buf, (rank - 1) % n, group=group))
        sent.bytes += nbytes(t)
    return works, incoming


def ring_forward(q, k, v, *, causal: bool, timeout: timedelta, sent: Sent, group=None) -> tuple:
    """(output, log-sum-exp) of this rank's queries over every rank's K/V (local tensors (B, H, rows, dh),
    K/V with their own heads, in the zig-zag layout when ``causal``), the K/V blocks passed around the ring."""
    n, rank = dist.get_world_size(group), dist.get_rank(group)
    half = q.shape[-2] // 2
    out = lse = None
    kv = (k.contiguous(), v.contiguous())
    for step in range(n):
        works, incoming = pass_on(kv, group, sent) if step < n - 1 else ([], None)  # before computing this one
        src = (rank - step) % n
        if not causal:
            blk = block_attention(q, kv[0], kv[1], False)
            out, lse = blk if out is None else merge(out, lse, *blk)
        elif step == 0:
            out, lse = block_attention(q, kv[0], kv[1], True)
        elif src < rank:  # an earlier rank: every local query sees its first chunk
            out, lse = merge(out, lse, *block_attention(q, kv[0][..., :half, :], kv[1][..., :half, :], False))
        else:  # a later rank: only the second local chunk sees it, all of it
            o2, l2 = merge(out[..., half:, :], lse[..., half:], *block_attention(q[..., half:, :], *kv, False))
            out = torch.cat([out[..., :half, :], o2], dim=-2)
            lse = torch.cat([lse[..., :half], l2], dim=-1)
        wait(works, timeout)
        kv = incoming if incoming is not None else kv
    return out, lse


def ring_backward(dout, q, k, v, out, lse, *, causal: bool, timeout: timedelta, sent: Sent, group=None) -> tuple:
    """(dQ, dK, dV) of ``ring_forward``: the K/V blocks travel the ring again; the dK/dV of the block a
    rank holds at step s >= 1 goes, summed in fp32, to the next rank, which adds its own and passes it on,
    so that after step N-1 each owner receives its block's sum of the other ranks' gradients."""
    n, rank = dist.get_world_size(group), dist.get_rank(group)
    half = q.shape[-2] // 2
    dq = torch.zeros_like(q, dtype=torch.float32)
    own = None
    kv, acc, acc_works = (k.contiguous(), v.contiguous()), None, []
    for step in range(n):
        works, incoming = pass_on(kv, group, sent) if step < n - 1 else ([], None)
        src = (rank - step) % n
        dk = torch.zeros_like(kv[0], dtype=torch.float32)
        dv = torch.zeros_like(kv[1], dtype=torch.float32)
        if not causal or step == 0:
            gq, gk, gv = block_grads(dout, q, kv[0], kv[1], out, lse, causal)
            dq += gq
            dk += gk
            dv += gv
        elif src < rank:  # every local query over the block's first chunk
            gq, gk, gv = block_grads(dout, q, kv[0][..., :half, :], kv[1][..., :half, :], out, lse, False)
            dq += gq
            dk[..., :half, :] += gk
            dv[..., :half, :] += gv
        else:  # the second local chunk over all of the block
            gq, gk, gv = block_grads(dout[..., half:, :], q[..., half:, :], *kv, out[..., half:, :],
                                     lse[..., half:], False)
            dq[..., half:, :] += gq
            dk += gk
            dv += gv
        if step == 0:
            own = (dk, dv)
        else:
            wait(acc_works, timeout)  # the previous rank's sum for this block has arrived
            total = (dk, dv) if acc is None else (acc[0] + dk, acc[1] + dv)
            acc_works, acc = pass_on(total, group, sent)
        wait(works, timeout)
        kv = incoming if incoming is not None else kv
    wait(acc_works, timeout)
    dk, dv = own if acc is None else (own[0] + acc[0], own[1] + acc[1])
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class RingAttention(torch.autograd.Function):
    """Ring attention with its ring backward (``ring_forward`` / ``ring_backward``)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, timeout, sent, group):
        out, lse = ring_forward(q, k, v, causal=causal, timeout=timeout, sent=sent, group=group)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = dict(causal=causal, timeout=timeout, sent=sent, group=group)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        return (*ring_backward(dout.contiguous(), q, k, v, out, lse, **ctx.args), None, None, None, None)


def ring_attention(q, k, v, *, causal: bool, timeout: timedelta, sent: Sent, window: Optional[int] = None,
                   group=None) -> torch.Tensor:
    """Ring attention of this rank's queries (``ring_forward``), differentiable through the ring."""
    if window is not None:
        raise ValueError("ring attention takes no sliding window")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return RingAttention.apply(q, k, v, causal, timeout, sent, group)
    return ring_forward(q, k, v, causal=causal, timeout=timeout, sent=sent, group=group)[0]


# -- Ulysses ------------------------------------------------------------------------------------------

def all_to_all(x: torch.Tensor, scatter: int, gather: int, timeout: timedelta, sent: Sent, group=None) -> torch.Tensor:
    """Split ``x`` in n along ``scatter``, send part j to rank j, concatenate what arrives along ``gather``."""
    n = dist.get_world_size(group)
    inp = torch.stack([p.contiguous() for p in x.chunk(n, dim=scatter)])
    outp = torch.empty_like(inp)
    wait([dist.all_to_all_single(outp, inp, group=group, async_op=True)], timeout)
    sent.bytes += nbytes(inp) * (n - 1) // n  # the part a rank keeps is not sent
    return torch.cat(list(outp.unbind(0)), dim=gather)


class AllToAll(torch.autograd.Function):
    """``all_to_all``; its gradient is the all-to-all back (scatter and gather swapped)."""

    @staticmethod
    def forward(ctx, x, scatter, gather, timeout, sent, group):
        ctx.args = (gather, scatter, timeout, sent, group)
        return all_to_all(x, scatter, gather, timeout, sent, group)

    @staticmethod
    def backward(ctx, grad):
        return all_to_all(grad, *ctx.args), None, None, None, None, None


def ulysses_attention(q, k, v, *, causal: bool, timeout: timedelta, sent: Sent, window: Optional[int] = None,
                      group=None) -> torch.Tensor:
    """Attention of this rank's sequence shard ((B, H, rows, dh), contiguous shards in rank order):
    all-to-alls to head shards over the whole sequence, local attention, and back."""
    qh, kh, vh = (AllToAll.apply(t, 1, 2, timeout, sent, group) for t in (q, k, v))
    o = local_attention(qh, kh, vh, causal=causal, window=window)
    return AllToAll.apply(o, 2, 1, timeout, sent, group)


ATTENTION = {"ring": ring_attention, "ulysses": ulysses_attention}
