"""How good the predictions of a run are: error per point and per variant, and crossovers,
predicted (by the cost model) beside measured (where the measured curves cross); and, for a run
profiled with ``--ops``, where a variant's error comes from, op kind by op kind (``by_op``).

Points measured in graph mode are a series of their own: "flash (graph)" beside "flash".

Pure Python, shared by `attncost crosscheck --time` and the reports.
"""

import math
import statistics
from dataclasses import dataclass
from typing import Optional

from .as_run import kernel_parts
from .opkinds import AUTOGRAD, CALL, KINDS, VIEW, graph_kind
from .results import Point, Run
from .timing import fresh_output_bytes

TARGET_MEDIAN = 0.15  # `crosscheck --time` passes (exit 0) where the median |predicted - measured| / measured
TARGET_P90 = 0.35  # is at most 15 % (the p90 is shown against 35 %)
PACE_TOLERANCE = 0.10  # a point whose reference workload ran more than 10 % off the calibration's: the machine drifted


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


def pace_ratio(p: Point, hardware) -> Optional[float]:
    """How much slower the machine ran the reference workload (``profiler.pace``) beside the point than
    when ``hardware`` was calibrated (``Point.pace_s / Hardware.pace_s``; 1.3: 30 % slower); None where
    either was not timed."""
    base = getattr(hardware, "pace_s", None)
    return p.pace_s / base if p.pace_s and base else None


def pace_summary(errors: list, hardware) -> Optional[dict]:
    """Over the ``point_errors`` rows whose pace was timed: their number, the least, median and largest
    ``pace_ratio``, and how many lie beyond ``PACE_TOLERANCE``; None where no point has a ratio. (No
    correction is derived from it: one workload's pace follows a layer's only in part, as each op kind
    suffers a busy machine in its own way.)"""
    ratios = [k for k in (pace_ratio(e[0], hardware) for e in errors) if k is not None]
    if not ratios:
        return None
    return {"points": len(ratios), "min": min(ratios), "median": statistics.median(ratios), "max": max(ratios),
            "off": sum(abs(k - 1.0) > PACE_TOLERANCE for k in ratios), "tolerance": PACE_TOLERANCE}


def label(p: Point) -> str:
    """The series a point belongs to: its variant, and "(graph)" where it ran in graph mode."""
    return p.variant if p.exec_mode == "eager" else f"{p.variant} ({p.exec_mode})"


def by_variant(errors: list, within: Optional[list] = None) -> dict:
    """series (``label``) -> summary of its points' errors, plus the median signed error (bias) and, given
    ``within`` (``within_shape`` of the same rows), the median of those (``within_bias``; None: no point
    had peers enough)."""
    groups: dict = {}
    for i, e in enumerate(errors):
        groups.setdefault(label(e[0]), []).append(i)
    out = {}
    for v, idx in groups.items():
        es = [errors[i] for i in idx]
        out[v] = {**summary(es), "bias": statistics.median(x[-1] for x in es)}
        if within is not None:
            w = [within[i] for i in idx if within[i] is not None]
            out[v]["within_bias"] = statistics.median(w) if w else None
    return out


def within_summary(within: list) -> dict:
    """``summary`` of the ``within_shape`` errors that exist."""
    return summary([(w,) for w in within if w is not None])


SHAPE_PEERS = 3  # points of one shape needed to judge each against the others (``within_shape``)


def within_shape(errors: list) -> list:
    """Each ``point_errors`` row's error against its shape's: ``(1 + error) / (1 + m) - 1``, ``m`` the
    median error of the points of its shape and execution mode (the variants a sweep times together, in
    the same interleaved rounds: ``profiler.sweep``); None where the shape has fewer than ``SHAPE_PEERS``.
    A slow spell of the machine, or a calibration made at another pace, lengthens every variant of a shape
    alike; what is left is how well the model prices the variants against each other, which is what a
    crossover rests on. Example: errors of -20 %, -10 % and +8 % at one shape are -11 % (0.8 / 0.9 - 1),
    0 and +20 % (1.08 / 0.9 - 1) within it."""
    return against_peers([(e[0].shape.model_dump_json(), e[0].exec_mode) for e in errors], [e[-1] for e in errors])


