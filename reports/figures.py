"""The report's plotly figures, built from ``ReportData`` and ``FidelityData``. Every user
string passes through ``plot_text`` before plotly sees it; hover text is prebuilt per point
(``hovertext``), never a template that could interpret a user's "%{...}"."""

import math
from typing import Optional

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..costmodel.results import OOM_STATUSES
from . import fmt
from .colors import CROSSOVER_SYMBOL, ERROR_SYMBOL, OOM_SYMBOL, color_for, dash_for, symbol_for
from .data import Grid, ReportData, Series, intersections
from .fidelity_data import TOL, Facet, FidelityData, FidPoint, axis_title
from .html import plot_text

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
HEIGHT = 520
AXIS = dict(showline=True, linecolor="#888", mirror=True, zeroline=False, gridcolor="#e8e8e8",
            ticks="outside", ticklen=4, tickcolor="#888")


def _layout(title: str, x_title: str, y_title: str, xaxis: dict = None, yaxis: dict = None, **kw) -> dict:
    """The common layout; ``xaxis``/``yaxis`` are merged into the defaults (titles kept)."""
    layout = dict(
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
    layout.update(kw)
    return layout


class _Legend:
    """One legend entry per series (its first trace); its other traces follow it (legendgroup)."""

    def __init__(self):
        self.shown = set()

    def __call__(self, i: int, label: str) -> dict:
        first = i not in self.shown
        self.shown.add(i)
        return dict(name=plot_text(label), legendgroup=f"s{i}", showlegend=first)


def _key(fig: go.Figure, entries: list) -> None:
    """Grey legend entries that explain the line styles and markers: [(name, trace kwargs)]."""
    for name, kw in entries:
        fig.add_trace(go.Scatter(x=[None], y=[None], name=name, legendrank=1,
                                 hoverinfo="skip", showlegend=True, **kw))


def place_legend(fig: go.Figure, width: int = 1240) -> go.Figure:
    """Long legend names squeeze the plot: put such a legend under it, and grow the figure by
    the rows it needs (estimated from the names' lengths)."""
    import html as _html

    names = [_html.unescape(t.name or "") for t in fig.data if t.showlegend is not False and t.name]
    if not names or max(len(n) for n in names) <= 34:
        return fig
    row, rows = 0.0, 1
    for n in names:
        w = 48 + 6.6 * len(n)
        if row + w > width and row:
            rows, row = rows + 1, 0.0
        row += w
    extra = rows * 19 + 24
    height = (fig.layout.height or HEIGHT) + extra
    b = (fig.layout.margin.b or 64) + extra
    plot_h = height - (fig.layout.margin.t or 60) - b
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


def _empty_note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=plot_text(text), xref="paper", yref="paper", x=0.5, y=0.5,
                       showarrow=False, font=dict(size=15, color="#666"))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)


def _T_axis(Ts: list) -> Optional[dict]:
    return log_axis(Ts, fmt.tokens, base=2, max_ticks=12)


def _head(s: Series, T) -> str:
    return f"<b>{plot_text(s.label)}</b><br>T = {fmt.count(T)}"


def _series_Ts(data: ReportData) -> list:
    return [r.T for s in data.series for r in s.rows]


# -- FLOPs vs T --------------------------------------------------------------------------

GREY = "#666"


def flops_figure(data: ReportData) -> go.Figure:
    """Total FLOPs (solid) and the attention core's (dotted) per series over T, log-log."""
    fig = go.Figure()
    legend = _Legend()
    ys = []
    for i, s in enumerate(data.series):
        rows = [r for r in s.rows if r.est is not None and r.est.status == "ok"]
        if not rows:
            continue
        c = color_for(s.variant)
        for part, attr, dash, width in (("total", "flops", dash_for(s.style), 2.2),
                                        ("attention core", "flops_core", "dot", 1.6)):
            pts = [(r, getattr(r.est, attr)) for r in rows if getattr(r.est, attr)]
            if not pts:
                continue
            ys += [v for _, v in pts]
            hover = [f"{_head(s, r.T)}<br>{part}: <b>{fmt.flops(v, 4)}</b> ({fmt.count(v)} FLOPs)<br>"
                     f"core {fmt.flops(r.est.flops_core)} · projections {fmt.flops(r.est.flops_proj)} · "
                     f"other {fmt.flops(r.est.flops_other)}" for r, v in pts]
            fig.add_trace(go.Scatter(
                x=[r.T for r, _ in pts], y=[v for _, v in pts], mode="lines+markers", **legend(i, s.label),
                line=dict(color=c, dash=dash, width=width),
                marker=dict(symbol=symbol_for(s.style), size=6 if part == "total" else 4, color=c),
                hovertext=hover, hoverinfo="text"))
    if fig.data:
        _key(fig, [("total", dict(mode="lines", line=dict(color=GREY, width=2.2))),
                   ("attention core", dict(mode="lines", line=dict(color=GREY, width=1.6, dash="dot")))])
    fig.update_layout(**_layout("FLOPs per layer vs sequence length",
                                "sequence length T (tokens)", "FLOPs per layer",
                                xaxis=_T_axis(_series_Ts(data)),
                                yaxis=log_axis(ys, fmt.flops)))
    if not fig.data:
        _empty_note(fig, "No point could be costed by the model.")
    return place_legend(fig)


