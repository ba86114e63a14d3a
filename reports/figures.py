"""The report's plotly figures, built from ``ReportData`` (the fidelity chart is in
``fidelity_figure``). Every user string passes through ``plot_text`` before plotly sees it; hover
text is prebuilt per point (``hovertext``), never a template that could interpret a user's "%{...}"."""

import math
from typing import Optional

from ..costmodel.results import OOM_STATUSES
from . import fmt
from .colors import CROSSOVER_SYMBOL, ERROR_SYMBOL, OOM_SYMBOL, color_for, dash_for, symbol_for
from .data import Grid, KvData, KvLine, ReportData, Series, intersections
from .html import plot_text
from .panels import Panels, panels_for
from .plotdict import PlotFigure, colorscale, scatter, trace

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
HEIGHT = 520
AXIS = dict(showline=True, linecolor="#888", mirror=True, zeroline=False, gridcolor="#e8e8e8",
            ticks="outside", ticklen=4, tickcolor="#888")


def layout(title: str, x_title: str, y_title: str, xaxis: dict = None, yaxis: dict = None, **kw) -> dict:
    """The common layout; ``xaxis``/``yaxis`` are merged into the defaults (titles kept)."""
    out = dict(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=17)),
        template="plotly_white",
        font=dict(family=FONT, size=13),
        height=HEIGHT,
        margin=dict(l=90, r=20, t=60, b=64),
        hovermode="closest",
        hoverlabel=dict(font=dict(family=FONT, size=12), align="left"),
        legend=dict(font=dict(size=11), itemsizing="constant", tracegroupgap=1, itemclick="toggle",
                    itemdoubleclick="toggleothers"),
        xaxis={**AXIS, "title": dict(text=x_title), **(xaxis or {})},
        yaxis={**AXIS, "title": dict(text=y_title), **(yaxis or {})},
    )
    out.update(kw)
    return out


class _Legend:
    """One legend entry per label: the first trace with a label shows it, the others follow it
    (legendgroup), so that a series drawn in several traces or panels has one entry."""

    def __init__(self):
        self.groups: dict = {}

    def __call__(self, label: str) -> dict:
        first = label not in self.groups
        group = self.groups.setdefault(label, f"s{len(self.groups)}")
        return dict(name=plot_text(label), legendgroup=group, showlegend=first)


def _key(fig: PlotFigure, entries: list) -> None:
    """Grey legend entries that explain the line styles and markers: [(name, trace kwargs)]."""
    for name, kw in entries:
        fig.add_trace(scatter(x=[None], y=[None], name=name, legendrank=1, hoverinfo="skip", showlegend=True, **kw))


def place_legend(fig: PlotFigure, width: int = 1240) -> PlotFigure:
    """Long legend names squeeze the plot: put such a legend under it, and grow the figure by
    the rows it needs (estimated from the names' lengths)."""
    import html as _html

    names = [_html.unescape(t["name"]) for t in fig.traces if t.get("showlegend") is not False and t.get("name")]
    if not names or max(len(n) for n in names) <= 34:
        return fig
    row, rows = 0.0, 1
    for n in names:
        w = 48 + 6.6 * len(n)
        if row + w > width and row:
            rows, row = rows + 1, 0.0
        row += w
    extra = rows * 19 + 24
    margin = fig.layout.get("margin", {})
    height = (fig.layout.get("height") or HEIGHT) + extra
    b = (margin.get("b") or 64) + extra
    plot_h = height - (margin.get("t") or 60) - b
    fig.update_layout(height=height, margin=dict(b=b),
                      legend=dict(orientation="h", yanchor="top", xanchor="left", x=0.0, y=-66 / plot_h))
    return fig


def log_axis(values: list, label, *, base: int = 10, max_ticks: int = 10) -> Optional[dict]:
    """A log axis over ``values`` with ticks labelled by ``label`` (``fmt.log_ticks``); None
    without values."""
    if not values:
        return None
    vals, text = fmt.log_ticks(min(values), max(values), label, base=base, max_ticks=max_ticks)
    return dict(type="log", tickvals=vals, ticktext=text) if vals else dict(type="log")


def _empty_note(fig: PlotFigure, text: str) -> None:
    fig.add_annotation(text=plot_text(text), xref="paper", yref="paper", x=0.5, y=0.5,
                       showarrow=False, font=dict(size=15, color="#666"))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)


def _T_axis(Ts: list) -> Optional[dict]:
    return log_axis(Ts, fmt.tokens, base=2, max_ticks=12)


