"""Cost against fidelity: the JSON of `attncost fidelity --json` beside the cost model.

Each fidelity point (one variant at one T on one kind of input) is placed at x = its cost at the
point's own shape by ``costmodel.estimate`` (predicted time on the report's hardware profile where
one is known for every point, else FLOPs) and y = the cosine similarity of its output to exact
softmax attention on the same Q/K/V. Per (T, inputs) the Pareto front is the set of points no
other point beats on both: cheaper (or as cheap) and at least as faithful, and strictly better
in one. Fidelities closer than ``TOL`` count as equal, so that exact attention run two ways
(mha, flash: cosine 1 up to rounding) does not make the dearer one "better".

No torch here; strings from the file stay raw and are escaped where they are rendered.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pydantic import ValidationError

from ..costmodel.shape import Shape
from . import fmt
from .colors import color_for, symbol_for
from .data import HardwareInfo, _estimate, hardware_info
from .fmt import esc

SCHEMA = "attncost-fidelity"
SCHEMA_VERSIONS = (1,)
TOL = 1e-6  # cosines closer than this are equal for dominance
INPUT_SYMBOLS = {"random": "circle", "structured": "diamond"}
ROW_HEIGHT = 360


class FidelityFileError(ValueError):
    """A fidelity file that cannot be read or is not `attncost fidelity --json` output."""


# -- loading and validation -------------------------------------------------------------------

def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_fidelity(doc, where: str = "the fidelity data") -> dict:
    """Validate a parsed fidelity document; returns it. Raises FidelityFileError (one sentence)."""
    def bad(what: str):
        return FidelityFileError(f"{where} is not an attncost fidelity file ({what})")

    if not isinstance(doc, dict):
        raise bad("top level: expected an object")
    if doc.get("schema") != SCHEMA:
        raise bad(f"schema: expected {SCHEMA!r}, got {doc.get('schema')!r}")
    if doc.get("schema_version") not in SCHEMA_VERSIONS:
        raise bad(f"schema_version: expected one of {', '.join(map(str, SCHEMA_VERSIONS))}, "
                  f"got {doc.get('schema_version')!r}")
    if not isinstance(doc.get("settings", {}), dict):
        raise bad("settings: expected an object")
    points = doc.get("points")
    if not isinstance(points, list):
        raise bad("points: expected a list")
    for i, p in enumerate(points):
        at = f"points.{i}"
        if not isinstance(p, dict):
            raise bad(f"{at}: expected an object")
        for key, typ in (("variant", str), ("label", str), ("status", str), ("inputs", str), ("params", dict),
                         ("shape", dict)):
            if not isinstance(p.get(key), typ):
                raise bad(f"{at}.{key}: expected {'a string' if typ is str else 'an object'}")
        if not isinstance(p.get("T"), int) or isinstance(p.get("T"), bool) or p["T"] < 1:
            raise bad(f"{at}.T: expected a positive integer")
        if not isinstance(p.get("causal"), bool):
            raise bad(f"{at}.causal: expected true or false")
        if p["status"] != "ok":
            continue
        if not _is_num(p.get("cosine_output")):
            raise bad(f"{at}.cosine_output: expected a number for a point with status ok")
        for key in ("baseline_cosine_output", "rel_error_output", "cosine_attention", "rel_error_attention"):
            if p.get(key) is not None and not _is_num(p.get(key)):
                raise bad(f"{at}.{key}: expected a number or null")
        try:
            Shape(**p["shape"])
        except (ValidationError, TypeError, ValueError) as err:
            e = err.errors()[0] if isinstance(err, ValidationError) else {"loc": (), "msg": str(err)}
            sub = ".".join(str(x) for x in e["loc"])
            raise bad(f"{at}.shape{'.' + sub if sub else ''}: {e['msg']}")
    return doc


def load_fidelity(path) -> dict:
    """Read and validate a file written by `attncost fidelity --json`."""
    from ..costmodel.jsonfile import read_json_file

    return check_fidelity(read_json_file(path, "fidelity file", FidelityFileError), str(path))


# -- the Pareto front -------------------------------------------------------------------------

def pareto_front(items: list, tol: float = TOL) -> list:
    """Indices of the (cost, fidelity) pairs in ``items`` that no other pair dominates (lower
    cost is better, higher fidelity is better), cheapest first. ``q`` dominates ``p`` when it
    costs no more, is no less faithful (within ``tol``) and is strictly better in one of the two.
    Identical pairs are both on the front."""
    front = []
    for i, (c, f) in enumerate(items):
        dominated = any(c2 <= c and f2 >= f - tol and (c2 < c or f2 > f + tol)
                        for j, (c2, f2) in enumerate(items) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (items[i][0], -items[i][1]))


# -- the data ---------------------------------------------------------------------------------

@dataclass
class FidPoint:
    raw: dict
    label: str
    variant: str
    cosine: float
    cost: float  # ms (metric "time") or FLOPs
    flops: Optional[float]
    time_s: Optional[float]
    on_front: bool = False
    dominated_by: Optional[str] = None


@dataclass
class Facet:
    title: str  # "T = 1,024 · structured inputs"
    where: str  # "at T = 1,024 on structured inputs" (for sentences)
    T: int
    inputs: str
    row: int
    col: int
    points: list = field(default_factory=list)
    front: list = field(default_factory=list)
    baselines: dict = field(default_factory=dict)  # causal -> uniform-mean cosine


@dataclass
class FidelityData:
    sources: list  # [(label, path or None, doc)]
    facets: list
    metric: str  # "time" | "flops"
    hardware: Optional[str]
    rows: list  # row titles
    inputs: list  # column input kinds
    skipped: list  # [(label, T, inputs, status, reason)]
    uncosted: list  # [(label, T, inputs)]


def _row_key(src_i: int, p: dict) -> tuple:
    return (src_i, p["T"], p.get("d"), p.get("heads"), p.get("batch"))


def fidelity_data(docs: list, paths: Optional[list] = None, hardware=None) -> FidelityData:
    """Group the points of one or more fidelity documents into facets (T x inputs), cost them
    and find each facet's Pareto front."""
    paths = list(paths) if paths else [None] * len(docs)
    labels = []
    for i, (doc, path) in enumerate(zip(docs, paths)):
        check_fidelity(doc, str(path) if path else f"fidelity data #{i + 1}")
        labels.append(Path(path).name if path else f"fidelity #{i + 1}")
    sources = list(zip(labels, paths, docs))
    hw: Optional[HardwareInfo] = hardware_info(hardware)
    skipped, uncosted, costed = [], [], []
    for si, doc in enumerate(docs):
        for p in doc["points"]:
            if p["status"] != "ok":
                skipped.append((p["label"], p["T"], p["inputs"], p["status"], p.get("reason") or ""))
                continue
            est = _estimate(p["variant"], Shape(**p["shape"]), p["params"], hw)
            if est is None or est.status != "ok" or not est.flops:
                uncosted.append((p["label"], p["T"], p["inputs"]))
                continue
            costed.append((si, p, est))
    metric = "time" if hw is not None and costed and all(e.time_s for _, _, e in costed) else "flops"
    row_keys = sorted({_row_key(si, p) for si, p, _ in costed}, key=lambda k: (k[1], k[0], k[2] or 0, k[3] or 0))
    vary = [len({k[j] for k in row_keys}) > 1 for j in range(5)]
    inputs = sorted({p["inputs"] for _, p, _ in costed}, key=lambda x: (x not in INPUT_SYMBOLS, x))
    rows = []
    for k in row_keys:
        t = f"T = {fmt.count(k[1])}"
        extra = [f"d = {k[2]}" if vary[2] else "", f"{k[3]} heads" if vary[3] else "",
                 f"batch {k[4]}" if vary[4] else "", labels[k[0]] if len(docs) > 1 else ""]
        rows.append(" · ".join([t] + [e for e in extra if e]))
    facets: dict = {}
    for si, p, est in costed:
        rk = _row_key(si, p)
        key = (rk, p["inputs"])
        f = facets.get(key)
        if f is None:
            r = row_keys.index(rk)
            f = facets[key] = Facet(f"{rows[r]} · {p['inputs']} inputs",
                                    f"at {rows[r]} on {p['inputs']} inputs", p["T"], p["inputs"], r + 1,
                                    inputs.index(p["inputs"]) + 1)
        cost = est.time_s * 1e3 if metric == "time" else est.flops
        f.points.append(FidPoint(p, p["label"], p["variant"], float(p["cosine_output"]), cost, est.flops,
                                 est.time_s))
        b = p.get("baseline_cosine_output")
        if b is not None:
            f.baselines.setdefault(p["causal"], float(b))
    for f in facets.values():
        idx = pareto_front([(q.cost, q.cosine) for q in f.points])
        f.front = [f.points[i] for i in idx]
        for q in f.front:
            q.on_front = True
        for q in f.points:
            if not q.on_front:  # the cheapest point that beats it, for the hover
                better = [o for o in f.points if o is not q and o.cost <= q.cost and o.cosine >= q.cosine - TOL]
                q.dominated_by = min(better, key=lambda o: (o.cost, -o.cosine)).label if better else None
    ordered = sorted(facets.values(), key=lambda f: (f.row, f.col))
    return FidelityData(sources, ordered, metric, hw.name if metric == "time" and hw else None, rows, inputs,
                        skipped, uncosted)


