"""What a report shows, gathered from Runs or Estimates: series over T, crossovers, findings.

No cost logic here: every number comes from a Run's points or from ``costmodel.estimate`` and
``costmodel.evaluate``. This module only groups, pairs and phrases them. Strings are kept raw;
the page and the figures escape them where they are rendered.
"""

import math
import statistics
from dataclasses import dataclass, field
from typing import Optional

from ..costmodel.accuracy import against_peers, crossings, pace_ratio
from ..costmodel.crossover import cheaper
from ..costmodel.estimate import Estimate, resolve_params
from ..costmodel.evaluate import evaluate
from ..costmodel.results import OOM_STATUSES, Counts, Run, Timing
from ..costmodel.shape import Shape
from ..costmodel.variants import REGISTRY
from . import fmt
from .hardware import HardwareInfo, estimate_on, hardware_info, run_hardware

# The parameter named in a variant's label even when it has its default value.
KEY_PARAM = {"dsa": "k", "mla": "kv_lora_rank", "msla": "latents", "topk": "k"}
_SHAPE_LABEL = {"batch": "B", "d": "d", "heads": "heads", "kv_heads": "kv_heads", "dtype": "",
                "causal": "causal", "phase": ""}


# -- points and series ---------------------------------------------------------------------

@dataclass
class Row:
    """One point: a measured Point beside the cost model's estimate, or a prediction alone."""

    variant: str
    params: dict
    shape: Shape
    status: str = "ok"
    message: Optional[str] = None
    est: Optional[Estimate] = None
    predicted_time_s: Optional[float] = None
    predicted_flops: Optional[float] = None
    timing: Optional[Timing] = None
    peak_memory_bytes: Optional[float] = None
    counts: Optional[Counts] = None
    backend: Optional[str] = None
    exec_mode: str = "eager"  # how the point ran (``timing.MODES``)
    predicted_other_s: Optional[float] = None  # its prediction in the other exec mode
    pace_ratio: Optional[float] = None  # the machine's pace beside it against the calibration's (accuracy.pace_ratio)

    @property
    def T(self) -> int:
        return self.shape.T

    @property
    def flops(self) -> Optional[float]:
        if self.predicted_flops is not None:
            return self.predicted_flops
        return self.est.flops if self.est is not None and self.est.status == "ok" else None

    @property
    def measured_s(self) -> Optional[float]:
        return self.timing.median_s if self.status == "ok" and self.timing else None


@dataclass
class Source:
    """One run (or one prediction sweep): its label, its hardware, where it came from."""

    index: int
    label: str
    run: Optional[Run] = None
    path: Optional[str] = None
    hardware: Optional[HardwareInfo] = None
    dtype: str = "bf16"
    command: str = ""
    rows: list = field(default_factory=list)


@dataclass
class Series:
    """The rows of one (source, variant, params, shape but T) over T, sorted by T."""

    source: Source
    variant: str
    params: dict
    shape: Shape  # the first row's shape: everything but T is common
    label: str = ""  # name · shape_text · run label, each where needed to tell series apart
    style: int = 0
    rows: list = field(default_factory=list)
    name: str = ""  # variant(params)
    shape_text: str = ""  # the shape fields that differ between series ("d=1024")
    local_label: str = ""  # the label among the series of its own source (sentences "on <run>")
    local_shape_text: str = ""  # the shape fields that differ between the series of its source
    run: str = ""  # its run's name where several runs share the report (for hover text), else ""

    @property
    def family(self) -> str:
        """exact, latent, low-rank, learned (``Variant.family``), or "other" for an unknown variant."""
        return REGISTRY[self.variant].family if self.variant in REGISTRY else "other"

    def values(self, what: str) -> list:
        """[(T, value)] for what in: measured, predicted, flops (skipping missing values)."""
        out = []
        for r in self.rows:
            if what == "measured":
                v = r.measured_s
            elif what == "predicted":
                v = r.predicted_time_s
            elif what == "flops":
                v = r.flops
            else:
                raise ValueError(what)
            if v is not None and v > 0:
                out.append((r.T, v))
        return out