def _head_text(label: str, T, run: str = "") -> str:
    """The first lines of a point's hover: its series, its run where that is not in the label, T."""
    where = f" · {plot_text(run)}" if run and not label.endswith(run) else ""
    return f"<b>{plot_text(label)}</b>{where}<br>T = {fmt.count(T)}"


def _head(s: Series, T) -> str:
    return _head_text(s.label, T, s.run)


def _series_Ts(data: ReportData) -> list:
    return [r.T for s in data.series for r in s.rows]


# -- FLOPs vs T --------------------------------------------------------------------------

GREY = "#666"


def _finish_axes(fig: PlotFigure, panels: Panels, title: str, x_title: str, y_title: str, xaxis: Optional[dict],
                 yaxis: Optional[dict], height: int = HEIGHT) -> None:
    """The common layout, and on a panelled chart every panel's axes."""
    fig.update_layout(**layout(title, x_title, y_title, xaxis=xaxis, yaxis=yaxis, height=panels.height(height)))
    if panels.families:
        fig.update_layout(margin=dict(t=84))
        panels.finish_axes(fig, AXIS, {"title": dict(text=x_title), **(xaxis or {})},
                           {"title": dict(text=y_title), **(yaxis or {})})


def flops_figure(data: ReportData) -> PlotFigure:
    """Total FLOPs (solid) and the attention core's (dotted) per variant and shape over T,
    log-log; one panel per variant family when there are many. FLOPs do not depend on the device,
    so a variant at a shape is drawn once however many runs have it."""
    panels = panels_for(data.series, data.baseline)
    fig = panels.figure()
    legend = _Legend()
    ys = []
    merged: dict = {}  # (variant, params, shape but T) -> (first series, {T: row})
    for s in data.series:
        key = (s.variant, repr(sorted(s.params.items())), s.shape_text)
        rows = merged.setdefault(key, (s, {}))[1]
        for r in s.rows:
            if r.est is not None and r.est.status == "ok":
                rows.setdefault(r.T, r)
    for s, by_T in merged.values():
        rows = [by_T[T] for T in sorted(by_T)]
        label = s.name + (f" · {s.shape_text}" if s.shape_text else "")
        c = color_for(s.variant)
        for part, attr, dash, width in (("total", "flops", dash_for(s.style), 2.2),
                                        ("attention core", "flops_core", "dot", 1.6)):
            pts = [(r, getattr(r.est, attr)) for r in rows if getattr(r.est, attr)]
            if not pts:
                continue
            ys += [v for _, v in pts]
            hover = [f"{_head_text(label, r.T)}<br>{part}: <b>{fmt.flops(v)}</b> ({fmt.count(v)} FLOPs)<br>"
                     f"core {fmt.flops(r.est.flops_core)} · projections {fmt.flops(r.est.flops_proj)} · "
                     f"other {fmt.flops(r.est.flops_other)}" for r, v in pts]
            for pos in panels.positions(s.family, s.variant):
                fig.add_trace(scatter(
                    x=[r.T for r, _ in pts], y=[v for _, v in pts], mode="lines+markers", **legend(label),
                    line=dict(color=c, dash=dash, width=width),
                    marker=dict(symbol=symbol_for(s.style), size=6 if part == "total" else 4, color=c),
                    hovertext=hover, hoverinfo="text"), **pos)
    if fig.traces:
        _key(fig, [("total", dict(mode="lines", line=dict(color=GREY, width=2.2))),
                   ("attention core", dict(mode="lines", line=dict(color=GREY, width=1.6, dash="dot")))])
    _finish_axes(fig, panels, "FLOPs per layer vs sequence length", "sequence length T (tokens)",
                 "FLOPs per layer", _T_axis(_series_Ts(data)), log_axis(ys, fmt.flops))
    if not fig.traces:
        _empty_note(fig, "No point could be costed by the model.")
    return place_legend(fig)


# -- time vs T ---------------------------------------------------------------------------

def _series_panels(data: ReportData, draw, measured) -> tuple:
    """(panels, figure, legend, y values, any measured point) of a chart whose series are drawn by
    ``draw(fig, series, legend, pos)`` (returning the y values it drew) in their family's panel;
    ``measured(row)``: whether a row holds a measurement the chart shows."""
    panels = panels_for(data.series, data.baseline)
    fig = panels.figure()
    legend = _Legend()
    ys, any_meas = [], False
    for s in data.series:
        for pos in panels.positions(s.family, s.variant):
            ys += draw(fig, s, legend, pos)
        any_meas = any_meas or any(measured(r) for r in s.rows)
    return panels, fig, legend, ys, any_meas


