"""Plotly figures as plain dicts: the report only embeds each figure's JSON, so its traces and
layout are built as dicts and never go through plotly's per-property validation (which costs
more than the rest of a report). ``PlotFigure`` offers the few ``go.Figure`` methods the charts
use, with the same meaning, and ``to_plotly_json`` gives what ``go.Figure.to_plotly_json`` would:
plotly is asked once per template, colour scale and subplot grid, and its answer cached."""

import copy
import hashlib
import json
import re
from functools import lru_cache
from typing import Optional

_AXIS = {"x": re.compile(r"xaxis\d*$"), "y": re.compile(r"yaxis\d*$")}


def _clean(value):
    """``value`` with the None entries of its dicts dropped (plotly sets nothing for them), dicts
    and lists copied, tuples made lists."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_clean(v) if isinstance(v, (dict, list, tuple)) else v for v in value]
    return value


def _merge(target: dict, update: dict) -> None:
    """``go.Figure.update_*`` on dicts: nested dicts merged, None unsets, anything else replaces."""
    for key, value in update.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = _clean(value)


def _kept(kind: str, args: dict, ask):
    """plotly's answer ``ask()`` (plain JSON data) to ``kind`` with ``args``, kept as a file in the
    store's folder (``program_store.root()``) under plotly's version: a later report reads it instead
    of importing plotly's figure classes (a seventh of a second). A file that cannot be read or
    written is skipped; ``ATTNCOST_CACHE_DIR=off`` keeps nothing."""
    import plotly

    from ..costmodel.atomic import write_atomic
    from ..costmodel.program_store import root

    base = root()
    try:
        key = json.dumps([kind, args], sort_keys=True)
    except TypeError:  # arguments that JSON cannot name
        base = None
    if base is None:
        return ask()
    path = base / f"plotly-{plotly.__version__}" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    try:
        kept = json.loads(path.read_text())
        if kept["key"] == key:
            return kept["answer"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    answer = ask()
    try:
        write_atomic(path, json.dumps({"key": key, "answer": answer}))  # (its folder made as needed)
    except OSError:
        pass
    return answer


@lru_cache(maxsize=None)
def template(name: str) -> dict:
    """The JSON of a plotly template (shared: never modify it)."""
    def ask():
        import plotly.io as pio

        return pio.templates[name].to_plotly_json()

    return _kept("template", {"name": name}, ask)


@lru_cache(maxsize=None)
def _colorscale(name: str) -> tuple:
    def ask():
        import plotly.graph_objects as go

        return go.Heatmap(colorscale=name).to_plotly_json()["colorscale"]

    return tuple(tuple(step) for step in _kept("colorscale", {"name": name}, ask))


def colorscale(name: str) -> list:
    """A named plotly colour scale as the [[position, colour], ...] plotly writes for it."""
    return [list(step) for step in _colorscale(name)]


def trace(kind: str, **props) -> dict:
    """A trace of plotly type ``kind`` ("scatter", "bar", "heatmap") as a dict."""
    return {"type": kind, **_clean(props)}


def scatter(**props) -> dict:
    return trace("scatter", **props)


@lru_cache(maxsize=32)
def _subplots(**kw) -> tuple:
    """(layout without template, {(row, col): (xaxis key, yaxis key)}) of ``make_subplots(**kw)``."""
    def ask():
        from plotly.subplots import make_subplots

        fig = make_subplots(**kw)
        layout = fig.to_plotly_json()["layout"]
        layout.pop("template", None)
        cells = []
        for r in range(1, kw["rows"] + 1):
            for c in range(1, kw["cols"] + 1):
                sub = fig.get_subplot(r, c)
                cells.append([r, c, sub.xaxis.plotly_name, sub.yaxis.plotly_name])
        return [layout, cells]

    layout, cells = _kept("subplots", kw, ask)
    return layout, {(r, c): (x, y) for r, c, x, y in cells}


class PlotFigure:
    """A figure as ``traces`` (dicts) and ``layout`` (a dict), with ``go.Figure``'s add_trace,
    add_annotation, update_layout, update_xaxes and update_yaxes on them."""

    def __init__(self, layout: Optional[dict] = None, cells: Optional[dict] = None):
        self.traces: list = []
        self.layout: dict = layout or {}
        self._cells: dict = cells or {}

    @classmethod
    def subplots(cls, **kw) -> "PlotFigure":
        """A grid of subplots: ``plotly.subplots.make_subplots``' keywords (lists given as tuples)."""
        layout, cells = _subplots(**kw)
        return cls(copy.deepcopy(layout), cells)

    def _refs(self, row, col) -> tuple:
        x, y = self._cells[(row, col)]
        return x.replace("axis", ""), y.replace("axis", "")

    def add_trace(self, props: dict, row: Optional[int] = None, col: Optional[int] = None) -> "PlotFigure":
        props = dict(props)
        if row is not None:
            props["xaxis"], props["yaxis"] = self._refs(row, col)
        self.traces.append(props)
        return self

    def add_annotation(self, row: Optional[int] = None, col: Optional[int] = None, **props) -> "PlotFigure":
        ann = _clean(props)
        if row is not None:
            x, y = self._refs(row, col)
            ann["xref"] = x + (" domain" if "domain" in ann.get("xref", "") else "")
            ann["yref"] = y + (" domain" if "domain" in ann.get("yref", "") else "")
        self.layout.setdefault("annotations", []).append(ann)
        return self

    def update_layout(self, **props) -> "PlotFigure":
        if isinstance(props.get("template"), str):
            props["template"] = template(props["template"])
            self.layout["template"] = props.pop("template")
        _merge(self.layout, props)
        return self

    def _update_axes(self, letter: str, row, col, props: dict) -> None:
        if row is not None:
            names = [self._cells[(row, col)][0 if letter == "x" else 1]]
        else:
            names = [k for k in self.layout if _AXIS[letter].match(k)] or [f"{letter}axis"]
        for name in names:
            _merge(self.layout.setdefault(name, {}), props)

    def update_xaxes(self, row: Optional[int] = None, col: Optional[int] = None, **props) -> "PlotFigure":
        self._update_axes("x", row, col, props)
        return self

    def update_yaxes(self, row: Optional[int] = None, col: Optional[int] = None, **props) -> "PlotFigure":
        self._update_axes("y", row, col, props)
        return self

    def to_plotly_json(self) -> dict:
        return {"data": self.traces, "layout": self.layout}
