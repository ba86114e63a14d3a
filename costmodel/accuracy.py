"""How good the predictions of a run are: error per point and per variant, and crossovers,
predicted (by the cost model) beside measured (where the measured curves cross).

Pure Python, shared by `attncost crosscheck --time` and the reports.
"""

import math
import statistics
from typing import Optional

from .results import Run

TARGET_MEDIAN = 0.15  # issue: median |predicted - measured| / measured at most 15 %
TARGET_P90 = 0.35


def point_errors(run: Run) -> list:
    """[(point, predicted_s, measured_s, (predicted - measured) / measured)] of the measured points."""
    out = []
    for p in run.points:
        if p.status == "ok" and p.timing is not None and p.predicted_time_s and p.timing.median_s > 0:
            out.append((p, p.predicted_time_s, p.timing.median_s, p.predicted_time_s / p.timing.median_s - 1.0))
    return out


def quantile(values: list, q: float) -> float:
    """The q-quantile by linear interpolation (statistics.quantiles needs two points or more)."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    x = q * (len(v) - 1)
    i = int(x)
    return v[i] if i + 1 >= len(v) else v[i] + (x - i) * (v[i + 1] - v[i])


def summary(errors: list) -> dict:
    """Median and 90th percentile of |error| (fractions) over ``point_errors`` rows."""
    a = [abs(e[-1]) for e in errors]
    if not a:
        return {"points": 0, "median": None, "p90": None}
    return {"points": len(a), "median": statistics.median(a), "p90": quantile(a, 0.9)}


def by_variant(errors: list) -> dict:
    """variant -> summary of its points' errors, plus the median signed error (bias)."""
    groups: dict = {}
    for e in errors:
        groups.setdefault(e[0].variant, []).append(e)
    return {v: {**summary(es), "bias": statistics.median(x[-1] for x in es)} for v, es in groups.items()}


def crossings(a: list, b: list) -> list:
    """Where curve ``a`` crosses curve ``b`` (both [(T, value)] with values > 0):
    [(T*, value*, "below"|"above")], interpolated linearly in log-log between the two T values
    around the crossing; "below" means ``a`` becomes the smaller (cheaper) one."""
    bd = dict(b)
    pts = [(T, v, bd[T]) for T, v in sorted(a) if T in bd]
    out = []
    for (t1, a1, b1), (t2, a2, b2) in zip(pts, pts[1:]):
        r1, r2 = math.log(a1 / b1), math.log(a2 / b2)
        if r1 == 0 or r2 == 0 or (r1 > 0) == (r2 > 0):
            continue
        f = r1 / (r1 - r2)
        lt = math.log(t1) + f * (math.log(t2) - math.log(t1))
        la = math.log(a1) + f * (math.log(a2) - math.log(a1))
        out.append((math.exp(lt), math.exp(la), "below" if r2 < 0 else "above"))
    return out


def _curves(run: Run, variant: str, d: int, what: str) -> list:
    """[(T, seconds)] of one variant at width d: measured medians or predicted times."""
    out = []
    for p in run.points:
        if p.variant != variant or p.shape.d != d or p.status != "ok":
            continue
        v = p.timing.median_s if what == "measured" and p.timing else p.predicted_time_s
        if v:
            out.append((p.shape.T, v))
    return sorted(out)


def crossover_table(run: Run, baselines: tuple = ("flash", "mha")) -> list:
    """For every variant and width of the run, against each baseline: the first T where the
    variant becomes faster, measured (interpolated between the sweep's T values; None if never
    inside the sweep) and predicted (the cost model's curve over the same T values, interpolated
    the same way), and the ratio of the two."""
    rows = []
    variants = sorted({p.variant for p in run.points})
    for d in sorted({p.shape.d for p in run.points}):
        for base in baselines:
            if base not in variants:
                continue
            for v in variants:
                if v == base:
                    continue
                meas = _first_below(_curves(run, v, d, "measured"), _curves(run, base, d, "measured"))
                pred = _first_below(_curves(run, v, d, "predicted"), _curves(run, base, d, "predicted"))
                ratio = max(meas, pred) / min(meas, pred) if meas and pred else None
                rows.append({"variant": v, "baseline": base, "d": d, "measured_T": meas,
                             "predicted_T": pred, "ratio": ratio})
    return rows


def _first_below(a: list, b: list) -> Optional[float]:
    """First T where a goes below b: the first 'below' crossing, or the first T if it starts below."""
    bd = dict(b)
    both = [(T, v) for T, v in a if T in bd]
    if not both:
        return None
    if both[0][1] < bd[both[0][0]]:
        return float(both[0][0])
    return next((T for T, _, direction in crossings(a, b) if direction == "below"), None)
