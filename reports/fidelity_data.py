"""Cost against fidelity: the points of `attncost fidelity --json` files beside the cost model.

Each fidelity point (one variant at one T on one kind of input) is placed at x = its cost at the
point's own shape by ``costmodel.estimate`` (predicted time on the report's hardware profile where
one is known for every point, else FLOPs) and y = the cosine similarity of its output to exact
softmax attention on the same Q/K/V. Per (T, inputs) the Pareto front is the set of points no
other point beats on both: cheaper (or as cheap) and at least as faithful, and strictly better
in one. Fidelities closer than ``TOL`` count as equal, so that exact attention run two ways
(mha, flash: cosine 1 up to rounding) does not make the dearer one "better".

Strings from the files stay raw; the page and the figure escape them where they are rendered.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..costmodel.fidelity_doc import FidelityDoc, FidelityPoint, check_fidelity
from . import fmt
from .hardware import HardwareInfo, estimate_on, hardware_info

TOL = 1e-6  # cosines closer than this are equal for dominance
INPUT_KINDS = ("random", "structured")  # the input kinds `attncost fidelity` knows, in this order


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


@dataclass
class FidPoint:
    raw: FidelityPoint
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
    sources: list  # [(label, path or None, FidelityDoc)]
    facets: list
    metric: str  # "time" | "flops"
    hardware: Optional[str]
    rows: list  # row titles
    inputs: list  # column input kinds
    skipped: list  # [(label, T, inputs, status, reason)]
    uncosted: list  # [(label, T, inputs)]


def _row_key(src_i: int, p: FidelityPoint) -> tuple:
    return (src_i, p.T, p.d, p.heads, p.batch)


def _sources(docs: list, paths: Optional[list]) -> list:
    """[(label, path or None, FidelityDoc)]: each document typed (FidelityFileError if one is not)."""
    paths = list(paths) if paths else [None] * len(docs)
    out = []
    for i, (doc, path) in enumerate(zip(docs, paths)):
        typed: FidelityDoc = check_fidelity(doc, str(path) if path else f"fidelity data #{i + 1}")
        out.append((Path(path).name if path else f"fidelity #{i + 1}", path, typed))
    return out


def _row_titles(row_keys: list, labels: list) -> list:
    """"T = 1,024", with d, heads, batch and the file where they differ between rows."""
    vary = [len({k[j] for k in row_keys}) > 1 for j in range(5)]
    rows = []
    for k in row_keys:
        extra = [f"d = {k[2]}" if vary[2] else "", f"{k[3]} heads" if vary[3] else "",
                 f"batch {k[4]}" if vary[4] else "", labels[k[0]] if len(labels) > 1 else ""]
        rows.append(" · ".join([f"T = {fmt.count(k[1])}"] + [e for e in extra if e]))
    return rows


def _mark_front(f: Facet) -> None:
    idx = pareto_front([(q.cost, q.cosine) for q in f.points])
    f.front = [f.points[i] for i in idx]
    for q in f.front:
        q.on_front = True
    for q in f.points:
        if not q.on_front:  # the cheapest point that beats it, for the hover
            better = [o for o in f.points if o is not q and o.cost <= q.cost and o.cosine >= q.cosine - TOL]
            q.dominated_by = min(better, key=lambda o: (o.cost, -o.cosine)).label if better else None


def fidelity_data(docs: list, paths: Optional[list] = None, hardware=None) -> FidelityData:
    """Group the points of one or more fidelity documents (FidelityDoc, or their parsed JSON)
    into facets (T x inputs), cost them and find each facet's Pareto front."""
    sources = _sources(docs, paths)
    hw: Optional[HardwareInfo] = hardware_info(hardware)
    skipped, uncosted, costed = [], [], []
    for si, (_, _, doc) in enumerate(sources):
        for p in doc.points:
            if p.status != "ok":
                skipped.append((p.label, p.T, p.inputs, p.status, p.reason or ""))
                continue
            est = estimate_on(p.variant, p.shape, p.params, hw)
            if est is None or est.status != "ok" or not est.flops:
                uncosted.append((p.label, p.T, p.inputs))
                continue
            costed.append((si, p, est))
    metric = "time" if hw is not None and costed and all(e.time_s for _, _, e in costed) else "flops"
    row_keys = sorted({_row_key(si, p) for si, p, _ in costed}, key=lambda k: (k[1], k[0], k[2] or 0, k[3] or 0))
    inputs = sorted({p.inputs for _, p, _ in costed}, key=lambda x: (x not in INPUT_KINDS, x))
    rows = _row_titles(row_keys, [label for label, _, _ in sources])
    facets: dict = {}
    for si, p, est in costed:
        rk = _row_key(si, p)
        f = facets.get((rk, p.inputs))
        if f is None:
            r = row_keys.index(rk)
            f = facets[(rk, p.inputs)] = Facet(f"{rows[r]} · {p.inputs} inputs", f"at {rows[r]} on {p.inputs} inputs",
                                               p.T, p.inputs, r + 1, inputs.index(p.inputs) + 1)
        cost = est.time_s * 1e3 if metric == "time" else est.flops
        f.points.append(FidPoint(p, p.label, p.variant, float(p.cosine_output), cost, est.flops, est.time_s))
        if p.baseline_cosine_output is not None:
            f.baselines.setdefault(p.causal, float(p.baseline_cosine_output))
    for f in facets.values():
        _mark_front(f)
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

