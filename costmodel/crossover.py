"""Where a variant is cheaper than a baseline over T: the ranges of T, per metric.

Metrics: FLOPs, peak memory (fused activations + KV cache) and, with a hardware profile, predicted
time. *Cheaper* means lower by more than ``REL_EQUAL`` (1e-9) of the baseline's value: two values
equal up to float rounding (host-bound variants that issue the same kernels differ by ~1e-20 s) are
a tie, and a tie is not cheaper. A T at which either does not apply (linformer's k above T) is not
cheaper.

The search runs over T from 16 (or the smallest T asked for, if lower) to 4,194,304:

1. Samples: the powers of two and the T values asked for (a sweep's), so at each of those the
   result agrees exactly with that T's own values.
2. A gap between two samples is split, at the point of ``LATTICE`` (round(2^(j/8)): 8 points per
   octave, ``OCTAVE_SAMPLES``) nearest its geometric middle, until no lattice point is left inside
   it, unless no metric can change side inside it. FLOPs, bytes and predicted times do not fall as
   T grows and grow at most as T^2: ln value and ln base are non-decreasing in ln T with slope at
   most ``SLOPE`` = 2, which bounds, from their values at the two ends, how far ln(base / value) can
   move inside the gap; where that bound keeps it on the side it has at both ends, the gap is
   settled. Where the variant or the baseline does not apply at both ends of a gap it is taken not
   to apply inside (each limit a variant sets is a lower bound on T).
3. Between adjacent samples on different sides, bisection finds the boundary to within 1/256 of T
   (``REL_TOL``; exact below T = 256): the model is not more accurate than that.

So every range wider than 1/8 octave is found, and a narrower one wherever the bound holds (it can
fail only by a step in a cost, such as performer's padding of T to whole chunks). ``cheaper_ranges``
returns all of them, in order.
"""

from bisect import bisect_left, bisect_right
from math import log, log1p, sqrt
from typing import Callable, Generator, Optional

from .estimate import METRICS, Estimate
from .shape import MAX_T

LO = 16
HI = MAX_T
POWERS = tuple(2**k for k in range(LO.bit_length() - 1, HI.bit_length()))  # LO, 2 LO, ..., HI
REL_EQUAL = 1e-9
REL_TOL = 1 / 256
OCTAVE_SAMPLES = 8
SLOPE = 2.0

THRESHOLD = -log1p(-REL_EQUAL)  # ln(base / value) above this: cheaper
LATTICE = sorted({round(2 ** (j / OCTAVE_SAMPLES)) for j in range(OCTAVE_SAMPLES * (HI.bit_length() - 1) + 1)})

Ranges = dict  # metric -> [(start, end)], end the first T after start where no longer cheaper, or None


def cheaper(value: Optional[float], base: Optional[float]) -> bool:
    """``value`` is below ``base`` by more than ``REL_EQUAL`` of ``base``; False where either is None."""
    return value is not None and base is not None and value < base * (1.0 - REL_EQUAL)


def metric_values(e: Estimate) -> dict:
    """The quantities compared, None where unknown."""
    if e.status != "ok":
        return dict.fromkeys(METRICS)
    return {"flops": e.flops, "memory": e.activation_bytes_fused + e.kv_cache_bytes, "time": e.time_s}


def cheaper_ranges(variant_at: Callable[[int], dict], baseline_at: Callable[[int], dict],
                   metrics: tuple = METRICS, Ts: tuple = ()) -> Ranges:
    """{metric: [(start, end), ...]}: the ranges of T where the variant is cheaper than the baseline,
    in order; ``end`` is the first T after ``start`` where it no longer is, None where it still is at
    4,194,304; an empty list: never. ``variant_at(T)`` and ``baseline_at(T)`` give ``metric_values``
    at T (the caller caches them); ``Ts``: T values that must be samples (see the module docstring)."""
    steps = search(variant_at, baseline_at, metrics, Ts)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


def search(variant_at: Callable[[int], dict], baseline_at: Callable[[int], dict], metrics: tuple = METRICS,
           Ts: tuple = ()) -> Generator[tuple, None, Ranges]:
    """``cheaper_ranges`` step by step, for a caller that prices many searches together: yields
    (Ts, every), the T values it asks for next, and returns the Ranges. ``every`` True: each of them
    will be asked for (the samples, round by round); False: some (every midpoint the bisections may
    ask for)."""
    sides: dict = {}

    def side(T: int) -> dict:
        if T not in sides:
            sides[T] = _sides(variant_at(T), baseline_at(T), metrics)
        return sides[T]

    grid = sorted(set(POWERS) | {T for T in Ts if 1 <= T <= HI})
    yield grid, True
    points = yield from _samples(side, metrics, grid)
    flips = {m: [(prev, T) for prev, T in zip([None] + points, points)
                 if side(T)[m][0] != (prev is not None and side(prev)[m][0])] for m in metrics}
    yield sorted({mid for gaps in flips.values() for below, at in gaps for mid in _midpoints(below, at)}), False
    out = {}
    for m, gaps in flips.items():
        ranges, start = [], None
        for below, at in gaps:
            if start is None:
                start = _bisect(lambda n, m=m: side(n)[m][0], below, at)
            else:
                ranges.append((start, _bisect(lambda n, m=m: not side(n)[m][0], below, at)))
                start = None
        out[m] = ranges + ([(start, None)] if start is not None else [])
    return out