def time_figure(data: ReportData) -> PlotFigure:
    """Predicted time per series (lines), measured medians with their p10-p90 range (markers with
    error bars), OOM and error points (distinct markers), crossovers with the baseline (stars:
    filled where the measured curves cross, hollow where the predicted ones do); one panel per
    variant family when there are many."""
    panels, fig, legend, ys, any_meas = _series_panels(data, _time_traces, lambda r: r.measured_s)
    crossed = _crossover_markers(fig, data, panels, ys)
    if fig.traces:
        key = [("predicted", dict(mode="lines", line=dict(color=GREY, width=2)))]
        if any_meas:
            key.append(("measured median, p10–p90", dict(mode="markers", marker=dict(color=GREY, size=8),
                                                         error_y=dict(type="data", array=[1], color=GREY))))
        if any(r.predicted_other_s for r in data.rows):
            key.append(("predicted in the other exec mode (eager / graph)",
                        dict(mode="lines", line=dict(color=GREY, width=1.2, dash="dot"))))
        key += _failure_key(data)
        for what in ("measured", "predicted"):
            if what in crossed:
                key.append((f"crossover with {plot_text(data.baseline)}, {what}",
                            dict(mode="markers", marker=_star(what, GREY, 13))))
        _key(fig, key)
    _finish_axes(fig, panels, "Time per layer vs sequence length", "sequence length T (tokens)", "time per layer",
                 _T_axis(_series_Ts(data)), log_axis(ys, fmt.ms_value))
    if not fig.traces:
        _empty_note(fig, "No predicted or measured times: profile with a hardware profile, "
                         "or predict with --hardware.")
    return place_legend(fig)


def _time_traces(fig: PlotFigure, s: Series, legend, pos: dict) -> list:
    """One series on the time chart, in the panel ``pos``: its predicted line, the other exec
    mode's, its measured medians and its failed points; their y values (ms)."""
    ys = []
    c = color_for(s.variant)
    pred = [r for r in s.rows if r.predicted_time_s]
    if pred:
        y = [r.predicted_time_s * 1e3 for r in pred]
        ys += y
        hover = [f"{_head(s, r.T)}<br>predicted <b>{fmt.ms(r.predicted_time_s)}</b>"
                 + (f" ({plot_text(r.est.bound)}-bound)" if r.est is not None and r.est.bound else "")
                 + (f"<br>measured median {fmt.ms(r.measured_s)}" if r.measured_s else "")
                 for r in pred]
        fig.add_trace(scatter(
            x=[r.T for r in pred], y=y, mode="lines+markers" if len(pred) == 1 else "lines",
            **legend(s.label), line=dict(color=c, dash=dash_for(s.style), width=2),
            marker=dict(color=c, size=5), hovertext=hover, hoverinfo="text"), **pos)
    ys += _other_mode_line(fig, s, legend, c, pos)
    meas = [r for r in s.rows if r.measured_s]
    if meas:
        y = [r.measured_s * 1e3 for r in meas]
        ys += [r.timing.p90_s * 1e3 for r in meas] + [max(r.timing.p10_s, 1e-12) * 1e3 for r in meas]
        up = [max(0.0, r.timing.p90_s - r.timing.median_s) * 1e3 for r in meas]
        down = [max(0.0, r.timing.median_s - r.timing.p10_s) * 1e3 for r in meas]
        hover = [f"{_head(s, r.T)}<br>measured median <b>{fmt.ms(r.timing.median_s)}</b><br>"
                 f"p10 {fmt.ms(r.timing.p10_s)} · p90 {fmt.ms(r.timing.p90_s)} · "
                 f"{r.timing.repetitions} repetitions" + _ci(r.timing)
                 + (f"<br>predicted {fmt.ms(r.predicted_time_s)} "
                    f"(error {fmt.pct(r.predicted_time_s / r.measured_s - 1)})" if r.predicted_time_s else "")
                 + (f"<br>backend: {plot_text(r.backend)}" if r.backend else "")
                 for r in meas]
        fig.add_trace(scatter(
            x=[r.T for r in meas], y=y, mode="markers", **legend(s.label),
            marker=dict(symbol=symbol_for(s.style), size=8, color=c, line=dict(color="white", width=1)),
            error_y=dict(type="data", symmetric=False, array=up, arrayminus=down, color=c, thickness=1.5, width=5),
            hovertext=hover, hoverinfo="text"), **pos)
    _failure_markers(fig, s, legend, lambda r: r.predicted_time_s * 1e3 if r.predicted_time_s else None, ys, pos)
    return ys