@dataclass
class ReportData:
    kind: str  # "run" | "prediction"
    sources: list
    series: list
    baseline: str
    heatmap_variant: Optional[str]
    title: str
    _model_crossovers: Optional[list] = None

    @property
    def rows(self) -> list:
        return [r for s in self.sources for r in s.rows]

    def baseline_for(self, s: Series) -> Optional[Series]:
        if s.variant == self.baseline:
            return None
        for b in self.series:
            if (b.source is s.source and b.variant == self.baseline and _base_key(b.shape) == _base_key(s.shape)
                    and b.rows[0].exec_mode == s.rows[0].exec_mode):
                return b
        return None


def _base_key(shape: Shape) -> tuple:
    d = shape.model_dump()
    d.pop("T")
    return tuple(sorted(d.items()))


def params_label(variant: str, params: dict, shape: Shape) -> str:
    """"linformer(k=256)": the variant's key parameter and any that differ from its defaults."""
    if not params:
        return variant
    try:
        defaults = resolve_params(variant, shape).model_dump()
    except ValueError:  # an unknown variant or one that does not apply at this shape: no defaults
        defaults = {}
    key = KEY_PARAM.get(variant)
    if key is None and variant in REGISTRY:
        fields = list(REGISTRY[variant].params.model_fields)
        key = fields[0] if fields else None
    shown = [(k, v) for k, v in params.items() if k == key or defaults.get(k, object()) != v]
    if not shown:
        return variant
    return f"{variant}(" + ", ".join(f"{k}={v}" for k, v in shown) + ")"


def _unique_labels(labels: list) -> list:
    seen: dict = {}
    out = []
    for lab in labels:
        n = seen.get(lab, 0) + 1
        seen[lab] = n
        out.append(lab if n == 1 else f"{lab} #{n}")
    return out


def run_label(run: Run, path: Optional[str]) -> str:
    env = run.environment
    if run.name:
        return run.name
    if env.device_name:
        return env.device_name
    if path:
        return path.rsplit("/", 1)[-1]
    return env.device or "run"


def from_runs(runs: list, paths: Optional[list] = None, hardware=None, baseline: str = "flash",
              heatmap_variant: Optional[str] = None) -> ReportData:
    """The report's data from measured runs; ``hardware`` overrides the profile each run was
    predicted with (``hardware.run_hardware``)."""
    paths = list(paths or [None] * len(runs))
    labels = _unique_labels([run_label(r, p) for r, p in zip(runs, paths)])
    override = hardware_info(hardware)
    sources = []
    for i, (run, path, label) in enumerate(zip(runs, paths, labels)):
        hw = override or run_hardware(run)
        src = Source(i, label, run, path, hw, run.dtype, run.command)
        for p in run.points:
            if p.cp or p.tp:  # split over several processes: the parallel section draws it
                continue
            est = estimate_on(p.variant, p.shape, p.params, hw) if p.status != "n/a" else None
            pred_t = p.predicted_time_s
            if pred_t is None and est is not None:
                pred_t = est.time_s
            src.rows.append(Row(p.variant, dict(p.params), p.shape, p.status, p.message, est, pred_t,
                                p.predicted_flops, p.timing, p.peak_memory_bytes, p.counts, p.backend,
                                p.exec_mode, p.predicted_time_other_s, pace_ratio(p, run.hardware)))
        sources.append(src)
    title = "attncost report: " + ", ".join(labels)
    return _finish("run", sources, baseline, heatmap_variant, title)


def from_estimates(estimates: list, hardware=None, command: str = "", baseline: str = "flash",
                   heatmap_variant: Optional[str] = None) -> ReportData:
    """The report's data from a prediction sweep (a list of Estimate)."""
    hw = hardware_info(hardware)
    label = f"predicted for {hw.name}" if hw else "predicted"
    src = Source(0, label, None, None, hw, estimates[0].shape.dtype if estimates else "bf16", command)
    for e in estimates:
        src.rows.append(Row(e.variant, dict(e.params), e.shape, e.status, e.reason, e,
                            e.time_s if e.status == "ok" else None, e.flops if e.status == "ok" else None))
    return _finish("prediction", [src], baseline, heatmap_variant, "attncost prediction report")