def against_peers(keys: list, errors: list) -> list:
    """Each of ``errors`` against the median error of those of its key: ``(1 + e) / (1 + m) - 1``; None
    where fewer than ``SHAPE_PEERS`` share its key (``within_shape``; the reports key rows so too)."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out: list = [None] * len(errors)
    for idx in groups.values():
        if len(idx) < SHAPE_PEERS:
            continue
        m = statistics.median(errors[i] for i in idx)
        for i in idx:
            out[i] = (1.0 + errors[i]) / (1.0 + m) - 1.0
    return out


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


def _curves(run: Run, variant: str, d: int, what: str, exec_mode: str = "eager") -> list:
    """[(T, seconds)] of one variant at width d in one exec mode: measured medians or predicted times."""
    out = []
    for p in run.points:
        if p.variant != variant or p.shape.d != d or p.status != "ok" or p.exec_mode != exec_mode:
            continue
        v = p.timing.median_s if what == "measured" and p.timing else p.predicted_time_s
        if v:
            out.append((p.shape.T, v))
    return sorted(out)


def crossover_table(run: Run, baselines: tuple = ("flash", "mha")) -> list:
    """For every variant and width of the run, against each baseline: the first T where the
    variant becomes faster, measured (interpolated between the sweep's T values; None if never
    inside the sweep) and predicted (the cost model's curve over the same T values, interpolated
    the same way), and the ratio of the two; per exec mode ("exec"), each against its own baseline."""
    rows = []
    variants = sorted({p.variant for p in run.points})
    modes = sorted({p.exec_mode for p in run.points})
    for mode in modes:
        for d in sorted({p.shape.d for p in run.points}):
            for base in baselines:
                if base not in variants:
                    continue
                for v in variants:
                    if v == base:
                        continue
                    meas = _first_below(_curves(run, v, d, "measured", mode), _curves(run, base, d, "measured", mode))
                    pred = _first_below(_curves(run, v, d, "predicted", mode),
                                        _curves(run, base, d, "predicted", mode))
                    ratio = max(meas, pred) / min(meas, pred) if meas and pred else None
                    rows.append({"variant": v, "baseline": base, "d": d, "exec": mode, "measured_T": meas,
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


# -- where the error comes from: time by op kind ------------------------------------------------
REST = "rest"  # measured: time in no aten op (Python between the ops); predicted: the device waiting for the host
KIND_ORDER = KINDS + (VIEW, REST)


@dataclass
class KindTime:
    """One op kind of a series: mean seconds per call over its points, predicted and measured, and
    ``share``: the mean of (predicted - measured) / measured layer time, the kind's part of the
    series' mean error (the shares of a series add up to it)."""

    kind: str
    predicted_s: float
    measured_s: float
    share: float

    def model_dump(self) -> dict:
        return {"kind": self.kind, "predicted_s": self.predicted_s, "measured_s": self.measured_s,
                "share": self.share}


def kind_times(p: Point, hardware) -> Optional[tuple]:
    """(source, predicted, measured) of a point profiled with ``--ops``: seconds per call by op kind,
    plus ``REST``, each side adding up to its layer time; None without op times or a prediction.

    ``source`` "device" (a CUDA run): the kernels' device times, beside the kernels' predicted device
    times (``timing.predict`` in graph mode), REST the rest of the layer's time (eager: the device
    waiting for the host). "host" (CPU, MPS): the aten ops' host self times, beside each kernel's
    share of the prediction in the point's own exec mode; where the point has the profiled call's
    own time (``op_call_s``), in proportion to the layer's measured time (``profiled_ratio``: the
    profiler's cost lengthens the ops it times, and the unscaled times can add up to more than the
    layer took). The prediction prices the point as it ran (``as_run.kernel_parts``); kernels are
    counted by ``opkinds.graph_kind``."""
    found = _kind_times(p, hardware)
    return found and found[:3]