def join_names(items: list) -> str:
    """"a", "a and b", "a, b and c"."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def fidelity_findings(data: FidelityData) -> list:
    """Sentences from the data: each facet's front, cheapest first, and who falls below the
    uniform-mean baseline."""
    out = []
    basis = "by predicted time" if data.metric == "time" else "by FLOPs"
    for f in data.facets:
        front = ", ".join(f"{q.label} (cosine {q.cosine:.3f}, {cost_text(data, q)})" for q in f.front)
        dominated = [q for q in f.points if not q.on_front]
        text = f"{_capital(f.where)}, the Pareto front ({basis}), cheapest first, is {front}"
        if dominated:
            worst = sorted(dominated, key=lambda q: q.cosine)[:3]
            text += (f"; {len(dominated)} of {len(f.points)} points are dominated"
                     + (f", e.g. {join_names([q.label for q in worst])}" if len(dominated) > len(worst) else
                        f": {join_names([q.label for q in worst])}"))
        out.append(text + ".")
        below = [q.label for q in f.points if q.raw.kind != "reference"
                 and f.baselines.get(q.raw.causal) is not None and q.cosine < f.baselines[q.raw.causal]]
        if below:
            out.append(f"{_capital(f.where)}, {join_names(below)} {'is' if len(below) == 1 else 'are'} less "
                       "faithful than uniform attention (the plain mean of the visible values).")
    if not data.facets:
        out.append("No fidelity point could be placed: none has status ok and a cost by the model.")
    return out


def fidelity_notes(data: FidelityData) -> list:
    """Sentences on the points not drawn: skipped by the fidelity run, or not costed."""
    notes = []
    if data.skipped:
        groups: dict = {}
        for label, T, inputs, status, reason in data.skipped:
            groups.setdefault((label, status, reason), []).append(T)
        detail = "; ".join(f"{label} ({status}{': ' + reason if reason else ''})" for (label, status, reason) in groups)
        notes.append(f"{len(data.skipped)} point{'s' if len(data.skipped) != 1 else ''} skipped "
                     f"(status other than ok): {detail}.")
    if data.uncosted:
        notes.append(f"{len(data.uncosted)} point{'s' if len(data.uncosted) != 1 else ''} not drawn: the cost "
                     f"model cannot cost them ({join_names(sorted({x[0] for x in data.uncosted}))}).")
    return notes


def settings_text(doc: FidelityDoc) -> str:
    """The settings of the run that wrote ``doc``, in one line."""
    s = doc.settings.model_dump(exclude_none=True)
    keys = ("d", "heads", "batch", "causal", "inputs", "distill_steps", "seed", "dtype", "device")
    parts = [("causal" if s[k] else "not causal") if k == "causal" else
             f"{k.replace('_', ' ')} {s[k] if not isinstance(s[k], list) else ', '.join(map(str, s[k]))}"
             for k in keys if k in s]
    for k in ("attncost_version", "torch_version"):
        if getattr(doc, k):
            parts.append(f"{k.replace('_', ' ')} {getattr(doc, k)}")
    return "; ".join(parts)