def _other_mode_line(fig: PlotFigure, s: Series, legend, color: str, pos: dict) -> list:
    """The series' prediction in the other exec mode (graph for an eager run, eager for a graph run),
    a thin dotted line in its colour, where the run recorded one; its y values (ms)."""
    rows = [r for r in s.rows if r.predicted_other_s]
    if not rows:
        return []
    other = "graph" if s.rows[0].exec_mode == "eager" else "eager"
    y = [r.predicted_other_s * 1e3 for r in rows]
    hover = [f"{_head(s, r.T)}<br>predicted in {other} mode <b>{fmt.ms(r.predicted_other_s)}</b>" for r in rows]
    fig.add_trace(scatter(x=[r.T for r in rows], y=y, mode="lines", **legend(s.label),
                          line=dict(color=color, dash="dot", width=1.2), hovertext=hover, hoverinfo="text"), **pos)
    return y


def _ci(t) -> str:
    """The median's confidence interval and stability, where the run recorded them."""
    ci, stable = getattr(t, "ci_rel", None), getattr(t, "stable", None)
    out = f"<br>95% CI of the median ±{fmt.pct(ci, 2, signed=False)}" if ci is not None else ""
    if stable is False:
        out += " (<b>not stable</b> within the time budget)"
    return out


def _failure_key(data: ReportData) -> list:
    statuses = {r.status for r in data.rows}
    out = []
    if statuses & set(OOM_STATUSES):
        out.append(("out of memory (or predicted not to fit)",
                    dict(mode="markers", marker=dict(symbol=OOM_SYMBOL, size=12, color="#d00",
                                                     line=dict(width=2.5, color="#d00")))))
    if "error" in statuses:
        out.append(("error", dict(mode="markers", marker=dict(symbol=ERROR_SYMBOL, size=12, color="#000",
                                                              line=dict(width=2, color="#000")))))
    return out


def _failure_markers(fig: PlotFigure, s: Series, legend, y_of, ys: list, pos: dict) -> None:
    """OOM and error points of a series, placed at ``y_of(row)`` where that is known."""
    for status, symbol, what, col in (("oom", OOM_SYMBOL, "out of memory", "#d00"),
                                      ("oom-predicted", OOM_SYMBOL, "predicted not to fit in memory", "#d00"),
                                      ("error", ERROR_SYMBOL, "error", "#000")):
        rows = [(r, y_of(r)) for r in s.rows if r.status == status]
        rows = [(r, y) for r, y in rows if y]
        if not rows:
            continue
        ys += [y for _, y in rows]
        hover = [f"{_head(s, r.T)}<br><b>{what}</b>"
                 + (f": {plot_text((r.message or '')[:300])}" if r.message else "") for r, _ in rows]
        fig.add_trace(scatter(
            x=[r.T for r, _ in rows], y=[y for _, y in rows], mode="markers", **legend(s.label),
            marker=dict(symbol=symbol, size=13, color=col, line=dict(width=2.5, color=col)),
            hovertext=hover, hoverinfo="text"), **pos)


def _star(what: str, color, size: int) -> dict:
    """A crossover's marker: a filled star where measured curves cross, a hollow one where
    predicted curves do."""
    if what == "measured":
        return dict(symbol=CROSSOVER_SYMBOL, size=size, color=color, line=dict(color="black", width=1))
    return dict(symbol=CROSSOVER_SYMBOL, size=size, color="white", line=dict(color=color, width=2))


def _crossover_markers(fig: PlotFigure, data: ReportData, panels: Panels, ys: list) -> set:
    """Stars where each series' curves cross the baseline's, in the series' panel; the kinds
    drawn ("measured", "predicted")."""
    drawn = set()
    for what in ("predicted", "measured"):
        at: dict = {}  # panel (row, col) -> [(T, ms, colour, hover)]
        for s in data.series:
            b = data.baseline_for(s)
            if b is None:
                continue
            pos = panels.positions(s.family, s.variant)[0]
            for T, t, direction in intersections(s.values(what), b.values(what)):
                verb = "becomes faster than" if direction == "below" else "becomes slower than"
                at.setdefault((pos.get("row"), pos.get("col")), []).append(
                    (T, t * 1e3, color_for(s.variant), f"<b>crossover, {what}</b><br>{plot_text(s.label)} {verb} "
                                                       f"{plot_text(b.name)}<br>at T ≈ {fmt.count(T)}, {fmt.ms(t)}"))
        for (row, col), pts in at.items():
            drawn.add(what)
            ys += [y for _, y, _, _ in pts]
            fig.add_trace(scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name=f"crossovers ({what})",
                showlegend=False, marker=_star(what, [p[2] for p in pts], 15 if what == "measured" else 13),
                hovertext=[p[3] for p in pts], hoverinfo="text"), **({"row": row, "col": col} if row else {}))
    return drawn


