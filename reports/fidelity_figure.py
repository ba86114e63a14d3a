"""The cost-vs-fidelity chart: a facet per (T, input kind), each variant's points at (cost,
output cosine), the Pareto front as a step line with its points labelled, uniform attention's
cosine as a horizontal line. Every user string passes through ``plot_text``."""

import math


from . import fmt
from .colors import color_for, symbol_for
from .fidelity_data import TOL, Facet, FidelityData, FidPoint, axis_title
from .figures import AXIS, FONT
from .html import plot_text
from .plotdict import PlotFigure, scatter

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
        cost.append(f"{fmt.flops(q.flops, digits=4)} ({fmt.count(q.flops)} FLOPs)")
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


def _facet_points(fig: PlotFigure, data: FidelityData, f: Facet, symbol: str, shown: set) -> None:
    """The facet's points by variant: the front's outlined and full size, the others faded."""
    by_variant: dict = {}
    for q in f.points:
        by_variant.setdefault(q.variant, []).append(q)
    for variant, qs in by_variant.items():
        c = color_for(variant)
        fig.add_trace(scatter(
            x=[q.cost for q in qs], y=[q.cosine for q in qs], mode="markers",
            name=plot_text(variant), legendgroup=f"v-{variant}", showlegend=False,
            marker=dict(symbol=symbol, size=[13 if q.on_front else 10 for q in qs], color=c,
                        opacity=[1.0 if q.on_front else 0.75 for q in qs],
                        line=dict(color=["#111" if q.on_front else c for q in qs], width=1.2)),
            hovertext=[_fidelity_hover(data, f, q) for q in qs], hoverinfo="text"), row=f.row, col=f.col)
        if variant not in shown:  # the legend entry: the variant's colour, plain
            shown.add(variant)
            fig.add_trace(scatter(x=[None], y=[None], mode="markers", name=plot_text(variant),
                                     legendgroup=f"v-{variant}", marker=dict(symbol="circle", size=9, color=c),
                                     hoverinfo="skip"), row=f.row, col=f.col)


def _facet_front(fig: PlotFigure, f: Facet, labels: list, shown: set, y_range: tuple) -> None:
    """The Pareto front as a step line, with its points' labels."""
    fig.add_trace(scatter(
        x=[q.cost for q in f.front], y=[q.cosine for q in f.front], mode="lines",
        line=dict(color="#111", width=1.6, shape="hv"), name="Pareto front", legendgroup="front",
        showlegend="front" not in shown, hoverinfo="skip"), row=f.row, col=f.col)
    for (x, y, t), shift in zip(labels, _label_shifts([y for _, y, _ in labels], y_range)):
        fig.add_annotation(x=math.log10(x), y=y, text=plot_text(t.strip()), xanchor="right", yanchor="middle",
                           xshift=-9, yshift=shift, showarrow=False, bgcolor="rgba(255,255,255,0.85)", borderpad=1,
                           font=dict(size=10, color="#222"), row=f.row, col=f.col)
    shown.add("front")


LABEL_GAP = 13  # px between the baselines of two front labels


def _label_shifts(ys: list, y_range: tuple) -> list:
    """Vertical shifts (px) that keep the front's labels ``LABEL_GAP`` apart, the highest where
    it is, each lower one pushed down as far as needed."""
    per_unit = (FIDELITY_ROW_HEIGHT - 110) / (y_range[1] - y_range[0])
    order = sorted(range(len(ys)), key=lambda i: -ys[i])
    shifts = [0.0] * len(ys)
    last = None
    for i in order:
        px = ys[i] * per_unit
        if last is not None and last - px < LABEL_GAP:
            shifts[i] = -(LABEL_GAP - (last - px))
            px = last - LABEL_GAP
        last = px
    return shifts


def _facet_baselines(fig: PlotFigure, f: Facet, lo: float, hi: float, shown: set) -> None:
    """Uniform attention's cosine as a horizontal line (dashed: causal, dotted: not)."""
    for causal, b in sorted(f.baselines.items(), reverse=True):
        what = "uniform mean" + ((" (causal)" if causal else " (not causal)") if len(f.baselines) > 1 else "")
        fig.add_trace(scatter(
            x=[lo, hi], y=[b, b], mode="lines", line=dict(color="#777", width=1.2, dash="dash" if causal else "dot"),
            name="uniform-mean baseline", legendgroup="baseline", showlegend="baseline" not in shown,
            hovertext=[f"{what}: output cosine {b:.6f}<br>(uniform attention over the visible keys: "
                       "the plain mean of V)"] * 2, hoverinfo="text"), row=f.row, col=f.col)
        fig.add_annotation(text=f"{what} {b:.3f}", x=math.log10(hi), y=b, xanchor="right", yanchor="bottom",
                           showarrow=False, font=dict(size=10, color="#555"), row=f.row, col=f.col)
        shown.add("baseline")