def _finish(kind: str, sources: list, baseline: str, heatmap_variant: Optional[str], title: str) -> ReportData:
    series: dict = {}
    for src in sources:
        for r in src.rows:
            if r.status == "n/a":
                continue
            key = (src.index, r.variant, repr(sorted(r.params.items())), _base_key(r.shape), r.exec_mode)
            s = series.get(key)
            if s is None:
                s = series[key] = Series(src, r.variant, r.params, r.shape)
            s.rows.append(r)
    out = list(series.values())
    for s in out:
        s.rows.sort(key=lambda r: r.T)
    _label(out)
    # Style index: series of one variant differ by dash and symbol.
    per_variant: dict = {}
    for s in out:
        s.style = per_variant.get(s.variant, 0)
        per_variant[s.variant] = s.style + 1
    if heatmap_variant is None:
        heatmap_variant = _pick_heatmap_variant(out, baseline)
    return ReportData(kind, sources, out, baseline, heatmap_variant, title)


def varying_fields(shapes: list) -> set:
    """The shape fields (but T) whose value differs between ``shapes``."""
    dumps = [sh.model_dump() for sh in shapes]
    return {f for f in _SHAPE_LABEL if len({repr(d[f]) for d in dumps}) > 1}


def shape_text(shape: Shape, fields: set) -> str:
    """The ``fields`` of ``shape`` as a series label names them: "d=1024 decode"."""
    sh = shape.model_dump()
    return " ".join(f"{name}={sh[f]}" if name else str(sh[f]) for f, name in _SHAPE_LABEL.items() if f in fields)


def _label(series: list) -> None:
    """Each series' labels: variant(params), the shape fields that tell it from the others, its
    exec mode where not eager, and its run's name only where another run has a series of the same
    label (``local_label``: among the series of its own run, for sentences that name the run)."""
    varying = varying_fields([s.shape for s in series])
    per_source: dict = {}
    for s in series:
        per_source.setdefault(s.source.index, []).append(s.shape)
    local = {i: varying_fields(shapes) for i, shapes in per_source.items()}
    for s in series:
        s.name = params_label(s.variant, s.params, s.shape)
        mode = [f"{s.rows[0].exec_mode} mode"] if s.rows[0].exec_mode != "eager" else []
        s.shape_text = shape_text(s.shape, varying)
        s.local_shape_text = shape_text(s.shape, local[s.source.index])
        s.label = " · ".join([s.name] + ([s.shape_text] if s.shape_text else []) + mode)
        s.local_label = " · ".join([s.name] + ([s.local_shape_text] if s.local_shape_text else []) + mode)
    sources_of: dict = {}
    for s in series:
        sources_of.setdefault(s.label, set()).add(s.source.index)
    several = len({s.source.index for s in series}) > 1
    for s in series:
        s.run = s.source.label if several else ""
        if len(sources_of[s.label]) > 1:
            s.label += " · " + s.source.label


def _pick_heatmap_variant(series: list, baseline: str) -> Optional[str]:
    """The first variant with a crossover against the baseline, else the first other variant."""
    others = [s for s in series if s.variant != baseline and s.variant in REGISTRY]
    for s in others:
        b = next((x for x in series if x.source is s.source and x.variant == baseline
                  and _base_key(x.shape) == _base_key(s.shape)), None)
        if b is None:
            continue
        for what in ("predicted", "flops"):
            if intersections(s.values(what), b.values(what)):
                return s.variant
    return others[0].variant if others else None


# -- crossovers and findings ----------------------------------------------------------------

def paired(a: list, b: list) -> list:
    """[(T, a, b)] at the T values both have."""
    bd = dict(b)
    return [(T, v, bd[T]) for T, v in a if T in bd]