# -- memory ------------------------------------------------------------------------------

NEAR = 4.0  # the device's memory is drawn where the largest value shown is within this factor of it


def _device_memory(data: ReportData) -> dict:
    """{name: bytes}: each run's device memory where it recorded it, else its profile's."""
    caps = {}
    for src in data.sources:
        env_mem = getattr(src.run.environment, "memory_bytes", None) if src.run is not None else None
        if isinstance(env_mem, (int, float)) and env_mem > 0:
            caps[src.run.environment.device_name or src.label] = float(env_mem)
        elif src.hardware is not None and src.hardware.memory:
            caps[src.hardware.name] = src.hardware.memory
    return caps


def device_memory(data: ReportData) -> list:
    """[(device name, bytes, drawn)]: each device's memory, drawn on the memory chart where the
    largest peak shown comes within ``NEAR`` of it (else the page says it in words)."""
    top = max([v for r in data.rows for v in (r.peak_memory_bytes,) + (
        (r.est.activation_bytes_fused, r.est.activation_bytes_unfused) if r.est is not None and r.est.status == "ok"
        else ()) if v] or [0.0])
    return [(name, cap, bool(top) and cap <= NEAR * top) for name, cap in _device_memory(data).items()]


def memory_figure(data: ReportData) -> PlotFigure:
    """Peak activation memory per series: the model's fused (solid) and unfused (dashed) peaks,
    the measured allocator peak (markers), OOM points (red crosses); the device's memory where the
    data come near it (``device_memory``); one panel per variant family when there are many."""
    panels, fig, legend, ys, any_meas = _series_panels(data, _memory_traces,
                                                       lambda r: r.peak_memory_bytes and r.status == "ok")
    Ts = _series_Ts(data)
    for j, (name, cap, drawn) in enumerate(device_memory(data)):
        if not drawn or not Ts:
            continue
        ys.append(cap)
        for pos in panels.positions("", data.baseline):
            fig.add_trace(scatter(
                x=[min(Ts), max(Ts)], y=[cap, cap], mode="lines", **legend(f"{name} memory"),
                line=dict(color="#444", dash=dash_for(j + 3), width=1.2),
                hovertext=[f"{plot_text(name)}: {fmt.nbytes(cap)} of device memory"] * 2, hoverinfo="text"), **pos)
    if fig.traces:
        key = [("model, fused", dict(mode="lines", line=dict(color=GREY, width=2.2))),
               ("model, unfused", dict(mode="lines", line=dict(color=GREY, width=1.4, dash="dash")))]
        if any_meas:
            key.append(("measured peak", dict(mode="markers", marker=dict(color=GREY, size=8))))
        _key(fig, key + _failure_key(data))
    _finish_axes(fig, panels, "Peak activation memory per layer vs sequence length", "sequence length T (tokens)",
                 "peak activation memory", _T_axis(Ts), log_axis(ys, fmt.nbytes, base=2))
    if not fig.traces:
        _empty_note(fig, "No memory figures: no point could be costed or measured.")
    return place_legend(fig)


def _memory_traces(fig: PlotFigure, s: Series, legend, pos: dict) -> list:
    """One series on the memory chart, in the panel ``pos``; its y values (bytes)."""
    ys = []
    c = color_for(s.variant)
    rows = [r for r in s.rows if r.est is not None and r.est.status == "ok"]
    for attr, what, dash, width in (("activation_bytes_fused", "fused", "solid", 2.2),
                                    ("activation_bytes_unfused", "unfused", "dash", 1.4)):
        pts = [(r, getattr(r.est, attr)) for r in rows if getattr(r.est, attr)]
        if not pts:
            continue
        ys += [v for _, v in pts]
        hover = [f"{_head(s, r.T)}<br>model, {what}: <b>{fmt.nbytes(v)}</b> ({fmt.count(v)} bytes)"
                 + (f"<br>measured peak {fmt.nbytes(r.peak_memory_bytes)}" if r.peak_memory_bytes else "")
                 for r, v in pts]
        fig.add_trace(scatter(
            x=[r.T for r, _ in pts], y=[v for _, v in pts], mode="lines+markers" if len(pts) == 1 else "lines",
            **legend(s.label), line=dict(color=c, dash=dash, width=width), marker=dict(color=c, size=5),
            hovertext=hover, hoverinfo="text"), **pos)
    meas = [r for r in s.rows if r.peak_memory_bytes and r.status == "ok"]
    if meas:
        ys += [r.peak_memory_bytes for r in meas]
        fig.add_trace(scatter(
            x=[r.T for r in meas], y=[r.peak_memory_bytes for r in meas], mode="markers", **legend(s.label),
            marker=dict(symbol=symbol_for(s.style), size=8, color=c, line=dict(color="white", width=1)),
            hovertext=[f"{_head(s, r.T)}<br>measured peak <b>{fmt.nbytes(r.peak_memory_bytes)}</b> "
                       f"({fmt.count(r.peak_memory_bytes)} bytes)"
                       + (f"<br>model, fused: {fmt.nbytes(r.est.activation_bytes_fused)}"
                          if r.est is not None and r.est.status == "ok" else "") for r in meas],
            hoverinfo="text"), **pos)

    def y_of(r):
        if r.est is not None and r.est.status == "ok":
            return max(r.est.activation_bytes_fused, r.est.activation_bytes_unfused) or None
        return None

    _failure_markers(fig, s, legend, y_of, ys, pos)
    return ys