# -- time vs T ---------------------------------------------------------------------------

def time_figure(data: ReportData) -> go.Figure:
    """Predicted time per series (lines), measured medians with their p10-p90 range (markers with
    error bars), OOM and error points (distinct markers), crossovers with the baseline (stars)."""
    fig = go.Figure()
    legend = _Legend()
    ys = []
    any_meas = False
    for i, s in enumerate(data.series):
        c = color_for(s.variant)
        pred = [r for r in s.rows if r.predicted_time_s]
        if pred:
            y = [r.predicted_time_s * 1e3 for r in pred]
            ys += y
            hover = [f"{_head(s, r.T)}<br>predicted <b>{fmt.ms(r.predicted_time_s, 4)}</b>"
                     + (f" ({plot_text(r.est.bound)}-bound)" if r.est is not None and r.est.bound else "")
                     + (f"<br>measured median {fmt.ms(r.measured_s, 4)}" if r.measured_s else "")
                     for r in pred]
            fig.add_trace(go.Scatter(
                x=[r.T for r in pred], y=y, mode="lines+markers" if len(pred) == 1 else "lines",
                **legend(i, s.label), line=dict(color=c, dash=dash_for(s.style), width=2),
                marker=dict(color=c, size=5), hovertext=hover, hoverinfo="text"))
        meas = [r for r in s.rows if r.measured_s]
        if meas:
            any_meas = True
            y = [r.measured_s * 1e3 for r in meas]
            ys += [r.timing.p90_s * 1e3 for r in meas] + [max(r.timing.p10_s, 1e-12) * 1e3 for r in meas]
            up = [max(0.0, r.timing.p90_s - r.timing.median_s) * 1e3 for r in meas]
            down = [max(0.0, r.timing.median_s - r.timing.p10_s) * 1e3 for r in meas]
            hover = [f"{_head(s, r.T)}<br>measured median <b>{fmt.ms(r.timing.median_s, 4)}</b><br>"
                     f"p10 {fmt.ms(r.timing.p10_s, 4)} · p90 {fmt.ms(r.timing.p90_s, 4)} · "
                     f"{r.timing.repetitions} repetitions" + _ci(r.timing)
                     + (f"<br>predicted {fmt.ms(r.predicted_time_s, 4)} "
                        f"(error {fmt.pct(r.predicted_time_s / r.measured_s - 1)})" if r.predicted_time_s else "")
                     + (f"<br>backend: {plot_text(r.backend)}" if r.backend else "")
                     for r in meas]
            fig.add_trace(go.Scatter(
                x=[r.T for r in meas], y=y, mode="markers", **legend(i, s.label),
                marker=dict(symbol=symbol_for(s.style), size=8, color=c, line=dict(color="white", width=1)),
                error_y=dict(type="data", symmetric=False, array=up, arrayminus=down, color=c, thickness=1.5, width=5),
                hovertext=hover, hoverinfo="text"))
        _failure_markers(fig, s, i, legend, lambda r: r.predicted_time_s * 1e3 if r.predicted_time_s else None, ys)
    crossed = _crossover_markers(fig, data, ys)
    if fig.data:
        key = [("predicted", dict(mode="lines", line=dict(color=GREY, width=2)))]
        if any_meas:
            key.append(("measured median, p10–p90", dict(mode="markers", marker=dict(color=GREY, size=8),
                                                         error_y=dict(type="data", array=[1], color=GREY))))
        key += _failure_key(data)
        if crossed:
            key.append((f"crossover with {plot_text(data.baseline)}",
                        dict(mode="markers", marker=dict(symbol=CROSSOVER_SYMBOL, size=13, color="#fff",
                                                         line=dict(color="black", width=1)))))
        _key(fig, key)
    fig.update_layout(**_layout("Time per layer vs sequence length",
                                "sequence length T (tokens)", "time per layer",
                                xaxis=_T_axis(_series_Ts(data)),
                                yaxis=log_axis(ys, fmt.ms_value)))
    if not fig.data:
        _empty_note(fig, "No predicted or measured times: profile with a hardware profile, "
                         "or predict with --hardware.")
    return place_legend(fig)


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
        out.append(("out of memory (or predicted not to fit)", dict(mode="markers", marker=dict(symbol=OOM_SYMBOL, size=12, color="#d00",
                                                                      line=dict(width=2.5, color="#d00")))))
    if "error" in statuses:
        out.append(("error", dict(mode="markers", marker=dict(symbol=ERROR_SYMBOL, size=12, color="#000",
                                                              line=dict(width=2, color="#000")))))
    return out