def intersections(a: list, b: list) -> list:
    """Where measured or predicted curve ``a`` crosses curve ``b`` between their common T values:
    ``costmodel.accuracy.crossings``, [(T, value, "below" | "above")]. Not the cost model's search
    over T (``model_crossovers``)."""
    return crossings(a, b)


def _join(names: list) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _comparison(pts: list) -> tuple:
    """Classify [(T, a, b)]: ("always"|"never"|"from"|"until"|"mixed", detail)."""
    faster = [a < b for _, a, b in pts]
    Ts = [T for T, _, _ in pts]
    if all(faster):
        return "always", None
    if not any(faster):
        return "never", None
    first = faster.index(True)
    if all(faster[first:]):
        return "from", Ts[first]
    last = len(faster) - 1 - faster[::-1].index(True)
    if all(faster[: last + 1]):
        return "until", Ts[last]
    return "mixed", [T for T, f in zip(Ts, faster) if f]


def findings(data: ReportData) -> list:
    """The headline findings, in words, computed from the data."""
    out = []
    for src in data.sources:
        where = f" on {src.label}" if len(data.sources) > 1 else ""
        if data.kind == "run":  # measured (or the run's recorded predictions) over its T values
            out.extend(_versus_baseline(data, src, where))
        out.extend(_model_crossover_finding(data, src, where))
        if data.kind == "run":
            out.extend(_fastest(data, src, where))
            out.extend(_failures(src, where))
    if data.kind == "run":
        out.extend(_model_error_finding(data))
        out.extend(_crosscheck_finding(data))
    if not out:
        out.append("No comparison can be drawn from these data: no variant has two or more points "
                   f"beside the baseline ({data.baseline}).")
    return out


_BASIS = {"measured": "measured", "predicted": "predicted by the model", "flops": "FLOPs"}


def _verb(what: str, plural: bool, never: bool = False) -> str:
    if what == "flops":
        v = ("need" if plural else "needs") + " fewer FLOPs than"
    else:
        v = "beat" if plural else "beats"
    return ("never " + v) if never else v


def _versus_baseline(data: ReportData, src: Source, where: str) -> list:
    """Each variant against the baseline over T: measured where two or more T values were
    measured for both, else predicted time, else FLOPs."""
    out = []
    groups: dict = {}
    for s in data.series:
        if s.source is not src:
            continue
        b = data.baseline_for(s)
        if b is None:
            continue
        for what in ("measured", "predicted", "flops"):
            pts = paired(s.values(what), b.values(what))
            if len(pts) >= 2:
                break
        else:
            continue
        kind, detail = _comparison(pts)
        lo, hi = fmt.count(pts[0][0]), fmt.count(pts[-1][0])
        basis = f"{_BASIS[what]} at {len(pts)} T values from {lo} to {hi}"
        if kind in ("never", "always"):
            groups.setdefault((kind, what, lo, hi, b.name), []).append(s.local_label)
        elif kind == "from":
            cross = intersections(s.values(what), b.values(what))
            near = f"; the curves cross near T ≈ {fmt.count(cross[-1][0])}" if cross else ""
            out.append(f"{s.local_label} {_verb(what, False)} {b.name} from T = {fmt.count(detail)}{where} "
                       f"({basis}{near}).")
        elif kind == "until":
            out.append(f"{s.local_label} {_verb(what, False)} {b.name} only up to T = {fmt.count(detail)}{where} "
                       f"({basis}).")
        else:
            out.append(f"{s.local_label} {_verb(what, False)} {b.name} only at T = "
                       f"{_join([fmt.count(t) for t in detail])}{where} ({basis}).")
    for (kind, what, lo, hi, blabel), names in groups.items():
        plural = len(names) > 1
        span = f"{_BASIS[what]}, T = {lo} to {hi}" if lo != hi else f"{_BASIS[what]}, T = {lo}"
        if kind == "never":
            out.append(f"{_join(names)} {_verb(what, plural, never=True)} {blabel}{where} ({span}).")
        else:
            out.append(f"{_join(names)} {_verb(what, plural)} {blabel} at every T{where} ({span}).")
    return out