def _kind_times(p: Point, hardware) -> Optional[tuple]:
    """``kind_times`` and the parts of the layer as it ran (``as_run.kernel_parts``) it priced."""
    measured = p.op_device_times if p.op_device_times is not None else p.op_times
    if not measured or p.status != "ok" or p.timing is None or p.timing.median_s <= 0 or hardware is None:
        return None
    source = "host" if p.op_device_times is None else "device"
    how = dict(backend=p.backend, compute_dtype=p.compute_dtype)
    try:
        whole = kernel_parts(p.variant, p.shape, p.params, hardware, mode=p.exec_mode, **how)
        parts = whole if source == "host" else kernel_parts(p.variant, p.shape, p.params, hardware, mode="graph",
                                                             **how)
    except ValueError:  # VariantError, HardwareError: the point cannot be priced with this profile
        return None
    if not whole or not parts:
        return None
    predicted: dict = {}
    for kernels, te in parts:
        for k, kt in zip(kernels, te.per_kernel):
            kind = graph_kind(k)
            if kind in (CALL, AUTOGRAD):  # outside any aten op: measured in REST, so predicted there too
                continue
            predicted[kind] = predicted.get(kind, 0.0) + kt.time_s
    total = sum(te.time_s for _, te in whole)
    rest = total - sum(predicted.values())
    predicted[REST] = rest if abs(rest) > 1e-9 * total else 0.0  # (rounding, where the kernels are all of it)
    ratio = profiled_ratio(p) if source == "host" else None
    measured = {k: v / (ratio or 1.0) for k, v in measured.items()}
    measured[REST] = p.timing.median_s - sum(measured.values())
    return source, predicted, measured, whole


def profiled_ratio(p: Point) -> Optional[float]:
    """How much longer a call of the point took under torch.profiler than timed alone (``op_call_s``
    over the measured median); None where the point has no profiled call time."""
    if not p.op_call_s or p.timing is None or p.timing.median_s <= 0:
        return None
    return p.op_call_s / p.timing.median_s


def by_op(run: Run, hardware=None) -> dict:
    """series (``label``) -> {"points", "source", "error" (mean signed error of its points, priced as
    they ran), "rows" ([``KindTime``] in ``KIND_ORDER``), "largest" (the kind of the largest
    |share|: what made the series off), "profiled_ratio" (the median of its host points'
    ``profiled_ratio``, or None), "faults" (bytes faulted in per call, the mean over its points that
    counted them: {"measured", "priced"}, or None)} for the points profiled with ``--ops``.
    ``hardware``: default the run's own profile."""
    hardware = hardware if hardware is not None else run.hardware
    groups: dict = {}
    faults: dict = {}  # series -> [(bytes faulted in per call, bytes its prediction faults in)]
    for p in run.points:
        found = _kind_times(p, hardware)
        if found is None:
            continue
        groups.setdefault(label(p), []).append((p, *found[:3]))
        if p.fault_bytes is not None:
            priced = sum(fresh_output_bytes(ks, hardware, p.shape.dtype) for ks, _ in found[3])
            faults.setdefault(label(p), []).append((p.fault_bytes, priced))
    out = {name: _series_by_op(points) for name, points in groups.items()}
    for name, s in out.items():
        counted = faults.get(name)
        s["faults"] = {"measured": statistics.fmean(m for m, _ in counted),
                       "priced": statistics.fmean(pr for _, pr in counted)} if counted else None
    return out


def _series_by_op(points: list) -> dict:
    n = len(points)
    kinds = [k for k in KIND_ORDER if any(k in pred or k in meas for _, _, pred, meas in points)]
    rows = []
    for k in kinds:
        pred = [pr.get(k, 0.0) for _, _, pr, _ in points]
        meas = [me.get(k, 0.0) for _, _, _, me in points]
        shares = [(a - b) / p.timing.median_s for (p, *_), a, b in zip(points, pred, meas)]
        rows.append(KindTime(k, sum(pred) / n, sum(meas) / n, sum(shares) / n))
    error = sum(sum(pr.values()) / p.timing.median_s - 1.0 for p, _, pr, _ in points) / n
    largest = max(rows, key=lambda r: abs(r.share)).kind if rows else None
    sources = sorted({source for _, source, _, _ in points})
    ratios = [r for r in (profiled_ratio(p) for p, source, _, _ in points if source == "host") if r]
    return {"points": n, "source": "+".join(sources), "error": error, "rows": rows, "largest": largest,
            "profiled_ratio": statistics.median(ratios) if ratios else None}
