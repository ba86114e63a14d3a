"""The machine's pace: the time of one fixed reference workload, taken when a profile is calibrated
and again beside every measured point.

A prediction is only as good as the match between the machine that was calibrated and the machine
that ran: a laptop that throttles, a shared VM whose neighbours take the memory bus, a GPU clocked
down by heat all run the same layer slower, and a time model calibrated at one pace then looks wrong
at another. ``pace_s`` times a small eager workload of the kinds a layer runs (a matmul, a softmax,
an add, a transpose made contiguous: ``ROUND`` of each, 128 x 256 in fp32, about a millisecond on a
2-core CPU) with ``harness.measure``, as points are timed. ``calibrate`` records it in the profile
(``Hardware.pace_s``), ``profile`` beside each point (``Point.pace_s``, in the same rounds as the
point), and ``crosscheck --time`` shows each point's ratio of the two: a ratio far from 1 says that
the error beside it includes the machine's drift. It corrects nothing: each op kind suffers a busy
machine in its own way, and on a shared VM layers follow the workload's pace only in part
(``bench/pace_drift.py`` prints how far).
"""

from typing import Callable

ROUND = 4  # repetitions of the four ops in one call of the workload
ROWS, COLS = 128, 256


def workload(device: str) -> Callable[[], object]:
    """The reference workload on ``device``, on fixed random fp32 data (seeded): one call runs ``ROUND``
    times a (128 x 256) @ (256 x 256) matmul, a softmax over its rows, an add and a transposed copy."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, COLS, generator=gen).to(device)
    w = (torch.randn(COLS, COLS, generator=gen) / COLS ** 0.5).to(device)

    def call():
        y = x
        for _ in range(ROUND):
            y = torch.softmax(y @ w, dim=-1) + x
            y = y.t().contiguous().t()
        return y

    return call


def pace_s(device: str, budget_s: float = 0.2, fn=None) -> float:
    """The median time of one call of the reference workload (``fn``: a call made by ``workload``, to
    time the same data again), timed as points are (``harness.measure``)."""
    import torch

    from .harness import measure

    with torch.no_grad():
        return measure(fn or workload(device), device, budget_s=budget_s).median_s