def _failure_markers(fig: go.Figure, s: Series, i: int, legend, y_of, ys: list) -> bool:
    """OOM and error points of a series, placed at ``y_of(row)`` where that is known."""
    drew = False
    for status, symbol, what, col in (("oom", OOM_SYMBOL, "out of memory", "#d00"),
                                      ("oom-predicted", OOM_SYMBOL, "predicted not to fit in memory", "#d00"),
                                      ("error", ERROR_SYMBOL, "error", "#000")):
        rows = [(r, y_of(r)) for r in s.rows if r.status == status]
        rows = [(r, y) for r, y in rows if y]
        if not rows:
            continue
        drew = True
        ys += [y for _, y in rows]
        hover = [f"{_head(s, r.T)}<br><b>{what}</b>"
                 + (f": {plot_text((r.message or '')[:300])}" if r.message else "") for r, _ in rows]
        fig.add_trace(go.Scatter(
            x=[r.T for r, _ in rows], y=[y for _, y in rows], mode="markers", **legend(i, s.label),
            marker=dict(symbol=symbol, size=13, color=col, line=dict(width=2.5, color=col)),
            hovertext=hover, hoverinfo="text"))
    return drew


def _crossover_markers(fig: go.Figure, data: ReportData, ys: list) -> bool:
    xs, yv, hover, colors = [], [], [], []
    for s in data.series:
        b = data.baseline_for(s)
        if b is None:
            continue
        for what in ("measured", "predicted"):
            for T, t, direction in intersections(s.values(what), b.values(what)):
                xs.append(T)
                yv.append(t * 1e3)
                colors.append(color_for(s.variant))
                verb = "becomes faster than" if direction == "below" else "becomes slower than"
                hover.append(f"<b>crossover ({what})</b><br>{plot_text(s.label)} {verb} "
                             f"{plot_text(b.label)}<br>at T ≈ {fmt.count(T)}, {fmt.ms(t, 4)}")
    if not xs:
        return False
    ys += yv
    fig.add_trace(go.Scatter(
        x=xs, y=yv, mode="markers", name="crossovers", showlegend=False,
        marker=dict(symbol=CROSSOVER_SYMBOL, size=15, color=colors, line=dict(color="black", width=1)),
        hovertext=hover, hoverinfo="text"))
    return True


# -- memory ------------------------------------------------------------------------------