def kv_figure(kv: KvData) -> PlotFigure:
    """What decode keeps per sequence and layer after T tokens (``data.kv_data``), log-log: a
    KV cache grows with T, a sliding window's stops growing at the window, a state stays flat."""
    fig = PlotFigure()
    legend = _Legend()
    style: dict = {}
    ys, Ts = [], []
    for line in kv.lines:
        c = color_for(line.variant)
        k = style[line.variant] = style.get(line.variant, -1) + 1
        xs = [T for T, _, _ in line.points]
        y = [b for _, b, _ in line.points]
        ys += y
        Ts += xs
        fig.add_trace(scatter(
            x=xs, y=y, mode="lines+markers", **legend(line.label),
            line=dict(color=c, dash=dash_for(k), width=2), marker=dict(color=c, size=5, symbol=symbol_for(k)),
            hovertext=[_kv_hover(line, T, b, e) for T, b, e in line.points], hoverinfo="text"))
    _finish_axes(fig, Panels([], ""), "KV cache (or state) per sequence per layer that decode keeps after T tokens",
                 "tokens in the context T", "bytes per sequence per layer", _T_axis(Ts),
                 log_axis(ys, fmt.nbytes, base=2),
                 height=460)
    if not fig.traces:
        _empty_note(fig, "No variant with a decode path could be costed by the model.")
    return place_legend(fig)


def _kv_hover(line: KvLine, T: int, b: float, e) -> str:
    per_token = e.kv_cache_bytes_per_token
    text = f"<b>{plot_text(line.label)}</b><br>after T = {fmt.count(T)} tokens: <b>{fmt.nbytes(b)}</b> per sequence"
    if line.state:
        text += "<br>a state of fixed size, whatever T (no per-token cache)"
    elif per_token:
        kept = round(b / per_token)
        text += f"<br>{fmt.nbytes(per_token)} per token kept" + (
            f"; only the last {fmt.count(kept)} tokens are kept (the window)" if kept < T else "")
    if e.shape.batch > 1:
        text += f"<br>batch {e.shape.batch}: {fmt.nbytes(e.kv_cache_bytes)} in all"
    return text


# -- heatmap -----------------------------------------------------------------------------