def model_crossover(data: ReportData, s: Series, cache: Optional[dict] = None) -> Optional[tuple]:
    """The cost model's ranges of T where series ``s`` is cheaper than the baseline, searched from
    16 to 4,194,304 tokens with the series' T values among the samples (``costmodel.evaluate``):
    (metric, [(start, first T after it where no longer cheaper, or None)]). Time with the source's
    hardware profile, else FLOPs. A prediction's estimates carry them; a run's series is evaluated
    here (``cache``: shared by the series of one source). None where the model cannot evaluate it."""
    if s.variant not in REGISTRY or data.baseline not in REGISTRY or s.variant == data.baseline:
        return None
    ests = [r.est for r in s.rows if r.est is not None and r.est.status == "ok"]
    metric = "time" if ests and ests[0].time_s is not None else "flops"
    if not ests or ests[0].baseline != data.baseline or metric not in ests[0].cheaper_ranges_T:
        hw = s.source.hardware.profile if s.source.hardware is not None else None
        try:
            ests = [e for e in evaluate([s.variant], data.baseline, [r.shape for r in s.rows], {s.variant: s.params},
                                        hw, ("time",) if hw is not None else ("flops",), cache) if e.status == "ok"]
        except (ValueError, TypeError):  # VariantError, pydantic's ValidationError, params of the wrong kind
            return None
    if not ests:
        return None
    metric = "time" if ests[0].time_s is not None else "flops"
    return metric, [tuple(r) for r in ests[0].cheaper_ranges_T[metric]]


def model_crossovers(data: ReportData) -> list:
    """[(series, metric, ranges)] (``model_crossover``) for every series but the baseline's,
    computed once per report."""
    if data._model_crossovers is None:
        caches: dict = {}  # source index -> estimates shared by its series (one hardware profile)
        data._model_crossovers = [(s,) + mc for s in data.series
                                  for mc in [model_crossover(data, s, caches.setdefault(s.source.index, {}))]
                                  if mc is not None]
    return data._model_crossovers


def _model_crossover_finding(data: ReportData, src: Source, where: str) -> list:
    """One sentence per shape: where each variant becomes cheaper than the baseline."""
    by_shape: dict = {}
    for s, metric, found in model_crossovers(data):
        if s.source is src:
            by_shape.setdefault(s.local_shape_text, []).append((s, metric, found))
    out = []
    for shape_text, items in by_shape.items():
        metrics = {m for _, m, _ in items}
        time_only = metrics == {"time"}
        what = "predicted time" if time_only else "FLOPs" if metrics == {"flops"} else "predicted time or FLOPs"
        hw = f" on {src.hardware.name}" if src.hardware is not None and "time" in metrics else ""
        ranges, never = [], []
        for s, _, found in items:
            if not found:
                never.append(s.name)
            else:
                spans = [f"from T = {fmt.count(a)}" + (f" to {fmt.count(b - 1)}" if b is not None else "")
                         for a, b in found]
                ranges.append((found[0][0], s.name, " and ".join(spans)))
        width = [] if any(w.startswith("d=") for w in shape_text.split()) else [
            f"d = {fmt.count(items[0][0].shape.d)}"]
        at = " at " + " ".join([shape_text] + width if shape_text else width)
        text = f"By the cost model ({what}{hw}, searching T from 16 to {fmt.count(4194304)}){at}{where}, "
        if ranges:
            ranges.sort()
            (_, name, span), *rest = ranges
            text += (f"{name} {'is faster' if time_only else 'is cheaper'} than {data.baseline} {span}"
                     + "".join(f"; {n} {sp}" for _, n, sp in rest))
            if never:
                text += f"; never: {_join(never)}"
        else:
            text += f"{_join(never)} never {'beats' if len(never) == 1 else 'beat'} {data.baseline}"
        out.append(text + ".")
    return out


