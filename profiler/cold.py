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

Kernels that read their operands otherwise than as a stream pay more per byte fetched anew: rows with
an ``access`` time them hot and after the most, on operands of ``LARGE``'s bytes: ``matmul``, a
product of ``GEMM_ROWS`` rows by the large matrix (a CPU's gemm packs it in blocks, as decode's
projections at a small batch run); ``index``, an ``index_select`` of every row of a table of rows of
``INDEX_ROW`` elements in a random order (as a sparse attention gathers its cache's rows). They give
``Hardware.cold_access_s_per_byte``.
"""

import statistics
import time
from typing import Callable

from ..costmodel.fit import COLD_ROW
SMALL = (320, 768)  # (k, n) of the matrix-vector products: a decode projection's weight, about 1 MB in fp32
LARGE = (768, 4096)  # about 12.6 MB in fp32
AFTER_MB = (0, 4, 8, 12, 16, 24, 32, 48)
# rounds of the rows, in turn: interleaved, ten fits of the small product's rows put the share evicted at
# 20 MB with a standard deviation of 0.17 on 2 EPYC cores, where timing each row whole in turn gave 0.27
ROUNDS = 4
GEMM_ROWS = 4
INDEX_ROW = 256


def call_times(op: Callable[[], object], before: Callable[[], object], calls: int, warmup: int = 5) -> list:
    """The seconds of ``calls`` calls of ``op()``, each timed alone right after ``before()`` (after
    ``warmup`` untimed calls)."""
    times = []
    for i in range(calls + warmup):
        before()
        t0 = time.perf_counter()
        op()
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return times


def per_call_us(op: Callable[[], object], before: Callable[[], object], calls: int = 60) -> float:
    """The median time of ``op()`` in microseconds, each call timed alone right after ``before()``
    (after 5 untimed calls)."""
    return statistics.median(call_times(op, before, calls)) * 1e6


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


def cold_rows(calls: int = 60, rounds: int = ROUNDS) -> list:
    """The ``COLD_ROW`` rows: {"op", "bytes" (the operand held: the product's matrix, the gathered
    table), "after_bytes", "ms"}, and "access" where the op reads it otherwise than as a stream; CPU only.
    Every row is timed in each of ``rounds`` rounds (``calls / rounds`` calls a round, in turn with the
    others), its median over them all: a machine whose pace drifts meanwhile moves every row alike, not
    the rows timed last."""
    import torch

    k, n = LARGE
    with torch.no_grad():
        table = torch.randn(k * n // INDEX_ROW, INDEX_ROW)
        order = torch.randperm(table.shape[0])
        cases = [(SMALL, AFTER_MB, None), (LARGE, (0, AFTER_MB[-1]), None),
                 (LARGE, (0, AFTER_MB[-1]), "matmul"), (LARGE, (0, AFTER_MB[-1]), "index")]
        befores = {mb: traffic(mb) for mb in AFTER_MB}
        points = [((k, n), mb, access,
                   _gather(table, order) if access == "index" else _product(GEMM_ROWS if access else 1, k, n))
                  for (k, n), afters, access in cases for mb in afters]
        times: list = [[] for _ in points]
        for r in range(rounds):
            for ts, (_, mb, _, op) in zip(times, points):
                ts += call_times(op, befores[mb], max(1, calls // rounds), warmup=5 if r == 0 else 1)
    rows = []
    for ts, ((k, n), mb, access, _) in zip(times, points):
        row = {"op": COLD_ROW, "bytes": k * n * 4, "after_bytes": int(mb * 2**20), "ms": statistics.median(ts) * 1e3}
        rows.append({**row, "access": access} if access else row)
    return rows


def _product(m: int, k: int, n: int) -> Callable[[], object]:
    import torch

    x, w = torch.randn(m, k), torch.randn(k, n)
    return lambda: x @ w


def _gather(table, order) -> Callable[[], object]:
    return lambda: table.index_select(0, order)
