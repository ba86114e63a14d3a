"""The report's "Beyond one device" section: time per device against T on 1, 2, 4 and 8 devices
(``costmodel.parallel``: ring attention and Ulysses, or tensor parallelism where the runs measured it),
the measured distributed points (``attncost profile --cp N`` / ``--tp N``: the slowest rank's median)
beside them, and the share of each device's time spent in communication that compute does not hide."""

from dataclasses import dataclass, field
from typing import Optional


from ..costmodel.parallel import Layout, predict_parallel
from ..costmodel.shape import MAX_T, Shape
from . import fmt
from .colors import DASHES, SYMBOLS
from .data import ReportData
from .figures import AXIS, FONT, HEIGHT, log_axis
from .html import bullets, lead, note, plot_text
from .plotdict import PlotFigure, scatter

DEVICES = (1, 2, 4, 8)
N_COLORS = {1: "#444444", 2: "#1f77b4", 4: "#2ca02c", 8: "#d62728"}
SCHEME_NAMES = {"ring": "ring attention", "ulysses": "Ulysses", "tp": "tensor parallel"}
SPAN = 512  # the predicted lines reach at least SPAN times the smallest T


@dataclass
class Line:
    """The predicted time per device (and exposed communication share) of one scheme on ``n`` devices."""

    scheme: str
    n: int
    Ts: list = field(default_factory=list)
    time_s: list = field(default_factory=list)
    comm_share: list = field(default_factory=list)
    reason: Optional[str] = None  # why the model has no figures for it (the first T it refused)


@dataclass
class Measured:
    scheme: str
    n: int
    T: int
    time_s: float
    rank_times_s: list
    source: str


@dataclass
class ParallelData:
    variant: str
    shape: Shape
    hardware: Optional[str]
    lines: list
    measured: list


def _scheme(p) -> str:
    return "tp" if p.tp else p.cp_kind


def _layout(scheme: str, n: int) -> Layout:
    return Layout(tp=n) if scheme == "tp" else Layout(cp=n, cp_kind=scheme)


def distributed_points(data: ReportData) -> list:
    """(source, point) of every measured point of a run split over several processes."""
    return [(src, p) for src in data.sources if src.run is not None for p in src.run.points
            if (p.cp or p.tp) and p.timing is not None]


def _but_T(shape: Shape) -> dict:
    return {k: v for k, v in shape.model_dump().items() if k != "T"}


def _profile(data: ReportData):
    """The first source's hardware profile that has interconnect figures; None if none has."""
    for src in data.sources:
        hw = src.hardware.profile if src.hardware is not None else None
        if hw is not None and hw.interconnect is not None:
            return hw
    return None


def parallel_data(data: ReportData) -> Optional[ParallelData]:
    """The section's figures: for the distributed runs' variant and shape (else, in a prediction report,
    the baseline's first), the model's lines on a profile with interconnect figures. None for runs
    with no distributed point, and for a prediction on a profile without interconnect figures."""
    points = distributed_points(data)
    hw = _profile(data)
    if not points and (data.kind == "run" or hw is None):
        return None
    if points:
        first = points[0][1]
        variant, shape, params = first.variant, first.shape, first.params
        points = [(src, p) for src, p in points if p.variant == variant and p.params == params
                  and _but_T(p.shape) == _but_T(shape)]  # the first point's variant at its shape
        schemes = list(dict.fromkeys(_scheme(p) for _, p in points))
        Ts = sorted({p.shape.T for _, p in points})
    else:
        s = next((s for s in data.series if s.variant == data.baseline), data.series[0] if data.series else None)
        if s is None:
            return None
        variant, shape, params, schemes = s.variant, s.shape, s.params, ["ring", "ulysses"]
        Ts = [r.T for r in s.rows]
    measured = [Measured(_scheme(p), p.tp or p.cp, p.shape.T, p.timing.median_s, list(p.rank_times_s or []),
                         src.label) for src, p in points]
    lines = [] if hw is None else _lines(variant, shape, params, hw, schemes, _grid(Ts))
    return ParallelData(variant, shape, hw.name if hw is not None else None, lines, measured)


def _grid(Ts: list) -> list:
    """Powers of two from the smallest T to at least ``SPAN`` times it (and the largest T)."""
    lo, hi = max(16, min(Ts)), max(max(Ts), min(Ts) * SPAN)
    out, T = [], 1 << (lo - 1).bit_length()
    while T <= min(hi, MAX_T):
        out.append(T)
        T *= 2
    return out


def _lines(variant: str, shape: Shape, params: dict, hw, schemes: list, Ts: list) -> list:
    lines = [Line("one", 1)] + [Line(s, n) for s in schemes for n in DEVICES[1:]]
    for line in lines:
        lay = Layout() if line.n == 1 else _layout(line.scheme, line.n)
        for T in Ts:
            e = predict_parallel(variant, shape.with_(T=T), lay, hw, params or None)
            if e.status != "ok":
                line.reason = line.reason or e.reason
                continue
            line.Ts.append(T)
            line.time_s.append(e.time_s)
            line.comm_share.append(e.comm_share)
    return lines


def _label(scheme: str, n: int) -> str:
    return "1 device" if n == 1 else f"{n} devices, {SCHEME_NAMES[scheme]}"