def memory_figure(data: ReportData) -> go.Figure:
    """Peak activation memory per series: the model's fused (solid) and unfused (dashed) peaks,
    the measured allocator peak (markers), OOM points (red crosses), the device's memory."""
    fig = go.Figure()
    legend = _Legend()
    ys = []
    any_meas = False
    for i, s in enumerate(data.series):
        c = color_for(s.variant)
        rows = [r for r in s.rows if r.est is not None and r.est.status == "ok"]
        for attr, what, dash, width in (("activation_bytes_fused", "fused", "solid", 2.2),
                                        ("activation_bytes_unfused", "unfused", "dash", 1.4)):
            pts = [(r, getattr(r.est, attr)) for r in rows if getattr(r.est, attr)]
            if not pts:
                continue
            ys += [v for _, v in pts]
            hover = [f"{_head(s, r.T)}<br>model, {what}: <b>{fmt.nbytes(v, 4)}</b> ({fmt.count(v)} bytes)"
                     + (f"<br>measured peak {fmt.nbytes(r.peak_memory_bytes, 4)}" if r.peak_memory_bytes else "")
                     for r, v in pts]
            fig.add_trace(go.Scatter(
                x=[r.T for r, _ in pts], y=[v for _, v in pts], mode="lines+markers" if len(pts) == 1 else "lines",
                **legend(i, s.label), line=dict(color=c, dash=dash, width=width), marker=dict(color=c, size=5),
                hovertext=hover, hoverinfo="text"))
        meas = [r for r in s.rows if r.peak_memory_bytes and r.status == "ok"]
        if meas:
            any_meas = True
            ys += [r.peak_memory_bytes for r in meas]
            fig.add_trace(go.Scatter(
                x=[r.T for r in meas], y=[r.peak_memory_bytes for r in meas], mode="markers", **legend(i, s.label),
                marker=dict(symbol=symbol_for(s.style), size=8, color=c, line=dict(color="white", width=1)),
                hovertext=[f"{_head(s, r.T)}<br>measured peak <b>{fmt.nbytes(r.peak_memory_bytes, 4)}</b> "
                           f"({fmt.count(r.peak_memory_bytes)} bytes)"
                           + (f"<br>model, fused: {fmt.nbytes(r.est.activation_bytes_fused, 4)}"
                              if r.est is not None and r.est.status == "ok" else "") for r in meas],
                hoverinfo="text"))

        def y_of(r):
            if r.est is not None and r.est.status == "ok":
                return max(r.est.activation_bytes_fused, r.est.activation_bytes_unfused) or None
            return None

        _failure_markers(fig, s, i, legend, y_of, ys)
    caps = {}
    for src in data.sources:  # the device's own memory where the run recorded it, else the profile's
        env_mem = getattr(src.run.environment, "memory_bytes", None) if src.run is not None else None
        if isinstance(env_mem, (int, float)) and env_mem > 0:
            caps[src.run.environment.device_name or src.label] = float(env_mem)
        elif src.hardware is not None and src.hardware.memory:
            caps[src.hardware.name] = src.hardware.memory
    Ts = _series_Ts(data)
    for j, (name, cap) in enumerate(caps.items()):
        if Ts:
            fig.add_trace(go.Scatter(
                x=[min(Ts), max(Ts)], y=[cap, cap], mode="lines", name=f"{plot_text(name)} memory",
                line=dict(color="#444", dash=dash_for(j + 3), width=1.2),
                hovertext=[f"{plot_text(name)}: {fmt.nbytes(cap, 4)} of device memory"] * 2, hoverinfo="text"))
            ys.append(cap)
    if fig.data:
        key = [("model, fused", dict(mode="lines", line=dict(color=GREY, width=2.2))),
               ("model, unfused", dict(mode="lines", line=dict(color=GREY, width=1.4, dash="dash")))]
        if any_meas:
            key.append(("measured peak", dict(mode="markers", marker=dict(color=GREY, size=8))))
        _key(fig, key + _failure_key(data))
    fig.update_layout(**_layout("Peak activation memory per layer vs sequence length",
                                "sequence length T (tokens)", "peak activation memory",
                                xaxis=_T_axis(Ts), yaxis=log_axis(ys, fmt.nbytes, base=2)))
    if not fig.data:
        _empty_note(fig, "No memory figures: no point could be costed or measured.")
    return place_legend(fig)


