"""A sweep of variants beside a baseline: every estimate, each with where it is cheaper over T.

What `attncost predict` prints and dumps, and what a report's cost-model crossovers show. The search
over T (``crossover.cheaper_ranges``) runs once per distinct (variant, shape but T) of the sweep,
with the sweep's T values of that shape among its samples: the ranges agree with the rows at every
T of the sweep, and the rows' estimates come from the search's own cache.
"""

from dataclasses import replace
from typing import Callable, Optional

from .crossover import Ranges, cheaper_ranges, metric_values
from .estimate import METRICS, Estimate, estimate
from .shape import Shape


def evaluate(variants: list, baseline: str, shapes: list, params: Optional[dict] = None,
             hardware=None, metrics: Optional[tuple] = None, cache: Optional[dict] = None) -> list:
    """[Estimate] of each of ``variants`` (names) at each of ``shapes``, shape by shape in order
    (all variants at ``shapes[0]`` first). Each estimate that applies carries ``baseline`` and its
    ``crossover_T`` (first T where cheaper), ``cheaper_until_T`` (where that range ends) and
    ``cheaper_ranges_T`` (every range) against ``baseline``, per metric: "flops", "memory" and,
    with ``hardware`` (a Hardware profile), "time".

    ``params``: {variant: parameters over its defaults}, the baseline's included. ``metrics``: the
    metrics to search (default: all that apply; a table that shows one searches faster). ``cache``:
    a dict to keep the estimates in, shared by calls with the same ``hardware``. Raises
    VariantError for an unknown variant, pydantic's ValidationError for bad parameters and
    ValueError for an unknown metric, or "time" without ``hardware``."""
    params = params or {}
    known = METRICS if hardware is not None else METRICS[:2]
    metrics = known if metrics is None else tuple(metrics)
    if not set(metrics) <= set(known):
        raise ValueError(f"metrics must be among {', '.join(known)}, not {', '.join(metrics)}")
    sweep: dict = {}  # shape but T -> the sweep's T values there
    for s in shapes:
        sweep.setdefault(_but_T(s), []).append(s.T)
    cache = {} if cache is None else cache
    found: dict = {}  # (variant, shape but T) -> Ranges
    out = []
    for s in shapes:
        rest = _but_T(s)
        base_at = _estimates(baseline, rest, params.get(baseline), hardware, cache)
        for name in variants:
            at = _estimates(name, rest, params.get(name), hardware, cache)
            e = at(s.T)
            if e.status == "ok":
                if (name, rest) not in found:
                    found[name, rest] = _ranges(name, baseline, at, base_at, metrics, sweep[rest])
                e = _compared(e, baseline, found[name, rest])
            out.append(e)
    return out


def _but_T(s: Shape) -> Shape:
    return s.model_copy(update={"T": 1})


def _estimates(name: str, rest: Shape, params: Optional[dict], hardware, cache: dict) -> Callable[[int], Estimate]:
    """T -> estimate(name, ``rest`` at T), cached in ``cache`` (shared by the variants of a sweep)."""
    memo = cache.setdefault((name, repr(params), rest), {})
    shapes = cache.setdefault(rest, {})  # rest at T, for every variant

    def at(T: int) -> Estimate:
        if T not in memo:
            if T not in shapes:
                shapes[T] = rest.model_copy(update={"T": T})
            memo[T] = estimate(name, shapes[T], params, hardware)
        return memo[T]

    return at


def _ranges(name: str, baseline: str, at: Callable, base_at: Callable, metrics: tuple, Ts: list) -> Ranges:
    if name == baseline:  # the baseline against itself: never cheaper
        return {m: [] for m in metrics}
    return cheaper_ranges(lambda T: metric_values(at(T)), lambda T: metric_values(base_at(T)), metrics, tuple(Ts))


def _compared(e: Estimate, baseline: str, ranges: Ranges) -> Estimate:
    """A copy of ``e`` with its comparison against ``baseline`` filled in."""
    return replace(e, baseline=baseline,
                   crossover_T={m: r[0][0] if r else None for m, r in ranges.items()},
                   cheaper_until_T={m: r[0][1] if r else None for m, r in ranges.items()},
                   cheaper_ranges_T={m: [list(x) for x in r] for m, r in ranges.items()})