def cost_text(data: FidelityData, q: FidPoint) -> str:
    return fmt.ms(q.time_s, 3) if data.metric == "time" else fmt.flops(q.flops)


def axis_title(data: FidelityData) -> str:
    if data.metric == "time":
        return f"predicted time per layer on {data.hardware} (ms, log scale)"
    return "FLOPs per layer by the cost model (log scale; no hardware profile)"


# -- findings ----------------------------------------------------------------------------------

def _names(items: list) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def fidelity_findings(data: FidelityData) -> list:
    """Sentences from the data: each facet's front, cheapest first, and who falls below the
    uniform-mean baseline."""
    out = []
    basis = "by predicted time" if data.metric == "time" else "by FLOPs"
    for f in data.facets:
        front = ", ".join(f"{q.label} (cosine {q.cosine:.3f}, {cost_text(data, q)})" for q in f.front)
        dominated = [q for q in f.points if not q.on_front]
        text = f"{f.where[0].upper()}{f.where[1:]}, the Pareto front ({basis}), cheapest first, is {front}"
        if dominated:
            worst = sorted(dominated, key=lambda q: q.cosine)[:3]
            text += (f"; {len(dominated)} of {len(f.points)} points are dominated"
                     + (f", e.g. {_names([q.label for q in worst])}" if len(dominated) > len(worst) else
                        f": {_names([q.label for q in worst])}"))
        out.append(text + ".")
        below = []
        for q in f.points:
            b = f.baselines.get(q.raw["causal"])
            if b is not None and q.cosine < b and q.raw.get("kind") not in ("reference",):
                below.append(q.label)
        if below:
            out.append(f"{f.where[0].upper()}{f.where[1:]}, {_names(below)} "
                       f"{'is' if len(below) == 1 else 'are'} less faithful than uniform attention "
                       "(the plain mean of the visible values).")
    if not data.facets:
        out.append("No fidelity point could be placed: none has status ok and a cost by the model.")
    return out