def parallel_figure(par: ParallelData) -> PlotFigure:
    """Left: time per device against T (log-log); right: the exposed communication share."""
    fig = PlotFigure.subplots(rows=1, cols=2, column_widths=(0.6, 0.4), horizontal_spacing=0.1,
                        subplot_titles=("time per device", "communication not hidden, share of the time"))
    dash = {s: DASHES[i] for i, s in enumerate(dict.fromkeys(ln.scheme for ln in par.lines if ln.n > 1))}
    for ln in par.lines:
        if not ln.Ts:
            continue
        style = dict(color=N_COLORS.get(ln.n, "#777"), dash=dash.get(ln.scheme, "solid"), width=2)
        label = plot_text(_label(ln.scheme, ln.n))
        fig.add_trace(scatter(x=ln.Ts, y=[1e3 * t for t in ln.time_s], mode="lines", line=style, name=label, legendgroup=label,
                                 hovertext=[f"{label}<br>T={fmt.tokens(T)}: {fmt.ms(t)} per device"
                                            for T, t in zip(ln.Ts, ln.time_s)], hoverinfo="text"), row=1, col=1)
        if ln.n > 1:
            fig.add_trace(scatter(x=ln.Ts, y=[100 * c for c in ln.comm_share], mode="lines", line=style,
                                     name=label, legendgroup=label, showlegend=False, hoverinfo="text",
                                     hovertext=[f"{label}<br>T={fmt.tokens(T)}: {fmt.pct(c, signed=False)}"
                                                for T, c in zip(ln.Ts, ln.comm_share)]), row=1, col=2)
    for i, key in enumerate(dict.fromkeys((m.scheme, m.n) for m in par.measured)):
        ms_ = [m for m in par.measured if (m.scheme, m.n) == key]
        label = plot_text(_label(*key) + ", measured")
        fig.add_trace(scatter(
            x=[m.T for m in ms_], y=[1e3 * m.time_s for m in ms_], mode="markers", name=label,
            marker=dict(color=N_COLORS.get(key[1], "#777"), symbol=SYMBOLS[i % len(SYMBOLS)], size=9,
                        line=dict(color="#222", width=1)), hoverinfo="text",
            hovertext=[plot_text(f"{m.source}<br>T={fmt.tokens(m.T)}: {fmt.ms(m.time_s)} (slowest rank; by rank "
                                 f"{', '.join(fmt.ms(t) for t in m.rank_times_s)})") for m in ms_]), row=1, col=1)
    Ts = sorted({T for ln in par.lines for T in ln.Ts} | {m.T for m in par.measured})
    xaxis = {**AXIS, "type": "log", **(log_axis(Ts, fmt.tokens, base=2) or {}), "title": dict(text="T (tokens)")}
    fig.update_xaxes(**xaxis)
    fig.update_yaxes(**AXIS)
    ys = [1e3 * t for ln in par.lines for t in ln.time_s] + [1e3 * m.time_s for m in par.measured]
    fig.update_yaxes(**(log_axis(ys, fmt.ms_value) or {"type": "log"}), title=dict(text="time per device"),
                     row=1, col=1)
    fig.update_yaxes(title=dict(text="% of the time per device"), rangemode="tozero", row=1, col=2)
    fig.update_layout(template="plotly_white", font=dict(family=FONT, size=13), height=HEIGHT,
                      margin=dict(l=80, r=20, t=50, b=110), hovermode="closest",
                      legend=dict(orientation="h", y=-0.2, x=0, font=dict(size=11)))
    return fig


def _pays(par: ParallelData) -> list:
    """One sentence per line: the first plotted T where it beats one device."""
    one = next((ln for ln in par.lines if ln.n == 1), None)
    if one is None:
        return []
    single = dict(zip(one.Ts, one.time_s))
    out = []
    for ln in par.lines:
        if ln.n == 1:
            continue
        if not ln.Ts:
            out.append(f"{_label(ln.scheme, ln.n)}: not defined here ({ln.reason})")
            continue
        first = next((T for T, t in zip(ln.Ts, ln.time_s) if T in single and t < single[T]), None)
        out.append(f"{_label(ln.scheme, ln.n)}: " + (f"faster per device than one from T={fmt.tokens(first)}"
                                                     if first else "never faster than one device in this range"))
    return out


def parallel_html(page, par: ParallelData) -> str:
    """The section's HTML: the lead, where each split pays, the figure (``page.figure``), a note."""
    shape = par.shape
    where = f"on {par.hardware}" if par.hardware else "(no profile with interconnect figures: measured points only)"
    text = (f"{par.variant}, {shape.phase}, d {shape.d:,}, {shape.heads} heads, {shape.dtype}, {where}. "
            "Lines: the cost model's time per device, compute plus the communication that compute does not hide "
            "(ring attention overlaps its block transfers; Ulysses' all-to-alls and tensor parallelism's "
            "all-reduce do not overlap). Markers: runs split over several processes, the slowest rank's median.")
    measured_only = "" if par.lines else note("No prediction: no profile of the runs has interconnect figures "
                                              "(`attncost calibrate --nproc N` measures them).")
    return (lead(text) + bullets(_pays(par)) + measured_only + page.figure("fig-parallel", parallel_figure(par))
            + note("Collectives: alpha-beta costs of ring algorithms on the profile's links; compute: the "
                   "single-device model on each device's share. Train under context parallelism counts the "
                   "backward's K/V and dK/dV transfers. Ring attention's share is 0 where each block's compute "
                   "outlasts its transfer. See docs/PARALLEL.md."))