def _input_symbol(data: FidelityData, kind: str) -> str:
    return INPUT_SYMBOLS.get(kind) or symbol_for(data.inputs.index(kind) + 2)


def _empty_facets(fig: PlotFigure, data: FidelityData, nrows: int, ncols: int) -> None:
    filled = {(f.row, f.col) for f in data.facets}
    for r in range(1, nrows + 1):
        for c in range(1, ncols + 1):
            if data.facets and (r, c) not in filled:  # e.g. random inputs at one T only
                fig.add_annotation(text="no point at this T and input kind", xref="x domain", yref="y domain",
                                   x=0.5, y=0.5, showarrow=False, font=dict(size=12, color="#888"), row=r, col=c)
                fig.update_xaxes(showticklabels=False, showgrid=False, row=r, col=c)
                fig.update_yaxes(showticklabels=False, showgrid=False, row=r, col=c)


def fidelity_figure(data: FidelityData) -> PlotFigure:
    """Facets: a row per T, a column per input kind. Points coloured by variant, shaped by input
    kind, the front's points outlined and labelled, the dominated ones faded; the front as a step
    line; uniform attention's cosine as a dashed horizontal line."""
    nrows, ncols = max(1, len(data.rows)), max(1, len(data.inputs))
    titles = [""] * (nrows * ncols)
    for f in data.facets:
        titles[(f.row - 1) * ncols + f.col - 1] = plot_text(f.title)
    fig = PlotFigure.subplots(rows=nrows, cols=ncols, subplot_titles=tuple(titles), horizontal_spacing=0.07,
                        vertical_spacing=min(0.12, 0.5 / nrows))
    shown: set = set()
    plot_w = (1240 - 80 - 20 - 170) / ncols  # px of one subplot (page width less margins and legend)
    label = fmt.ms_value if data.metric == "time" else fmt.flops
    ys = [q.cosine for f in data.facets for q in f.points] + [b for f in data.facets for b in f.baselines.values()]
    y_range = (min([0.0] + ys) - 0.04, 1.06)
    for f in data.facets:
        labels = _front_labels(f.front)
        lo, hi = _facet_range(f, labels, plot_w)
        _facet_points(fig, data, f, _input_symbol(data, f.inputs), shown)
        _facet_front(fig, f, labels, shown, y_range)
        _facet_baselines(fig, f, lo, hi, shown)
        vals, text = fmt.log_ticks(lo, hi, label, max_ticks=6)
        fig.update_xaxes(type="log", range=[math.log10(lo), math.log10(hi)], tickvals=vals or None,
                         ticktext=text or None, row=f.row, col=f.col)
    _empty_facets(fig, data, nrows, ncols)
    fig.update_xaxes(**AXIS)
    fig.update_yaxes(**AXIS, range=list(y_range))
    fig.add_annotation(text=plot_text(axis_title(data)), xref="paper", yref="paper", x=0.5, y=0, yshift=-48,
                       xanchor="center", yanchor="top", showarrow=False, font=dict(size=13))
    for r in range(1, nrows + 1):
        fig.update_yaxes(title=dict(text="output cosine to exact"), row=r, col=1)
    for kind in data.inputs:  # the markers' key: input kinds by shape
        fig.add_trace(scatter(x=[None], y=[None], mode="markers", name=f"{plot_text(kind)} inputs",
                                 marker=dict(symbol=_input_symbol(data, kind), size=9, color="#666"),
                                 hoverinfo="skip", legendrank=1))
    fig.update_layout(
        title=dict(text="Output cosine to exact attention against cost, per T and input kind",
                   x=0.01, xanchor="left", font=dict(size=17)),
        template="plotly_white", font=dict(family=FONT, size=13), height=110 + FIDELITY_ROW_HEIGHT * nrows,
        margin=dict(l=80, r=20, t=80, b=80), hovermode="closest",
        hoverlabel=dict(font=dict(family=FONT, size=12), align="left"),
        legend=dict(font=dict(size=11), itemsizing="constant", tracegroupgap=1))
    if not data.facets:
        fig.add_annotation(text="No fidelity point with status ok could be costed.", xref="paper", yref="paper",
                           x=0.5, y=0.5, showarrow=False, font=dict(size=15, color="#666"))
    return fig