# -- the figure --------------------------------------------------------------------------------

def _hover(data: FidelityData, f: Facet, q: FidPoint) -> str:
    p = q.raw
    lines = [f"<b>{fmt.plot_text(q.label)}</b>",
             f"T = {fmt.count(p['T'])} · {fmt.plot_text(p['inputs'])} inputs · "
             f"{'causal' if p['causal'] else 'not causal'}",
             f"output cosine <b>{q.cosine:.6f}</b>"
             + (f" · rel. error {p['rel_error_output']:.4g}" if p.get("rel_error_output") is not None else "")]
    if p.get("cosine_attention") is not None:
        lines.append(f"attention-matrix cosine {p['cosine_attention']:.6f}")
    b = f.baselines.get(p["causal"])
    if b is not None:
        lines.append(f"uniform-mean baseline cosine {b:.6f}")
    cost = []
    if q.time_s:
        cost.append(f"predicted {fmt.ms(q.time_s, 4)}" + (f" on {fmt.plot_text(data.hardware)}"
                                                           if data.metric == "time" else ""))
    if q.flops:
        cost.append(f"{fmt.flops(q.flops, 4)} ({fmt.count(q.flops)} FLOPs)")
    lines.append(" · ".join(cost))
    d = p.get("distill")
    if isinstance(d, dict) and "steps" in d:
        lines.append(f"distilled {fmt.plot_text(d.get('steps'))} steps, final loss "
                     f"{fmt.plot_text(d.get('final_loss'))}")
    lines.append("<b>on the Pareto front</b>" if q.on_front else
                 f"dominated{' by ' + fmt.plot_text(q.dominated_by) if q.dominated_by else ''}")
    return "<br>".join(lines)