def kv_figure(data: ReportData) -> go.Figure:
    """KV-cache bytes per token per layer, one bar per (variant, params, shape): the model's
    figure, which does not depend on the device or on T."""
    bars: dict = {}
    for s in data.series:
        r = next((r for r in s.rows if r.est is not None and r.est.status == "ok"), None)
        if r is None:
            continue
        label = params_label_of(s, data)
        bars.setdefault(label, (s.variant, r.est.kv_cache_bytes_per_token, r.est))
    fig = go.Figure()
    ytitle = "KV cache per token per layer"
    if bars:
        vmax = max(v for _, v, _ in bars.values()) or 1
        unit, scale = ("MiB", 2**20) if vmax >= 2**20 else ("KiB", 2**10) if vmax >= 2**10 else ("bytes", 1)
        labels = list(bars)
        fig.add_trace(go.Bar(
            x=[plot_text(lab) for lab in labels], y=[bars[k][1] / scale for k in labels],
            marker=dict(color=[color_for(bars[k][0]) for k in labels]),
            text=[fmt.nbytes(bars[k][1]) if bars[k][1] else "no KV cache" for k in labels],
            textposition="outside", cliponaxis=False,
            hovertext=[f"<b>{plot_text(k)}</b><br>{fmt.count(bars[k][1])} bytes per token per layer "
                       f"({fmt.nbytes(bars[k][1], 4)})<br>at T = {fmt.count(bars[k][2].shape.T)}, batch "
                       f"{bars[k][2].shape.batch}: {fmt.nbytes(bars[k][2].kv_cache_bytes, 4)} in all"
                       for k in labels], hoverinfo="text", showlegend=False))
        ytitle += f" ({unit})"
    fig.update_layout(**_layout("KV cache per token per layer (what decode keeps for each past token)",
                                "", ytitle, height=440, margin=dict(l=90, r=20, t=60, b=110),
                                xaxis=dict(tickangle=-25, type="category"), yaxis=dict(rangemode="tozero")))
    if not fig.data:
        _empty_note(fig, "No point could be costed by the model.")
    return fig


def params_label_of(s: Series, data: ReportData) -> str:
    """The series label without the run part (the model's numbers are the same on every device)."""
    if len(data.sources) > 1 and s.label.endswith(" · " + s.source.label):
        return s.label[: -len(" · " + s.source.label)]
    return s.label


# -- heatmap -----------------------------------------------------------------------------

def heatmap_figure(grid: Optional[Grid], baseline: str) -> go.Figure:
    """Speedup of ``grid.variant`` over the baseline on a d x T grid (cost model), log2 colour
    scale centred on 1x: blue, the variant is faster; red, slower."""
    fig = go.Figure()
    if grid is None:
        fig.update_layout(**_layout("Speedup over the baseline", "sequence length T (tokens)", "model width d"))
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
                          f"{show(grid.variant_values[i][j], 4)}<br>{plot_text(grid.baseline)}: "
                          f"{show(grid.baseline_values[i][j], 4)}")
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
    fig.add_trace(go.Heatmap(
        x=[fmt.tokens(T) for T in grid.Ts], y=[fmt.count(d) for d in grid.ds], z=z, text=text,
        texttemplate="%{text}", textfont=dict(size=11), hovertext=hover, hoverinfo="text",
        colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim, xgap=1, ygap=1,
        colorbar=dict(title=dict(text="speedup", side="right"), tickvals=ticks,
                      ticktext=[f"{2**v}×" if v >= 0 else f"1/{2**-v}×" for v in ticks])))
    basis = (f"predicted time on {plot_text(grid.hardware)}" if grid.metric == "time"
             else "FLOPs (no hardware profile, no time model)")
    sh = grid.shape
    fig.update_layout(**_layout(
        f"Speedup of {plot_text(grid.label)} over {plot_text(grid.baseline)} by {basis}",
        f"sequence length T (tokens) · {sh.phase}, batch {sh.batch}, {sh.dtype}, head dim {sh.head_dim}",
        "model width d", height=80 + 48 * len(grid.ds) + 90,
        xaxis=dict(type="category", showgrid=False, ticks=""), yaxis=dict(type="category", showgrid=False, ticks="")))
    fig.add_annotation(text="blue: the variant is faster · red: slower", xref="paper", yref="paper",
                       x=1.0, y=1.02, xanchor="right", yanchor="bottom", showarrow=False,
                       font=dict(size=11, color="#555"))
    return fig


def _speedup_text(sp: float) -> str:
    if sp >= 100:
        return f"{sp:.0f}×"
    if sp >= 10:
        return f"{sp:.1f}×"
    return f"{sp:.2f}×"


# -- roofline ----------------------------------------------------------------------------

