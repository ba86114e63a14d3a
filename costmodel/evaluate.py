"""A sweep of variants beside a baseline: every estimate, each with where it is cheaper over T.

What `attncost predict` prints and dumps, and what a report's cost-model crossovers show. The search
over T (``crossover.search``) runs once per distinct (variant, shape but T) of the sweep, with the
sweep's T values of that shape among its samples: the ranges agree with the rows at every T of the
sweep, and the rows' estimates come from the search's own cache. The searches run side by side, and
the T values they ask for next are priced together, one ``estimate_many`` per variant.
"""

from dataclasses import replace
from typing import Callable, Optional

from .crossover import Ranges, metric_values, search
from .estimate import METRICS, Estimate, estimate_many, expect, vector_at
from .shape import Shape


SEARCH_POINTS = 50  # about the T values one search prices (samples and bisections, three metrics)


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
    rests = [s.model_copy(update={"T": 1}) for s in shapes]  # each shape but T
    sweep: dict = {}  # shape but T -> the sweep's T values there
    for s, rest in zip(shapes, rests):
        sweep.setdefault(rest, []).append(s.T)
    cache = {} if cache is None else cache
    names = list(dict.fromkeys([baseline, *variants]))
    expect(len(shapes) * len(names) + SEARCH_POINTS * len(names) * len(sweep))
    columns = {(name, rest): _Column(name, rest, params.get(name), hardware, cache)
               for rest in sweep for name in names}  # (variant, shape but T) -> its _Column
    _price_together([(columns[key], sweep[key[1]], True) for key in columns])  # the rows
    rows = [(name, rest, columns[name, rest](s.T)) for s, rest in zip(shapes, rests) for name in variants]
    keys = dict.fromkeys((name, rest) for name, rest, e in rows if e.status == "ok" and name != baseline)
    found = _search_together({(name, rest): search(_values(columns[name, rest]), _values(columns[baseline, rest]),
                                                   metrics, tuple(sweep[rest])) for name, rest in keys},
                             columns, baseline)
    never = {m: [] for m in metrics}  # the baseline against itself
    return [_compared(e, baseline, found.get((name, rest), never)) if e.status == "ok" else e
            for name, rest, e in rows]


def _values(column: "_Column") -> Callable[[int], dict]:
    return lambda T: metric_values(column(T))


class _Column:
    """T -> estimate(name, ``rest`` at T), kept in ``cache`` (shared by the variants of a sweep)."""

    def __init__(self, name: str, rest: Shape, params: Optional[dict], hardware, cache: dict):
        self.name, self.rest, self.params, self.hardware = name, rest, params, hardware
        self.memo = cache.setdefault((name, repr(params), rest), {})
        self.shapes = cache.setdefault(rest, {})  # rest at T, for every variant

    def shape(self, T: int) -> Shape:
        s = self.shapes.get(T)
        if s is None:
            s = self.shapes[T] = self.rest.model_copy(update={"T": T})
        return s

    def __call__(self, T: int) -> Estimate:
        if T not in self.memo:
            self.memo[T] = estimate_many(self.name, [self.shape(T)], self.params, self.hardware)[0]
        return self.memo[T]


def _search_together(searches: dict, columns: dict, baseline: str) -> dict:
    """Runs ``searches`` ({(variant, shape but T): ``crossover.search``}) side by side, a request
    of each at a time, the T values they ask for priced together: {key: Ranges}."""
    found = {}
    while searches:
        asks = []
        for key, steps in list(searches.items()):
            try:
                Ts, every = next(steps)
            except StopIteration as done:
                found[key] = done.value
                del searches[key]
                continue
            asks += [(columns[key], Ts, every), (columns[baseline, key[1]], Ts, every)]
        _price_together(asks)
    return found


def _price_together(asks: list) -> None:
    """Prices ``asks`` ((column, Ts, every)) with one ``estimate_many`` per variant: the T values of
    each column not yet priced, those asked with ``every`` False only where there are enough to
    replay on arrays (only some of them will be asked for)."""
    by: dict = {}  # (variant, parameters) -> {(column, T): [column, T, every]}
    for column, Ts, every in asks:
        todo = by.setdefault((column.name, repr(column.params)), {})
        for T in Ts:
            if T not in column.memo:
                item = todo.setdefault((id(column), T), [column, T, False])
                item[2] = item[2] or every
    for todo in by.values():
        if len(todo) < vector_at():
            todo = {k: v for k, v in todo.items() if v[2]}
        if not todo:
            continue
        first = next(iter(todo.values()))[0]
        priced = estimate_many(first.name, [c.shape(T) for c, T, _ in todo.values()], first.params, first.hardware)
        for (column, T, _), e in zip(todo.values(), priced):
            column.memo[T] = e


def _compared(e: Estimate, baseline: str, ranges: Ranges) -> Estimate:
    """A copy of ``e`` with its comparison against ``baseline`` filled in."""
    return replace(e, baseline=baseline,
                   crossover_T={m: r[0][0] if r else None for m, r in ranges.items()},
                   cheaper_until_T={m: r[0][1] if r else None for m, r in ranges.items()},
                   cheaper_ranges_T={m: [list(x) for x in r] for m, r in ranges.items()})