def fidelity_figure(data: FidelityData) -> go.Figure:
    """Facets: a row per T, a column per input kind. Points coloured by variant, shaped by input
    kind, the front's points outlined and labelled, the dominated ones faded; the front as a step
    line; uniform attention's cosine as a dashed horizontal line."""
    nrows, ncols = max(1, len(data.rows)), max(1, len(data.inputs))
    titles = [""] * (nrows * ncols)
    for f in data.facets:
        titles[(f.row - 1) * ncols + f.col - 1] = fmt.plot_text(f.title)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.07,
                        vertical_spacing=min(0.12, 0.5 / nrows))
    shown: set = set()
    ys = [q.cosine for f in data.facets for q in f.points] + [b for f in data.facets for b in f.baselines.values()]
    plot_w = (1240 - 80 - 20 - 170) / ncols  # px of one subplot (page width less margins and legend)
    for f in data.facets:
        symbol = INPUT_SYMBOLS.get(f.inputs) or symbol_for(data.inputs.index(f.inputs) + 2)
        xs = [q.cost for q in f.points]
        labels = _front_labels(f.front)
        # room on the left for the labels (they sit left of their point, where no point can be:
        # anything there would dominate it): the lowest log10(lo) that fits every label
        hi = max(xs) * 1.6
        h, l = math.log10(hi), math.log10(min(xs) / 1.3)
        for x, _, t in labels:
            w = 6.0 * len(t) + 14
            if w < plot_w - 40:
                l = min(l, (math.log10(x) * plot_w - w * h) / (plot_w - w))
        lo = 10 ** max(l, math.log10(min(xs)) - 2.0)
        by_variant: dict = {}
        for q in f.points:
            by_variant.setdefault(q.variant, []).append(q)
        for variant, qs in by_variant.items():
            c = color_for(variant)
            fig.add_trace(go.Scatter(
                x=[q.cost for q in qs], y=[q.cosine for q in qs], mode="markers",
                name=fmt.plot_text(variant), legendgroup=f"v-{variant}", showlegend=False,
                marker=dict(symbol=symbol, size=[13 if q.on_front else 9 for q in qs], color=c,
                            opacity=[1.0 if q.on_front else 0.5 for q in qs],
                            line=dict(color=["#111" if q.on_front else "white" for q in qs], width=1.2)),
                hovertext=[_hover(data, f, q) for q in qs], hoverinfo="text"), row=f.row, col=f.col)
            if variant not in shown:  # the legend entry: the variant's colour, plain
                shown.add(variant)
                fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=fmt.plot_text(variant),
                                         legendgroup=f"v-{variant}", marker=dict(symbol="circle", size=9, color=c),
                                         hoverinfo="skip"), row=f.row, col=f.col)
        fig.add_trace(go.Scatter(
            x=[q.cost for q in f.front], y=[q.cosine for q in f.front], mode="lines", line_shape="hv",
            line=dict(color="#111", width=1.6), name="Pareto front", legendgroup="front",
            showlegend="front" not in shown, hoverinfo="skip"), row=f.row, col=f.col)
        fig.add_trace(go.Scatter(
            x=[x for x, _, _ in labels], y=[y for _, y, _ in labels], mode="text", showlegend=False,
            text=[fmt.plot_text(t) for _, _, t in labels], textposition="middle left",
            textfont=dict(size=10, color="#222"), cliponaxis=False, hoverinfo="skip"), row=f.row, col=f.col)
        shown.add("front")
        for j, (causal, b) in enumerate(sorted(f.baselines.items(), reverse=True)):
            what = ("uniform mean" + ((" (causal)" if causal else " (not causal)") if len(f.baselines) > 1 else ""))
            fig.add_trace(go.Scatter(
                x=[lo, hi], y=[b, b], mode="lines", line=dict(color="#777", width=1.2, dash="dash" if causal else "dot"),
                name="uniform-mean baseline", legendgroup="baseline", showlegend="baseline" not in shown,
                hovertext=[f"{what}: output cosine {b:.6f}<br>(uniform attention over the visible keys: "
                           "the plain mean of V)"] * 2, hoverinfo="text"), row=f.row, col=f.col)
            fig.add_annotation(text=f"{what} {b:.3f}", x=math.log10(hi), y=b, xanchor="right", yanchor="bottom",
                               showarrow=False, font=dict(size=10, color="#555"), row=f.row, col=f.col)
            shown.add("baseline")
        vals, text = fmt.log_ticks(lo, hi, (lambda v: fmt.ms_value(v)) if data.metric == "time" else fmt.flops,
                                   max_ticks=6)
        fig.update_xaxes(type="log", range=[math.log10(lo), math.log10(hi)], tickvals=vals or None,
                         ticktext=text or None, row=f.row, col=f.col)
    filled = {(f.row, f.col) for f in data.facets}
    for r in range(1, nrows + 1):
        for c in range(1, ncols + 1):
            if data.facets and (r, c) not in filled:  # e.g. random inputs at one T only
                fig.add_annotation(text="no point at this T and input kind", xref="x domain", yref="y domain",
                                   x=0.5, y=0.5, showarrow=False, font=dict(size=12, color="#888"), row=r, col=c)
                fig.update_xaxes(showticklabels=False, showgrid=False, row=r, col=c)
                fig.update_yaxes(showticklabels=False, showgrid=False, row=r, col=c)
    ylo = min([0.0] + ys) - 0.04
    axis = dict(showline=True, linecolor="#888", mirror=True, zeroline=False, gridcolor="#e8e8e8", ticks="outside",
                ticklen=4, tickcolor="#888")
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis, range=[ylo, 1.06])
    fig.add_annotation(text=fmt.plot_text(axis_title(data)), xref="paper", yref="paper", x=0.5, y=0, yshift=-48,
                       xanchor="center", yanchor="top", showarrow=False, font=dict(size=13))
    for r in range(1, nrows + 1):
        fig.update_yaxes(title_text="output cosine to exact", row=r, col=1)
    # the markers' key: input kinds by shape
    for kind in data.inputs:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{fmt.plot_text(kind)} inputs",
                                 marker=dict(symbol=INPUT_SYMBOLS.get(kind) or symbol_for(data.inputs.index(kind) + 2),
                                             size=9, color="#666"), hoverinfo="skip", legendrank=1))
    from .figures import FONT

    fig.update_layout(
        title=dict(text="Cost vs fidelity: output cosine to exact attention against cost, per T and input kind",
                   x=0.01, xanchor="left", font=dict(size=17)),
        template="plotly_white", font=dict(family=FONT, size=13), height=110 + ROW_HEIGHT * nrows,
        margin=dict(l=80, r=20, t=80, b=80), hovermode="closest",
        hoverlabel=dict(font=dict(family=FONT, size=12), align="left"),
        legend=dict(font=dict(size=11), itemsizing="constant", tracegroupgap=1))
    if not data.facets:
        fig.add_annotation(text="No fidelity point with status ok could be costed.", xref="paper", yref="paper",
                           x=0.5, y=0.5, showarrow=False, font=dict(size=15, color="#666"))
    return fig


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


