"""Small multiples: a chart of many variants split into one panel per variant family (exact,
latent, low-rank, learned: ``Variant.family``), on shared axes, with the baseline drawn in every
panel for reference, so that a dozen lines stay readable."""

import math
from dataclasses import dataclass

from .plotdict import PlotFigure

FAMILIES = ("exact", "latent", "low-rank", "learned", "other")
TITLES = {"exact": "exact attention", "latent": "latent attention", "low-rank": "low-rank and kernel",
          "learned": "learned selectors and mixers", "other": "other"}
MIN_VARIANTS = 7  # charts of fewer variants keep one panel
PANEL_HEIGHT = 330


@dataclass
class Panels:
    """Where each series goes: ``families`` in panel order, laid out ``cols`` wide, first at the
    top left ([] for one panel holding everything)."""

    families: list
    baseline: str
    cols: int = 2

    @property
    def rows(self) -> int:
        return max(1, math.ceil(len(self.families) / self.cols))

    def positions(self, family: str, variant: str) -> list:
        """add_trace keywords for each panel a series of ``variant`` is drawn in: the baseline in
        every panel, any other variant in its family's; [{}] on a one-panel chart."""
        if not self.families:
            return [{}]
        if variant == self.baseline:
            return [self._at(i) for i in range(len(self.families))]
        return [self._at(self.families.index(family if family in self.families else "other"))]

    def _at(self, i: int) -> dict:
        # subplots start at the bottom left (so that plotly's first axes, xaxis and yaxis, carry the
        # axis titles): the top row is row number ``rows``
        return dict(row=self.rows - i // self.cols, col=i % self.cols + 1)

    def figure(self) -> PlotFigure:
        if not self.families:
            return PlotFigure()
        titles = [""] * (self.rows * self.cols)
        for i, fam in enumerate(self.families):
            at = self._at(i)
            titles[(at["row"] - 1) * self.cols + at["col"] - 1] = TITLES.get(fam, fam)
        return PlotFigure.subplots(rows=self.rows, cols=self.cols, start_cell="bottom-left", shared_xaxes="all",
                                   shared_yaxes="all", subplot_titles=tuple(titles), horizontal_spacing=0.06,
                                   vertical_spacing=0.12 if self.rows > 1 else 0.0)

    def height(self, single: int) -> int:
        """The figure's height: ``single`` for one panel, else a band per row."""
        return single if not self.families else 124 + PANEL_HEIGHT * self.rows

    def finish_axes(self, fig: PlotFigure, axis: dict, xaxis: dict, yaxis: dict) -> None:
        """On a panelled chart: every panel's axes styled as ``axis`` with the common x and y
        settings, the titles on the bottom row and the left column only."""
        if not self.families:
            return
        x_title, y_title = xaxis.get("title"), yaxis.get("title")
        plain_x = {k: v for k, v in xaxis.items() if k != "title"}
        plain_y = {k: v for k, v in yaxis.items() if k != "title"}
        fig.update_xaxes(**axis, **plain_x)
        fig.update_yaxes(**axis, **plain_y)
        for i in range(len(self.families)):
            at = self._at(i)
            fig.update_xaxes(title=x_title if at["row"] == 1 else {}, showticklabels=True, **at)
            fig.update_yaxes(title=y_title if at["col"] == 1 else {}, **at)


def panels_for(series: list, baseline: str) -> Panels:
    """One panel per family present where the series hold ``MIN_VARIANTS`` variants or more of
    two families or more; else one panel."""
    variants = {s.variant for s in series}
    families = [f for f in FAMILIES if any(s.family == f for s in series if s.variant != baseline)]
    if len(variants) < MIN_VARIANTS or len(families) < 2:
        return Panels([], baseline)
    return Panels(families, baseline)