def roofline_figure(data: ReportData) -> go.Figure:
    """Achieved FLOP/s against arithmetic intensity (model FLOPs / fused bytes) per point, under
    each device's ceilings: peak FLOP/s of the run's dtype and memory bandwidth x intensity.
    Measured runs use the measured median time; a prediction uses the predicted time."""
    fig = go.Figure()
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
        hover = [f"{_head(s, r.T)}<br>intensity {ai:.4g} FLOP/byte<br>achieved <b>{fmt.rate(fl, 4)}</b>"
                 + (f" ({fmt.pct(fl / peak, 3, signed=False)} of peak)" if peak else "")
                 + f"<br>{fmt.flops(r.flops, 4)} in {fmt.ms(t, 4)} "
                 + ("measured" if measured else "predicted")
                 + f"<br>{fmt.nbytes(r.est.bytes_fused, 4)} moved (model)"
                 for r, ai, fl, t in pts]
        fig.add_trace(go.Scatter(
            x=[p[1] for p in pts], y=[p[2] for p in pts], mode="markers+lines",
            name=plot_text(s.label), legendgroup=f"s{i}",
            line=dict(color=color_for(s.variant), width=1, dash="dot"),
            marker=dict(symbol=symbol_for(s.style), size=9, color=color_for(s.variant),
                        line=dict(color="white", width=1)),
            hovertext=hover, hoverinfo="text"))
    lo = min(xs_all) / 4 if xs_all else 0.5
    hi = max(xs_all) * 4 if xs_all else 4096
    seen = set()
    ceilings = []
    for src in data.sources:
        hw = src.hardware
        if hw is None or (hw.name, src.dtype) in seen:
            continue
        seen.add((hw.name, src.dtype))
        peak = hw.peak(src.dtype)
        if peak and hw.bandwidth:
            ceilings.append((hw, src.dtype, peak))
            ridge = peak / hw.bandwidth
            lo, hi = min(lo, ridge / 8), max(hi, ridge * 8)
    for j, (hw, dtype, peak) in enumerate(ceilings):
        ridge = peak / hw.bandwidth
        ys = [lo * hw.bandwidth, peak, peak]
        ys_all += [ys[0], peak]
        fig.add_trace(go.Scatter(
            x=[lo, ridge, hi], y=ys, mode="lines", name=plot_text(f"{hw.name} ceiling ({dtype})"),
            line=dict(color="#333", width=2.5, dash=dash_for(j)),
            hovertext=[f"<b>{plot_text(hw.name)}</b><br>bandwidth {fmt.bandwidth(hw.bandwidth, 4)}",
                       f"<b>{plot_text(hw.name)}</b><br>ridge at {ridge:.4g} FLOP/byte",
                       f"<b>{plot_text(hw.name)}</b><br>peak {fmt.rate(peak, 4)} ({plot_text(dtype)})"],
            hoverinfo="text"))
    which = "measured" if measured else "predicted"
    fig.update_layout(**_layout(f"Roofline: achieved FLOP/s ({which}) vs arithmetic intensity",
                                "arithmetic intensity (FLOP per byte moved, fused kernels)", "achieved FLOP/s",
                                xaxis=log_axis([lo, hi], fmt.sig), yaxis=log_axis(ys_all, fmt.rate)))
    if not fig.data:
        _empty_note(fig, "No point with a time to place on the roofline.")
    elif not ceilings:
        fig.add_annotation(text="no hardware profile with peak FLOP/s and bandwidth: ceilings not drawn",
                           xref="paper", yref="paper", x=0.01, y=0.98, xanchor="left", showarrow=False,
                           font=dict(size=12, color="#a00"))
    return place_legend(fig)


# -- cost vs fidelity --------------------------------------------------------------------

INPUT_SYMBOLS = {"random": "circle", "structured": "diamond"}
FIDELITY_ROW_HEIGHT = 360


def _fidelity_hover(data: FidelityData, f: Facet, q: FidPoint) -> str:
    p = q.raw
    lines = [f"<b>{plot_text(q.label)}</b>",
             f"T = {fmt.count(p.T)} · {plot_text(p.inputs)} inputs · {'causal' if p.causal else 'not causal'}",
             f"output cosine <b>{q.cosine:.6f}</b>"
             + (f" · rel. error {p.rel_error_output:.4g}" if p.rel_error_output is not None else "")]
    if p.cosine_attention is not None:
        lines.append(f"attention-matrix cosine {p.cosine_attention:.6f}")
    b = f.baselines.get(p.causal)
    if b is not None:
        lines.append(f"uniform-mean baseline cosine {b:.6f}")
    cost = []
    if q.time_s:
        cost.append(f"predicted {fmt.ms(q.time_s, 4)}" + (f" on {plot_text(data.hardware)}"
                                                           if data.metric == "time" else ""))
    if q.flops:
        cost.append(f"{fmt.flops(q.flops, 4)} ({fmt.count(q.flops)} FLOPs)")
    lines.append(" · ".join(cost))
    d = p.distill
    if isinstance(d, dict) and "steps" in d:
        lines.append(f"distilled {plot_text(d.get('steps'))} steps, final loss {plot_text(d.get('final_loss'))}")
    lines.append("<b>on the Pareto front</b>" if q.on_front else
                 f"dominated{' by ' + plot_text(q.dominated_by) if q.dominated_by else ''}")
    return "<br>".join(lines)