def _fastest(data: ReportData, src: Source, where: str) -> list:
    best: dict = {}
    for s in data.series:
        if s.source is not src:
            continue
        for T, v in s.values("measured"):
            best.setdefault(T, []).append((v, s.local_label))
    if not best:
        return []
    T = max(best)
    ranked = sorted(best[T])
    if len(ranked) < 2:
        return []
    top = ", then ".join(f"{lab} ({fmt.ms(v)})" for v, lab in ranked[:3])
    return [f"At the longest measured sequence, T = {fmt.count(T)}{where}, the fastest is {top}."]


def _failures(src: Source, where: str) -> list:
    out = []
    ooms: dict = {}
    errors = []
    for r in src.rows:
        if r.status in OOM_STATUSES:
            ooms.setdefault((r.variant, r.status), []).append(r.T)
        elif r.status == "error":
            errors.append(r)
    for (variant, status), Ts in ooms.items():
        what = "ran out of memory" if status == "oom" else "was not run (predicted not to fit in memory)"
        out.append(f"{variant} {what}{where} at T = {', '.join(fmt.count(t) for t in sorted(Ts))}.")
    if errors:
        first = errors[0]
        text = (first.message or "").strip()
        msg = text.splitlines()[0][:120] if text else "no message"
        out.append(f"{len(errors)} point{'s' if len(errors) > 1 else ''} failed with an error{where} "
                   f"(first: {first.variant} at T = {fmt.count(first.T)}: {msg}).")
    return out


def error_rows(data: ReportData) -> list:
    """[(series, row, predicted_s, measured_s, relative error)] for measured points."""
    out = []
    for s in data.series:
        for r in s.rows:
            m, p = r.measured_s, r.predicted_time_s
            if m and p:
                out.append((s, r, p, m, p / m - 1.0))
    return out


def within_shape(rows: list) -> list:
    """Each ``error_rows`` row's error within its shape: against the median error of the points of its run,
    shape and execution mode (``accuracy.within_shape``: what neither the machine's pace nor the
    calibration's level explains); None where the shape has too few points."""
    return against_peers([(id(s.source), r.shape.model_dump_json(), r.exec_mode) for s, r, *_ in rows],
                         [e for *_, e in rows])


def error_by_series(data: ReportData) -> list:
    """[(series, n, median signed error, median |error|, median signed error within its shapes or None)]."""
    rows = error_rows(data)
    by: dict = {}
    for (s, r, p, m, e), w in zip(rows, within_shape(rows)):
        by.setdefault(id(s), (s, [], []))[1].append(e)
        if w is not None:
            by[id(s)][2].append(w)
    return [(s, len(es), statistics.median(es), statistics.median(abs(e) for e in es),
             statistics.median(ws) if ws else None) for s, es, ws in by.values()]


def _model_error_finding(data: ReportData) -> list:
    rows = error_rows(data)
    errs = [e for *_, e in rows]
    if not errs:
        return []
    med = statistics.median(abs(e) for e in errs)
    within = sum(abs(e) <= 0.25 for e in errs)
    text = (f"The model's median time error is {fmt.pct(med, signed=False)} over {len(errs)} measured "
            f"point{'s' if len(errs) > 1 else ''}; {within} of {len(errs)} are within ±25%.")
    peers = [abs(w) for w in within_shape(rows) if w is not None]
    if peers:
        text += (f" Against the other variants of its shape (measured together), a point's median |error| is "
                 f"{fmt.pct(statistics.median(peers), signed=False)}.")
    per = error_by_series(data)
    if len(per) > 1:
        worst = max(per, key=lambda x: x[3])
        text += f" It is furthest off for {worst[0].label} (median {fmt.pct(worst[2])})."
    return [text]


def model_notes(data: ReportData) -> list:
    """The cost model's notes on the variants shown (not causal by nature, still quadratic, ...)."""
    seen: dict = {}
    for s in data.series:
        for r in s.rows:
            if r.est is not None:
                for n in r.est.notes:
                    if n != "causal" and not n.startswith("causal (fused"):
                        seen.setdefault(f"{s.variant}: {n}" if not n.startswith(s.variant) else n, None)
                break
    return list(seen)


