"""What a layer's operands cost when its own traffic has evicted them (a CPU's caches): the ``cold``
rows of ``calibrate``.

A layer called in a loop holds its weights, caches and inputs between calls; where its kernels move
more bytes in one call than the caches keep, each kernel meets its operands, in part, evicted, and
the host its own code and data too. A microbenchmark that loops one op never sees that. These rows
time a matrix-vector product call by call (``time.perf_counter`` around the op alone, the median
of the calls), each call right after products by other matrices of N MB in all (``traffic``), as
the other projections of a decode step read theirs: the small product (``SMALL``) over ``AFTER_MB``,
and a large one (``LARGE``) hot and after the most. ``fit.fit_cold`` fits
``Hardware.cold_from_bytes`` / ``cold_full_bytes`` (where the extra time starts and where it is
whole) and ``cold_latency_s`` / ``cold_s_per_byte`` (the whole extra: a fixed part and a part per
byte, from the two sizes).
"""

import time
from typing import Callable

from ..costmodel.fit import COLD_ROW
SMALL = (320, 768)  # (k, n) of the matrix-vector products: a decode projection's weight, about 1 MB in fp32
LARGE = (768, 4096)  # about 12.6 MB in fp32
AFTER_MB = (0, 4, 8, 12, 16, 24, 32, 48)


def per_call_us(op: Callable[[], object], before: Callable[[], object], calls: int = 60) -> float:
    """The median time of ``op()`` in microseconds, each call timed alone right after ``before()``
    (after 5 untimed calls)."""
    times = []
    for i in range(calls + 5):
        before()
        t0 = time.perf_counter()
        op()
        dt = time.perf_counter() - t0
        if i >= 5:
            times.append(dt)
    times.sort()
    return times[len(times) // 2] * 1e6


def traffic(mb: float) -> Callable[[], None]:
    """A call of matrix-vector products by other fp32 matrices of 1,024 rows, ``mb`` MB in all (none
    for 0)."""
    import torch

    mats, left = [], int(mb * 2**20) // 4
    while left > 0:
        cols = max(1, min(left, 2**20) // 1024)
        mats.append(torch.randn(1024, cols))
        left -= 1024 * cols
    x = torch.randn(1, 1024)

    def call():
        for w in mats:
            x @ w

    return call


def cold_rows(calls: int = 60) -> list:
    """The ``COLD_ROW`` rows: {"op", "bytes" (the product's matrix), "after_bytes", "ms"}; CPU only."""
    import torch

    rows = []
    with torch.no_grad():
        for (k, n), afters in ((SMALL, AFTER_MB), (LARGE, (0, AFTER_MB[-1]))):
            x, w = torch.randn(1, k), torch.randn(k, n)
            for mb in afters:
                us = per_call_us(lambda: x @ w, traffic(mb), calls)
                rows.append({"op": COLD_ROW, "bytes": k * n * 4, "after_bytes": int(mb * 2**20), "ms": us / 1e3})
    return rows