def heatmap_figure(grid: Optional[Grid], baseline: str) -> PlotFigure:
    """Speedup of ``grid.variant`` over the baseline on a d x T grid (cost model), log2 colour
    scale centred on 1x: blue, the variant is faster; red, slower."""
    fig = PlotFigure()
    if grid is None:
        fig.update_layout(**layout("Speedup over the baseline", "sequence length T (tokens)", "model width d"))
        _empty_note(fig, f"No variant to compare with {baseline}.")
        return fig
    z, text, hover = [], [], []
    what = "time" if grid.metric == "time" else "FLOPs"
    show = fmt.ms if grid.metric == "time" else fmt.flops
    for i, d in enumerate(grid.ds):
        zr, tr, hr = [], [], []
        for j, T in enumerate(grid.Ts):
            sp = grid.speedup[i][j]
            zr.append(math.log2(sp) if sp else None)
            tr.append(_speedup_text(sp) if sp else "n/a")
            head = f"d = {fmt.count(d)}, heads = {d // grid.shape.head_dim}, T = {fmt.count(T)}"
            if sp:
                hr.append(f"{head}<br>{plot_text(grid.baseline)} {what} / {plot_text(grid.label)} "
                          f"{what} = <b>{sp:.4g}×</b><br>{plot_text(grid.label)}: "
                          f"{show(grid.variant_values[i][j])}<br>{plot_text(grid.baseline)}: "
                          f"{show(grid.baseline_values[i][j])}")
            else:
                hr.append(f"{head}<br>not applicable at this shape")
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    finite = [abs(v) for row in z for v in row if v is not None]
    lim = max(1.0, max(finite) if finite else 1.0)
    ticks = [v for v in range(-12, 13) if abs(v) <= lim]
    while len(ticks) > 9:
        ticks = ticks[::2]
    fig.add_trace(trace("heatmap",
        x=[fmt.tokens(T) for T in grid.Ts], y=[fmt.count(d) for d in grid.ds], z=z, text=text,
        texttemplate="%{text}", textfont=dict(size=11), hovertext=hover, hoverinfo="text",
        colorscale=colorscale("RdBu"), zmid=0, zmin=-lim, zmax=lim, xgap=1, ygap=1,
        colorbar=dict(title=dict(text="speedup", side="right"), tickvals=ticks,
                      ticktext=[f"{2**v}×" if v >= 0 else f"1/{2**-v}×" for v in ticks])))
    basis = (f"predicted time on {plot_text(grid.hardware)}" if grid.metric == "time"
             else "FLOPs (no hardware profile, no time model)")
    sh = grid.shape
    rows = [fmt.count(d) for d in grid.ds]  # the data's widths (the crossover tables') marked
    fig.update_layout(**layout(
        f"Speedup of {plot_text(grid.label)} over {plot_text(grid.baseline)} by {basis}",
        f"sequence length T (tokens) · {sh.phase}, batch {sh.batch}, {sh.dtype}, head dim {sh.head_dim}",
        "model width d", height=80 + 48 * len(grid.ds) + 90, margin=dict(l=130, r=20, t=60, b=64),
        xaxis=dict(type="category", showgrid=False, ticks=""),
        yaxis=dict(type="category", showgrid=False, ticks="", tickvals=rows,
                   ticktext=[f"<b>{r} ▸</b>" if d in grid.data_ds else r for r, d in zip(rows, grid.ds)])))
    fig.add_annotation(text="blue: the variant is faster · red: slower · ▸ the width of the data (the crossover "
                            "table's)", xref="paper", yref="paper", x=1.0, y=1.02, xanchor="right",
                       yanchor="bottom", showarrow=False, font=dict(size=11, color="#555"))
    return fig


def _speedup_text(sp: float) -> str:
    if sp >= 100:
        return f"{sp:.0f}×"
    if sp >= 10:
        return f"{sp:.1f}×"
    return f"{sp:.2f}×"


# -- roofline ----------------------------------------------------------------------------

def roofline_figure(data: ReportData) -> PlotFigure:
    """Achieved FLOP/s against arithmetic intensity (model FLOPs / fused bytes) per point, under
    each device's ceilings: peak FLOP/s of the run's dtype and memory bandwidth x intensity.
    Measured runs use the measured median time; a prediction uses the predicted time."""
    fig = PlotFigure()
    xs_all, ys_all = [], []
    measured = data.kind == "run"
    for i, s in enumerate(data.series):
        pts = []
        for r in s.rows:
            if r.est is None or r.est.status != "ok" or not r.est.arithmetic_intensity:
                continue
            t = r.measured_s if measured else r.predicted_time_s
            f = r.flops
            if not t or not f:
                continue
            pts.append((r, r.est.arithmetic_intensity, f / t, t))
        if not pts:
            continue
        xs_all += [p[1] for p in pts]
        ys_all += [p[2] for p in pts]
        peak = s.source.hardware.peak(s.source.dtype) if s.source.hardware else None
        hover = [f"{_head(s, r.T)}<br>intensity {ai:.3g} FLOP/byte<br>achieved <b>{fmt.rate(fl)}</b>"
                 + (f" ({fmt.pct(fl / peak, 3, signed=False)} of the datasheet peak)" if peak else "")
                 + f"<br>{fmt.flops(r.flops)} in {fmt.ms(t)} "
                 + ("measured" if measured else "predicted")
                 + f"<br>{fmt.nbytes(r.est.bytes_fused)} moved (model)"
                 for r, ai, fl, t in pts]
        fig.add_trace(scatter(
            x=[p[1] for p in pts], y=[p[2] for p in pts], mode="markers+lines",
            name=plot_text(s.label), legendgroup=f"s{i}",
            line=dict(color=color_for(s.variant), width=1, dash="dot"),
            marker=dict(symbol=symbol_for(s.style), size=9, color=color_for(s.variant),
                        line=dict(color="white", width=1)),
            hovertext=hover, hoverinfo="text"))
    lo = min(xs_all) / 4 if xs_all else 0.5
    hi = max(xs_all) * 4 if xs_all else 4096
    ceilings = _ceilings(data)
    for _, peak, bw, _ in ceilings:
        lo, hi = min(lo, peak / bw / 8), max(hi, peak / bw * 8)
    for name, peak, bw, how in ceilings:
        ridge = peak / bw
        ys = [lo * bw, peak, peak]
        ys_all += [ys[0], peak]
        fig.add_trace(scatter(
            x=[lo, ridge, hi], y=ys, mode="lines", name=plot_text(name), line=how["line"],
            hovertext=[f"<b>{plot_text(name)}</b><br>bandwidth {fmt.bandwidth(bw)}{how['bandwidth']}",
                       f"<b>{plot_text(name)}</b><br>ridge at {ridge:.3g} FLOP/byte",
                       f"<b>{plot_text(name)}</b><br>{fmt.rate(peak)}{how['peak']}"],
            hoverinfo="text"))
    which = "measured" if measured else "predicted"
    fig.update_layout(**layout(f"Roofline: achieved FLOP/s ({which}) vs arithmetic intensity",
                                "arithmetic intensity (FLOP per byte moved, fused kernels)", "achieved FLOP/s",
                                xaxis=log_axis([lo, hi], fmt.sig), yaxis=log_axis(ys_all, fmt.rate)))
    if not fig.traces:
        _empty_note(fig, "No point with a time to place on the roofline.")
    elif not ceilings:
        fig.add_annotation(text="no hardware profile with peak FLOP/s and bandwidth: ceilings not drawn",
                           xref="paper", yref="paper", x=0.01, y=0.98, xanchor="left", showarrow=False,
                           font=dict(size=12, color="#a00"))
    return place_legend(fig)


