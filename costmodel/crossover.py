"""Crossover search: the smallest T (or d) at which a variant becomes cheaper than a baseline.

For each metric (FLOPs, peak memory = fused activations + KV cache, predicted time) the model is
evaluated at powers of two from 16 up to 4,194,304; within the first octave where the variant is
cheaper, bisection finds the smallest T (or d, in steps of ``heads``) at which it is strictly
cheaper, to within 0.4% (exact below T = 256), and the search goes on for where (if anywhere) it stops being cheaper.
None ("never") when it is not cheaper anywhere in the range. A point where
the variant does not apply (e.g. linformer's k above T) counts as not cheaper.
"""

from typing import Callable, Optional

from .estimate import Estimate, estimate
from .shape import MAX_T, Shape

LO = 16
HI = MAX_T
REL_TOL = 1 / 256


def metric_values(e: Estimate) -> dict:
    """The quantities compared, None where unknown."""
    if e.status != "ok":
        return {"flops": None, "memory": None, "time": None}
    return {"flops": e.flops, "memory": e.activation_bytes_fused + e.kv_cache_bytes, "time": e.time_s}


def crossovers(variant: str, baseline: str, shape: Shape, params: Optional[dict] = None,
               baseline_params: Optional[dict] = None, hardware=None, axis: str = "T",
               cache: Optional[dict] = None) -> tuple:
    """({metric: first T where cheaper, or None}, {metric: first T after that where it is no
    longer cheaper, or None if it stays cheaper up to 4,194,304}); metrics "flops", "memory" and,
    with a hardware profile, "time". ``axis="d"`` searches over d (multiples of heads) instead.

    ``cache`` (a dict) may be shared between calls with the same baseline to reuse its estimates.
    """
    metrics = ("flops", "memory", "time") if hardware is not None else ("flops", "memory")
    step = shape.heads if axis == "d" else 1
    lo, hi = -(-LO // step), HI // step  # search over units of ``step``
    cache = {} if cache is None else cache

    fixed = (axis, id(hardware), shape.model_copy(update={axis: step}))  # shapes that differ on ``axis`` share

    def value(name, p, n):
        key = (name, n, repr(p), fixed)
        if key not in cache:
            s = shape.model_copy(update={axis: n * step})
            cache[key] = metric_values(estimate(name, s, p, hardware))
        return cache[key]

    def cheaper(n) -> dict:
        v, b = value(variant, params, n), value(baseline, baseline_params, n)
        return {m: v[m] is not None and b[m] is not None and v[m] < b[m] for m in metrics}

    start: dict = {m: None for m in metrics}
    end: dict = {m: None for m in metrics}
    open_ = set(metrics)  # metrics whose range is not closed yet
    prev, n = None, lo
    while open_:
        c = cheaper(n)
        for m in list(open_):
            if start[m] is None and c[m]:
                start[m] = _bisect(lambda x, m=m: cheaper(x)[m], prev, n) * step
            elif start[m] is not None and not c[m]:
                end[m] = _bisect(lambda x, m=m: not cheaper(x)[m], prev, n) * step
                open_.discard(m)
        if n >= hi:
            break
        prev, n = n, min(n * 2, hi)
    return start, end


def _bisect(flipped: Callable, below: Optional[int], at: int) -> int:
    """Smallest n in (below, at] with flipped(n), given flipped(at) and not flipped(below), to
    within REL_TOL of n (an exact integer below 256): the model is not more accurate than that."""
    if below is None:
        return at
    while at - below > max(1, int(below * REL_TOL)):
        mid = (below + at) // 2
        if flipped(mid):
            at = mid
        else:
            below = mid
    return at