def _front_labels(front: list) -> list:
    """[(x, y, text)]: one label per distinct place on the front, naming every point there
    (gqa and mqa, or flash and a window wider than T, can coincide), left of the marker."""
    out: list = []
    for q in front:
        if out and out[-1][0] == q.cost and abs(out[-1][1] - q.cosine) <= TOL:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + ", " + q.label)
        else:
            out.append((q.cost, q.cosine, q.label))
    return [(x, y, t + "  ") for x, y, t in out]


def _facet_range(f: Facet, labels: list, plot_w: float) -> tuple:
    """(lo, hi) of a facet's cost axis, with room on the left for the front's labels (they sit
    left of their point, where no point can be: anything there would dominate it): the lowest
    log10(lo) that fits every label, at most two decades below the cheapest point."""
    xs = [q.cost for q in f.points]
    hi = max(xs) * 1.6
    h, lo_log = math.log10(hi), math.log10(min(xs) / 1.3)
    for x, _, t in labels:
        w = 6.0 * len(t) + 14
        if w < plot_w - 40:
            lo_log = min(lo_log, (math.log10(x) * plot_w - w * h) / (plot_w - w))
    return 10 ** max(lo_log, math.log10(min(xs)) - 2.0), hi


def _facet_points(fig: go.Figure, data: FidelityData, f: Facet, symbol: str, shown: set) -> None:
    """The facet's points by variant: the front's outlined and full size, the others faded."""
    by_variant: dict = {}
    for q in f.points:
        by_variant.setdefault(q.variant, []).append(q)
    for variant, qs in by_variant.items():
        c = color_for(variant)
        fig.add_trace(go.Scatter(
            x=[q.cost for q in qs], y=[q.cosine for q in qs], mode="markers",
            name=plot_text(variant), legendgroup=f"v-{variant}", showlegend=False,
            marker=dict(symbol=symbol, size=[13 if q.on_front else 9 for q in qs], color=c,
                        opacity=[1.0 if q.on_front else 0.5 for q in qs],
                        line=dict(color=["#111" if q.on_front else "white" for q in qs], width=1.2)),
            hovertext=[_fidelity_hover(data, f, q) for q in qs], hoverinfo="text"), row=f.row, col=f.col)
        if variant not in shown:  # the legend entry: the variant's colour, plain
            shown.add(variant)
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=plot_text(variant),
                                     legendgroup=f"v-{variant}", marker=dict(symbol="circle", size=9, color=c),
                                     hoverinfo="skip"), row=f.row, col=f.col)


def _facet_front(fig: go.Figure, f: Facet, labels: list, shown: set) -> None:
    """The Pareto front as a step line, with its points' labels."""
    fig.add_trace(go.Scatter(
        x=[q.cost for q in f.front], y=[q.cosine for q in f.front], mode="lines", line_shape="hv",
        line=dict(color="#111", width=1.6), name="Pareto front", legendgroup="front",
        showlegend="front" not in shown, hoverinfo="skip"), row=f.row, col=f.col)
    fig.add_trace(go.Scatter(
        x=[x for x, _, _ in labels], y=[y for _, y, _ in labels], mode="text", showlegend=False,
        text=[plot_text(t) for _, _, t in labels], textposition="middle left",
        textfont=dict(size=10, color="#222"), cliponaxis=False, hoverinfo="skip"), row=f.row, col=f.col)
    shown.add("front")


def _facet_baselines(fig: go.Figure, f: Facet, lo: float, hi: float, shown: set) -> None:
    """Uniform attention's cosine as a horizontal line (dashed: causal, dotted: not)."""
    for causal, b in sorted(f.baselines.items(), reverse=True):
        what = "uniform mean" + ((" (causal)" if causal else " (not causal)") if len(f.baselines) > 1 else "")
        fig.add_trace(go.Scatter(
            x=[lo, hi], y=[b, b], mode="lines", line=dict(color="#777", width=1.2, dash="dash" if causal else "dot"),
            name="uniform-mean baseline", legendgroup="baseline", showlegend="baseline" not in shown,
            hovertext=[f"{what}: output cosine {b:.6f}<br>(uniform attention over the visible keys: "
                       "the plain mean of V)"] * 2, hoverinfo="text"), row=f.row, col=f.col)
        fig.add_annotation(text=f"{what} {b:.3f}", x=math.log10(hi), y=b, xanchor="right", yanchor="bottom",
                           showarrow=False, font=dict(size=10, color="#555"), row=f.row, col=f.col)
        shown.add("baseline")


