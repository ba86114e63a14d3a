"""The report's plotly figures, built from ``ReportData``. Every user string passes through
``fmt.plot_text`` before plotly sees it; hover text is prebuilt per point (``hovertext``), never a
template that could interpret a user's "%{...}"."""

import math
from typing import Optional

import plotly.graph_objects as go

from . import fmt
from .colors import CROSSOVER_SYMBOL, ERROR_SYMBOL, OOM_SYMBOL, color_for, dash_for, symbol_for
from .data import Grid, ReportData, Series, crossovers

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
HEIGHT = 520


def _layout(title: str, x_title: str, y_title: str, xaxis: dict = None, yaxis: dict = None, **kw) -> dict:
    """The common layout; ``xaxis``/``yaxis`` are merged into the defaults (titles kept)."""
    axis = dict(showline=True, linecolor="#888", mirror=True, zeroline=False, gridcolor="#e8e8e8",
                ticks="outside", ticklen=4, tickcolor="#888")
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
        xaxis={**axis, "title": dict(text=x_title), **(xaxis or {})},
        yaxis={**axis, "title": dict(text=y_title), **(yaxis or {})},
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
        return dict(name=fmt.plot_text(label), legendgroup=f"s{i}", showlegend=first)


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


def _log_ticks(lo: float, hi: float, label) -> dict:
    vals, text = fmt.log_ticks(lo, hi, label)
    return dict(type="log", tickvals=vals, ticktext=text) if vals else dict(type="log")


def _empty_note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=fmt.plot_text(text), xref="paper", yref="paper", x=0.5, y=0.5,
                       showarrow=False, font=dict(size=15, color="#666"))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)


def _T_axis(Ts: list) -> dict:
    if not Ts:
        return dict(type="log")
    vals, text = fmt.pow2_ticks(min(Ts), max(Ts))
    return dict(type="log", tickvals=vals, ticktext=text)


def _head(s: Series, T) -> str:
    return f"<b>{fmt.plot_text(s.label)}</b><br>T = {fmt.count(T)}"


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
                                yaxis=_log_ticks(min(ys), max(ys), fmt.flops) if ys else None))
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
                     + (f" ({fmt.plot_text(r.est.bound)}-bound)" if r.est is not None and r.est.bound else "")
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
                     + (f"<br>backend: {fmt.plot_text(r.backend)}" if r.backend else "")
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
            key.append((f"crossover with {fmt.plot_text(data.baseline)}",
                        dict(mode="markers", marker=dict(symbol=CROSSOVER_SYMBOL, size=13, color="#fff",
                                                         line=dict(color="black", width=1)))))
        _key(fig, key)
    fig.update_layout(**_layout("Time per layer vs sequence length",
                                "sequence length T (tokens)", "time per layer",
                                xaxis=_T_axis(_series_Ts(data)),
                                yaxis=_log_ticks(min(ys), max(ys), fmt.ms_value) if ys else None))
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
    if "oom" in statuses:
        out.append(("out of memory", dict(mode="markers", marker=dict(symbol=OOM_SYMBOL, size=12, color="#d00",
                                                                      line=dict(width=2.5, color="#d00")))))
    if "error" in statuses:
        out.append(("error", dict(mode="markers", marker=dict(symbol=ERROR_SYMBOL, size=12, color="#000",
                                                              line=dict(width=2, color="#000")))))
    return out