def _sides(v: dict, b: dict, metrics: tuple) -> dict:
    """{metric: (cheaper, ln value, ln base)}, the logarithms None where a value is unknown or zero."""
    out = {}
    for m in metrics:
        x, y = v[m], b[m]
        known = x is not None and y is not None and x > 0 and y > 0
        out[m] = (cheaper(x, y), log(x) if known else None, log(y) if known else None)
    return out


def _samples(side: Callable, metrics: tuple, grid: list) -> Generator[tuple, None, list]:
    """``grid`` with its gaps split until settled (module docstring, step 2), in order. The gaps are
    split a round at a time, each round's new samples yielded first (as ``search`` does)."""
    points = set(grid)
    gaps = list(zip(grid, grid[1:]))
    while gaps:
        split = [(a, mid, b) for a, b in gaps for mid in (_middle(a, b),)
                 if mid is not None and not _settled(side(a), side(b), metrics, log(b / a))]
        yield [mid for _, mid, _ in split], True
        points.update(mid for _, mid, _ in split)
        gaps = [gap for a, mid, b in split for gap in ((a, mid), (mid, b))]
    return sorted(points)


def _middle(a: int, b: int) -> Optional[int]:
    """The point of ``LATTICE`` strictly between a and b nearest their geometric middle; None where
    there is none (the gap is at its finest)."""
    i, j = bisect_right(LATTICE, a), bisect_left(LATTICE, b)
    if i >= j:
        return None
    k = bisect_left(LATTICE, sqrt(a * b), i, j)
    return min(LATTICE[max(i, k - 1):min(j, k + 1)], key=lambda T: abs(log(T * T / (a * b))))


def _settled(sa: dict, sb: dict, metrics: tuple, width: float) -> bool:
    """No metric can change side inside a gap of ln-width ``width`` with these ends."""
    for m in metrics:
        (ca, va, ba), (cb, vb, bb) = sa[m], sb[m]
        if va is None and vb is None and not ca and not cb:
            continue  # does not apply at either end
        if va is None or vb is None or ca != cb:
            return False
        if ca and _least_gap(va, vb, ba, bb, width) <= THRESHOLD:  # may stop being cheaper inside
            return False
        if not ca and -_least_gap(ba, bb, va, vb, width) > THRESHOLD:  # may become cheaper inside
            return False
    return True


def _least_gap(v1: float, v2: float, b1: float, b2: float, width: float) -> float:
    """The least ln b - ln v can be inside a gap of ln-width ``width`` where ln v goes from v1 to v2
    and ln b from b1 to b2, both non-decreasing with slope at most SLOPE: the least of
    max(b1, b2 - SLOPE (width - x)) - min(v2, v1 + SLOPE x), piecewise linear and convex in x, so
    taken at an end or a breakpoint."""
    xs = (0.0, width, width - (b2 - b1) / SLOPE, (v2 - v1) / SLOPE)
    return min(max(b1, b2 - SLOPE * (width - x)) - min(v2, v1 + SLOPE * x) for x in xs if 0.0 <= x <= width)


def _midpoints(below: Optional[int], at: int) -> list:
    """Every midpoint ``_bisect(flipped, below, at)`` may ask for, whatever ``flipped`` says."""
    out, todo = [], [(below, at)] if below is not None else []
    while todo:
        below, at = todo.pop()
        mid = _bisect_mid(below, at)
        if mid is not None:
            out.append(mid)
            todo += [(below, mid), (mid, at)]
    return out


def _bisect_mid(below: int, at: int) -> Optional[int]:
    """The T ``_bisect`` asks for inside (below, at), None where the gap is within REL_TOL."""
    return (below + at) // 2 if at - below > max(1, int(below * REL_TOL)) else None


def _bisect(flipped: Callable, below: Optional[int], at: int) -> int:
    """Smallest n in (below, at] with flipped(n), given flipped(at) and not flipped(below), to
    within REL_TOL of n (an exact integer below 256)."""
    if below is None:
        return at
    while (mid := _bisect_mid(below, at)) is not None:
        if flipped(mid):
            at = mid
        else:
            below = mid
    return at