def _input_symbol(data: FidelityData, kind: str) -> str:
    return INPUT_SYMBOLS.get(kind) or symbol_for(data.inputs.index(kind) + 2)


def _empty_facets(fig: go.Figure, data: FidelityData, nrows: int, ncols: int) -> None:
    filled = {(f.row, f.col) for f in data.facets}
    for r in range(1, nrows + 1):
        for c in range(1, ncols + 1):
            if data.facets and (r, c) not in filled:  # e.g. random inputs at one T only
                fig.add_annotation(text="no point at this T and input kind", xref="x domain", yref="y domain",
                                   x=0.5, y=0.5, showarrow=False, font=dict(size=12, color="#888"), row=r, col=c)
                fig.update_xaxes(showticklabels=False, showgrid=False, row=r, col=c)
                fig.update_yaxes(showticklabels=False, showgrid=False, row=r, col=c)


def fidelity_figure(data: FidelityData) -> go.Figure:
    """Facets: a row per T, a column per input kind. Points coloured by variant, shaped by input
    kind, the front's points outlined and labelled, the dominated ones faded; the front as a step
    line; uniform attention's cosine as a dashed horizontal line."""
    nrows, ncols = max(1, len(data.rows)), max(1, len(data.inputs))
    titles = [""] * (nrows * ncols)
    for f in data.facets:
        titles[(f.row - 1) * ncols + f.col - 1] = plot_text(f.title)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.07,
                        vertical_spacing=min(0.12, 0.5 / nrows))
    shown: set = set()
    plot_w = (1240 - 80 - 20 - 170) / ncols  # px of one subplot (page width less margins and legend)
    label = fmt.ms_value if data.metric == "time" else fmt.flops
    for f in data.facets:
        labels = _front_labels(f.front)
        lo, hi = _facet_range(f, labels, plot_w)
        _facet_points(fig, data, f, _input_symbol(data, f.inputs), shown)
        _facet_front(fig, f, labels, shown)
        _facet_baselines(fig, f, lo, hi, shown)
        vals, text = fmt.log_ticks(lo, hi, label, max_ticks=6)
        fig.update_xaxes(type="log", range=[math.log10(lo), math.log10(hi)], tickvals=vals or None,
                         ticktext=text or None, row=f.row, col=f.col)
    _empty_facets(fig, data, nrows, ncols)
    ys = [q.cosine for f in data.facets for q in f.points] + [b for f in data.facets for b in f.baselines.values()]
    fig.update_xaxes(**AXIS)
    fig.update_yaxes(**AXIS, range=[min([0.0] + ys) - 0.04, 1.06])
    fig.add_annotation(text=plot_text(axis_title(data)), xref="paper", yref="paper", x=0.5, y=0, yshift=-48,
                       xanchor="center", yanchor="top", showarrow=False, font=dict(size=13))
    for r in range(1, nrows + 1):
        fig.update_yaxes(title_text="output cosine to exact", row=r, col=1)
    for kind in data.inputs:  # the markers' key: input kinds by shape
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{plot_text(kind)} inputs",
                                 marker=dict(symbol=_input_symbol(data, kind), size=9, color="#666"),
                                 hoverinfo="skip", legendrank=1))
    fig.update_layout(
        title=dict(text="Cost vs fidelity: output cosine to exact attention against cost, per T and input kind",
                   x=0.01, xanchor="left", font=dict(size=17)),
        template="plotly_white", font=dict(family=FONT, size=13), height=110 + FIDELITY_ROW_HEIGHT * nrows,
        margin=dict(l=80, r=20, t=80, b=80), hovermode="closest",
        hoverlabel=dict(font=dict(family=FONT, size=12), align="left"),
        legend=dict(font=dict(size=11), itemsizing="constant", tracegroupgap=1))
    if not data.facets:
        fig.add_annotation(text="No fidelity point with status ok could be costed.", xref="paper", yref="paper",
                           x=0.5, y=0.5, showarrow=False, font=dict(size=15, color="#666"))
    return fig