def _ceilings(data: ReportData) -> list:
    """[(name, FLOP/s, bytes/s, style)]: per profile and dtype of the data, the roof a fitted
    profile measured (``HardwareInfo.measured_ceiling``), solid, with the datasheet roof beside it,
    thin; a profile of assumed efficiencies has its datasheet roof alone, solid."""
    out, seen = [], set()
    for src in data.sources:
        hw = src.hardware
        if hw is None or (hw.name, src.dtype) in seen:
            continue
        seen.add((hw.name, src.dtype))
        peak = hw.peak(src.dtype)
        if not peak or not hw.bandwidth:
            continue
        j = len(seen) - 1
        measured = hw.measured_ceiling(src.dtype)
        if measured is not None:
            m_peak, m_bw = measured
            out.append((f"{hw.name} measured ceiling ({src.dtype})", m_peak, m_bw, dict(
                line=dict(color="#222", width=2.5, dash=dash_for(j)),
                peak=f" ({src.dtype}): large matmuls reach {fmt.pct(m_peak / peak, 3, signed=False)} of the "
                     f"datasheet peak, as calibration fitted",
                bandwidth=f": {fmt.pct(m_bw / hw.bandwidth, 3, signed=False)} of the profile's, as calibration "
                          f"fitted")))
        out.append((f"{hw.name} datasheet peak ({src.dtype})", peak, hw.bandwidth, dict(
            line=dict(color="#999" if measured else "#333", width=1.2 if measured else 2.5,
                      dash="dot" if measured else dash_for(j)),
            peak=f" ({src.dtype}): the datasheet peak", bandwidth="")))
    return out


def model_time_figure(results: list, labels: dict, phase: str) -> PlotFigure:
    """A whole model's predicted time by component, a stacked bar per (batch, T, variant) of
    ``results`` (``ModelResult``s that priced): ``phase`` "prefill" (time to first token) or
    "decode" (one step). ``labels``: component -> the name shown."""
    fig = PlotFigure()
    rows = [r for r in results if r.status == "ok" and (r.prefill if phase == "prefill" else r.decode)]
    many = len({(r.batch, r.T) for r in rows}) > 1
    names = [plot_text(f"{r.variant} · batch {r.batch} · T {fmt.tokens(r.T)}" if many else r.variant) for r in rows]
    for comp, label in labels.items():
        ms = [(r.prefill if phase == "prefill" else r.decode).time.get(comp, 0.0) * 1e3 for r in rows]
        fig.add_trace(trace("bar", x=names, y=ms, name=plot_text(label), hovertext=[
            f"{n}<br>{plot_text(label)}: {fmt.ms_value(v)}" for n, v in zip(names, ms)], hoverinfo="text"))
    what = "prefill of T tokens (time to first token)" if phase == "prefill" else "one decode step (all sequences)"
    fig.update_layout(**layout(f"Predicted time by component: {what}", "", "ms"), barmode="stack")
    if not rows:
        _empty_note(fig, "no variant priced")
    return place_legend(fig)