def crosscheck_rows(data: ReportData) -> list:
    return [(s, r) for s in data.series for r in s.rows if r.counts is not None]


def _crosscheck_finding(data: ReportData) -> list:
    rows = crosscheck_rows(data)
    if not rows:
        return []
    out = []
    for attr, name, ref, what in (
            ("flop_counter", "FlopCounterMode", flop_counter_reference,
             "the analytic matmul count (fused cores dense, as it counts them)"),
            ("fvcore", "fvcore", lambda c: c.analytic, "the analytic count")):
        vals = [(ref(r.counts), getattr(r.counts, attr)) for _, r in rows if getattr(r.counts, attr) is not None]
        if not vals:
            continue
        agree = sum(abs(c - a) <= 0.01 * max(abs(a), 1.0) for a, c in vals)
        out.append(f"{name} agrees with {what} within 1% on {agree} of {len(vals)} points.")
    return out


def flop_counter_reference(c: Counts) -> float:
    """What FlopCounterMode should count: matmuls only, fused attention dense (older files lack
    the dense figure: the matmul count then)."""
    return c.analytic_matmul_dense if c.analytic_matmul_dense is not None else c.analytic_matmul


# -- what decode keeps ------------------------------------------------------------------------

@dataclass
class KvLine:
    """The KV cache (or recurrent state) decode keeps per sequence, for one variant, parameters
    and shape (but T and phase), over T: [(T, bytes per sequence, decode Estimate)]."""

    variant: str
    label: str
    points: list
    state: bool = False  # a fixed-size state (performer) rather than a cache that grows with T


@dataclass
class KvData:
    lines: list  # [KvLine]
    no_decode: list  # labels of variants without a decode path: no cache to speak of
    keeps_nothing: list  # labels of variants whose decode keeps nothing


def _decode_estimate(r: Row, params: dict) -> Optional[Estimate]:
    """The cost model's decode step after ``r.T`` tokens: the row's own estimate where it is one."""
    if r.shape.phase == "decode" and r.est is not None and r.est.status == "ok":
        return r.est
    try:
        shape = r.shape.with_(phase="decode")
    except ValueError:  # a shape decode cannot take: no cache figure
        return None
    return estimate_on(r.variant, shape, params, None)


def kv_data(data: ReportData) -> KvData:
    """What decode keeps after T tokens, per sequence and layer, for every series' variant at its
    T values, by ``costmodel.estimate`` at the decode shape (``Estimate.kv_cache_bytes``): capped
    where the variant keeps a window, fixed where it keeps a state. Prefill and decode series of one
    variant and shape give one line; so do the same series of several runs."""
    groups: dict = {}
    for s in data.series:
        if s.variant not in REGISTRY:
            continue
        key = (s.variant, repr(sorted(s.params.items())), _base_key(s.shape.with_(phase="decode")))
        rows = groups.setdefault(key, (s, {}))[1]
        for r in s.rows:
            rows.setdefault(r.T, r)
    fields = varying_fields([s.shape for s, _ in groups.values()]) - {"phase"}
    out = KvData([], [], [])
    for s, rows in groups.values():
        text = shape_text(s.shape, fields)
        label = s.name + (f" · {text}" if text else "")
        if not REGISTRY[s.variant].decode:
            out.no_decode.append(label)
            continue
        pts = []
        for T, r in sorted(rows.items()):
            e = _decode_estimate(r, s.params)
            if e is not None and e.status == "ok":
                pts.append((T, e.kv_cache_bytes / e.shape.batch, e))
        if pts and not any(b for _, b, _ in pts):
            out.keeps_nothing.append(label)
        elif pts:
            out.lines.append(KvLine(s.variant, label, pts, state=not any(e.kv_cache_bytes_per_token for *_, e in pts)))
    return out


# -- the speedup grid ------------------------------------------------------------------------