# -- the section -------------------------------------------------------------------------------

def _settings_text(doc: dict) -> str:
    s = doc.get("settings") or {}
    keys = ("d", "heads", "batch", "causal", "inputs", "distill_steps", "seed", "dtype", "device")
    parts = [f"{k.replace('_', ' ')} {s[k] if not isinstance(s[k], list) else ', '.join(map(str, s[k]))}"
             for k in keys if k in s]
    for k in ("attncost_version", "torch_version"):
        if doc.get(k):
            parts.append(f"{k.replace('_', ' ')} {doc[k]}")
    return "; ".join(parts)


def section_html(page, data: FidelityData) -> str:
    """The "Cost vs fidelity" section: lead, findings, skipped points, the chart, every point."""
    from .page import _swatch, _table

    cost_what = (f"its predicted time per layer on {data.hardware}" if data.metric == "time"
                 else "its FLOPs per layer (no hardware profile was given, so no time)")
    lead = ("Each point is one variant at one T on one kind of input (a fidelity run): x is "
            f"{cost_what} by the cost model, at the shape the fidelity run used; y is the cosine similarity of "
            "its output to exact softmax attention on the same Q/K/V (1 = the same direction). The black step "
            "line is the Pareto front: the points that no other point beats on both cost and fidelity "
            "(outlined and labelled; dominated points are faded). The grey dashed line is uniform "
            "attention, the mean of the visible values: an approximation that knows nothing.")
    html = f'<p class="lead">{esc(lead)}</p>'
    html += '<ul class="findings">' + "".join(f"<li>{esc(t)}</li>" for t in fidelity_findings(data)) + "</ul>"
    notes = []
    if data.skipped:
        groups: dict = {}
        for label, T, inputs, status, reason in data.skipped:
            groups.setdefault((label, status, reason), []).append(T)
        detail = "; ".join(f"{label} ({status}{': ' + reason if reason else ''})"
                           for (label, status, reason) in groups)
        notes.append(f"{len(data.skipped)} point{'s' if len(data.skipped) != 1 else ''} skipped "
                     f"(status other than ok): {detail}.")
    if data.uncosted:
        notes.append(f"{len(data.uncosted)} point{'s' if len(data.uncosted) != 1 else ''} not drawn: the cost "
                     f"model cannot cost them ({_names(sorted({x[0] for x in data.uncosted}))}).")
    html += "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    html += page.figure("fig-fidelity", fidelity_figure(data))
    rows = []
    for f in data.facets:
        for q in sorted(f.points, key=lambda q: q.cost):
            p = q.raw
            b = f.baselines.get(p["causal"])
            rows.append([_swatch(q.variant) + esc(q.label), esc(fmt.count(p["T"])), esc(p["inputs"]),
                         "yes" if p["causal"] else "no", esc(cost_text(data, q)), esc(f"{q.cosine:.4f}"),
                         esc(f"{p['rel_error_output']:.4f}") if p.get("rel_error_output") is not None else "–",
                         esc(f"{b:.4f}") if b is not None else "–",
                         "front" if q.on_front else esc(f"dominated by {q.dominated_by}" if q.dominated_by
                                                        else "dominated")])
    if rows:
        html += ("<details><summary>Every point</summary>"
                 + _table(["variant", "T", "inputs", "causal", "time" if data.metric == "time" else "FLOPs",
                           "output cosine", "rel. error", "uniform mean", "Pareto"], rows, left=(0, 2, 3, 8))
                 + "</details>")
    for label, path, doc in data.sources:
        html += (f'<p class="note">Fidelity data: {esc(path or label)} — {esc(_settings_text(doc))}. '
                 "Cosines as measured by <code>attncost fidelity</code> (fp32, same Q/K/V); costs by the cost model "
                 "now.</p>")
    return html


__all__ = ["FidelityFileError", "check_fidelity", "load_fidelity", "pareto_front", "fidelity_data",
           "fidelity_findings", "fidelity_figure", "section_html"]
