"""Tensor-parallel collectives of one attention layer (Megatron-LM, Shoeybi et al. 2019, section 3):
the Q/K/V projections split by columns (a rank's heads), the output projection by rows, one
all-reduce of the output; its gradient enters the backward as an all-reduce of the input's gradient.
Sequence parallel (Korthikanti et al. 2022, section 4.2.2): the input arrives sharded over the
sequence and is all-gathered; the output is reduce-scattered back to sequence shards (their
gradients: a reduce-scatter and an all-gather).

Each rank counts the bytes the ring algorithm of each collective sends (Patarasuk & Yuan 2009):
all-reduce 2 (N-1)/N of the buffer, reduce-scatter (N-1)/N of its input, all-gather (N-1)/N of its output.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist

from .ring import Sent, nbytes, wait

ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def all_reduce(x: torch.Tensor, timeout: timedelta, sent: Sent, group=None) -> torch.Tensor:
    n = dist.get_world_size(group)
    x = x.contiguous().clone()
    wait([dist.all_reduce(x, group=group, async_op=True)], timeout)
    sent.bytes += 2 * (n - 1) * nbytes(x) // n
    return x


def gather_sequence(x: torch.Tensor, timeout: timedelta, sent: Sent, group=None) -> torch.Tensor:
    """(B, rows, d) shards in rank order -> (B, N rows, d) on every rank."""
    n = dist.get_world_size(group)
    out = torch.empty(n * x.numel(), dtype=x.dtype, device=x.device)
    wait([ALL_GATHER(out, x.contiguous().view(-1), group=group, async_op=True)], timeout)
    sent.bytes += (n - 1) * nbytes(x)  # (N-1)/N of the gathered output
    return torch.cat(list(out.view((n,) + x.shape).unbind(0)), dim=1)


def scatter_sequence(x: torch.Tensor, timeout: timedelta, sent: Sent, group=None) -> torch.Tensor:
    """(B, T, d) partial sums -> this rank's (B, T/N, d) shard of their sum."""
    n = dist.get_world_size(group)
    inp = torch.stack([p.contiguous() for p in x.chunk(n, dim=1)])
    out = torch.empty_like(inp[0])
    wait([REDUCE_SCATTER(out.view(-1), inp.view(-1), group=group, async_op=True)], timeout)
    sent.bytes += (n - 1) * nbytes(inp) // n
    return out


def _function(name: str, forward, backward, doc: str):
    """An autograd Function over (x, timeout, sent, group): ``forward`` of x (None: x itself), and
    ``backward`` of the gradient (None: the gradient itself)."""
    def fwd(ctx, x, timeout, sent, group):
        ctx.args = (timeout, sent, group)
        return x if forward is None else forward(x, timeout, sent, group)

    def bwd(ctx, grad):
        return (grad if backward is None else backward(grad, *ctx.args)), None, None, None

    return type(name, (torch.autograd.Function,), {"__doc__": doc, "forward": staticmethod(fwd),
                                                    "backward": staticmethod(bwd)})


ToRanks = _function("ToRanks", None, all_reduce, "Megatron's f: the identity forward; the input's gradient all-reduced.")
FromRanks = _function("FromRanks", all_reduce, None, "Megatron's g: the partial outputs all-reduced; the gradient "
                      "passes as it is.")
GatherSequence = _function("GatherSequence", gather_sequence, scatter_sequence, "Sequence parallel's entry: "
                           "all-gather forward, reduce-scatter of the gradient.")
ScatterSequence = _function("ScatterSequence", scatter_sequence, gather_sequence, "Sequence parallel's exit: "
                            "reduce-scatter forward, all-gather of the gradient.")


def enter(x: torch.Tensor, sequence_parallel: bool, timeout: timedelta, sent: Sent, group=None) -> torch.Tensor:
    """The layer's input as every rank needs it: whole (f), or gathered from sequence shards."""
    return (GatherSequence if sequence_parallel else ToRanks).apply(x, timeout, sent, group)


def leave(y: torch.Tensor, sequence_parallel: bool, timeout: timedelta, sent: Sent, group=None) -> torch.Tensor:
    """The ranks' partial outputs summed: whole (g), or scattered to sequence shards."""
    return (ScatterSequence if sequence_parallel else FromRanks).apply(y, timeout, sent, group)