def _failure_markers(fig: go.Figure, s: Series, i: int, legend, y_of, ys: list) -> bool:
    """OOM and error points of a series, placed at ``y_of(row)`` where that is known."""
    drew = False
    for status, symbol, what, col in (("oom", OOM_SYMBOL, "out of memory", "#d00"),
                                      ("error", ERROR_SYMBOL, "error", "#000")):
        rows = [(r, y_of(r)) for r in s.rows if r.status == status]
        rows = [(r, y) for r, y in rows if y]
        if not rows:
            continue
        drew = True
        ys += [y for _, y in rows]
        hover = [f"{_head(s, r.T)}<br><b>{what}</b>"
                 + (f": {fmt.plot_text((r.message or '')[:300])}" if r.message else "") for r, _ in rows]
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
            for T, t, direction in crossovers(s.values(what), b.values(what)):
                xs.append(T)
                yv.append(t * 1e3)
                colors.append(color_for(s.variant))
                verb = "becomes faster than" if direction == "below" else "becomes slower than"
                hover.append(f"<b>crossover ({what})</b><br>{fmt.plot_text(s.label)} {verb} "
                             f"{fmt.plot_text(b.label)}<br>at T ≈ {fmt.count(T)}, {fmt.ms(t, 4)}")
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
                x=[min(Ts), max(Ts)], y=[cap, cap], mode="lines", name=f"{fmt.plot_text(name)} memory",
                line=dict(color="#444", dash=dash_for(j + 3), width=1.2),
                hovertext=[f"{fmt.plot_text(name)}: {fmt.nbytes(cap, 4)} of device memory"] * 2, hoverinfo="text"))
            ys.append(cap)
    if fig.data:
        key = [("model, fused", dict(mode="lines", line=dict(color=GREY, width=2.2))),
               ("model, unfused", dict(mode="lines", line=dict(color=GREY, width=1.4, dash="dash")))]
        if any_meas:
            key.append(("measured peak", dict(mode="markers", marker=dict(color=GREY, size=8))))
        _key(fig, key + _failure_key(data))
    fig.update_layout(**_layout("Peak activation memory per layer vs sequence length",
                                "sequence length T (tokens)", "peak activation memory",
                                xaxis=_T_axis(Ts), yaxis=_bytes_axis(ys)))
    if not fig.data:
        _empty_note(fig, "No memory figures: no point could be costed or measured.")
    return place_legend(fig)


def _bytes_axis(ys: list) -> Optional[dict]:
    if not ys:
        return None
    vals, text = fmt.binary_ticks(min(ys), max(ys))
    return dict(type="log", tickvals=vals, ticktext=text)


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
            x=[fmt.plot_text(lab) for lab in labels], y=[bars[k][1] / scale for k in labels],
            marker=dict(color=[color_for(bars[k][0]) for k in labels]),
            text=[fmt.nbytes(bars[k][1]) if bars[k][1] else "no KV cache" for k in labels],
            textposition="outside", cliponaxis=False,
            hovertext=[f"<b>{fmt.plot_text(k)}</b><br>{fmt.count(bars[k][1])} bytes per token per layer "
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
                hr.append(f"{head}<br>{fmt.plot_text(grid.baseline)} {what} / {fmt.plot_text(grid.label)} "
                          f"{what} = <b>{sp:.4g}×</b><br>{fmt.plot_text(grid.label)}: "
                          f"{show(grid.variant_values[i][j], 4)}<br>{fmt.plot_text(grid.baseline)}: "
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
    basis = (f"predicted time on {fmt.plot_text(grid.hardware)}" if grid.metric == "time"
             else "FLOPs (no hardware profile, no time model)")
    sh = grid.shape
    fig.update_layout(**_layout(
        f"Speedup of {fmt.plot_text(grid.label)} over {fmt.plot_text(grid.baseline)} by {basis}",
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
            name=fmt.plot_text(s.label), legendgroup=f"s{i}",
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
            x=[lo, ridge, hi], y=ys, mode="lines", name=fmt.plot_text(f"{hw.name} ceiling ({dtype})"),
            line=dict(color="#333", width=2.5, dash=dash_for(j)),
            hovertext=[f"<b>{fmt.plot_text(hw.name)}</b><br>bandwidth {fmt.bandwidth(hw.bandwidth, 4)}",
                       f"<b>{fmt.plot_text(hw.name)}</b><br>ridge at {ridge:.4g} FLOP/byte",
                       f"<b>{fmt.plot_text(hw.name)}</b><br>peak {fmt.rate(peak, 4)} ({fmt.plot_text(dtype)})"],
            hoverinfo="text"))
    which = "measured" if measured else "predicted"
    fig.update_layout(**_layout(f"Roofline: achieved FLOP/s ({which}) vs arithmetic intensity",
                                "arithmetic intensity (FLOP per byte moved, fused kernels)", "achieved FLOP/s",
                                xaxis=_log_ticks(lo, hi, lambda v: fmt._sig(v, 3)),
                                yaxis=_log_ticks(min(ys_all), max(ys_all), fmt.rate) if ys_all else None))
    if not fig.data:
        _empty_note(fig, "No point with a time to place on the roofline.")
    elif not ceilings:
        fig.add_annotation(text="no hardware profile with peak FLOP/s and bandwidth: ceilings not drawn",
                           xref="paper", yref="paper", x=0.01, y=0.98, xanchor="left", showarrow=False,
                           font=dict(size=12, color="#a00"))
    return place_legend(fig)