@dataclass
class Grid:
    variant: str
    baseline: str
    label: str
    metric: str  # "time" | "flops"
    Ts: list
    ds: list
    speedup: list  # [d][T] baseline / variant, None where n/a
    variant_values: list
    baseline_values: list
    shape: Shape
    hardware: Optional[str]
    data_ds: tuple = ()  # the widths of the data's series of the variant: the crossover tables' widths


def speedup_grid(data: ReportData, Ts: Optional[list] = None, ds: Optional[list] = None) -> Optional[Grid]:
    """Baseline cost / variant cost over d x T by the cost model (time with a hardware profile,
    else FLOPs), heads scaled with d so the head dim stays that of the data."""
    variant = data.heatmap_variant
    if variant is None or variant not in REGISTRY or data.baseline not in REGISTRY:
        return None
    ref = next((s for s in data.series if s.variant == variant), None)
    shape = ref.shape if ref else (data.series[0].shape if data.series else Shape(T=4096, d=2048))
    src = ref.source if ref else (data.sources[0] if data.sources else None)
    hw = src.hardware if src else None
    explicit = {}
    if ref:
        try:
            defaults = resolve_params(variant, ref.shape).model_dump()
        except ValueError:  # parameters out of range at this shape: all of them are explicit
            defaults = {}
        explicit = {k: v for k, v in ref.params.items() if defaults.get(k, object()) != v}
    all_T = sorted({r.T for r in data.rows}) or [4096]
    if Ts is None:
        lo = min(min(all_T), 1024)
        hi = max(max(all_T), 32768)
        Ts = []
        t = 2 ** max(6, math.floor(math.log2(lo)))
        while t <= hi and len(Ts) < 14:
            Ts.append(t)
            t *= 2
    dh = shape.head_dim
    if ds is None:
        ds = sorted({256, 512, 1024, 2048, 4096, 8192} | {s.shape.d for s in data.series})
    ds = [d for d in ds if d % dh == 0 and d >= dh]
    base = shape.model_dump()
    base.pop("kv_heads", None)
    metric = "flops"
    if hw is not None and hw.profile is not None:
        probe = estimate_on(data.baseline, shape, {}, hw)
        if probe is not None and probe.time_s:
            metric = "time"
    hw_m = hw if metric == "time" else None
    rows_s, rows_v, rows_b = [], [], []
    for d in ds:
        zs, vs, bs = [], [], []
        for T in Ts:
            try:
                sh = Shape(**{**base, "T": T, "d": d, "heads": d // dh})
            except ValueError:
                sh = None
            v = _metric(estimate_on(variant, sh, explicit, hw_m), metric) if sh else None
            b = _metric(estimate_on(data.baseline, sh, {}, hw_m), metric) if sh else None
            zs.append(b / v if v and b else None)
            vs.append(v)
            bs.append(b)
        rows_s.append(zs)
        rows_v.append(vs)
        rows_b.append(bs)
    label = params_label(variant, ref.params, shape) if ref else variant
    data_ds = tuple(sorted({s.shape.d for s in data.series if s.variant == variant} or {shape.d}))
    return Grid(variant, data.baseline, label, metric, Ts, ds, rows_s, rows_v, rows_b, shape,
                hw.name if hw_m else None, data_ds)


def grid_faster(grid: Grid) -> list:
    """[(d, [(first T, last T)])]: per width of the grid, the runs of its T values where the variant
    is cheaper than the baseline (``costmodel.crossover.cheaper``)."""
    out = []
    for d, vs, bs in zip(grid.ds, grid.variant_values, grid.baseline_values):
        runs: list = []  # [first index, last index]
        for j, (v, b) in enumerate(zip(vs, bs)):
            if not cheaper(v, b):
                continue
            if runs and runs[-1][1] == j - 1:
                runs[-1][1] = j
            else:
                runs.append([j, j])
        out.append((d, [(grid.Ts[a], grid.Ts[b]) for a, b in runs]))
    return out


def _metric(e: Optional[Estimate], metric: str) -> Optional[float]:
    if e is None or e.status != "ok":
        return None
    v = e.time_s if metric == "time" else e.flops
    return v if v and v > 0 else None
