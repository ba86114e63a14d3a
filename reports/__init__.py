"""HTML reports: plotly figures from measured runs or from a prediction sweep, assembled into one
self-contained page that loads nothing from the network. Never imports torch.

Public API:
    build_run_report(runs, paths=None, *, hardware=None, baseline="flash", heatmap_variant=None) -> str
    write_run_report(runs, path, *, paths=None, hardware=None, baseline="flash", heatmap_variant=None) -> Path
    build_prediction_report(estimates, hardware=None, command="", *, baseline="flash", heatmap_variant=None) -> str
    write_prediction_report(estimates, path, hardware=None, command="", *, baseline="flash",
                            heatmap_variant=None) -> Path
"""

from pathlib import Path
from typing import Optional

from ..costmodel.results import write_atomic
from .data import from_estimates, from_runs
from .page import build_html

SECTIONS_RUN = ("summary", "flops", "time", "memory", "crossover", "roofline", "crosscheck",
                "model-error", "environment")
SECTIONS_PREDICTION = ("summary", "flops", "time", "memory", "crossover", "roofline", "environment")


def build_run_report(runs: list, paths: Optional[list] = None, *, hardware=None, baseline: str = "flash",
                     heatmap_variant: Optional[str] = None) -> str:
    """The HTML of a report on one or more measured ``Run``s (several: compared on the same
    charts). ``paths``: the files they came from, shown in the environment section. ``hardware``
    (a Hardware or a profile name) overrides the profile each run names, for the roofline
    ceilings and the heatmap's time model."""
    data = from_runs(list(runs), paths=[str(p) for p in paths] if paths else None, hardware=hardware,
                     baseline=baseline, heatmap_variant=heatmap_variant)
    return build_html(data)


def write_run_report(runs: list, path, *, paths: Optional[list] = None, hardware=None, baseline: str = "flash",
                     heatmap_variant: Optional[str] = None) -> Path:
    """Write ``build_run_report`` to ``path`` atomically; returns the path."""
    path = Path(path)
    write_atomic(path, build_run_report(runs, paths, hardware=hardware, baseline=baseline,
                                        heatmap_variant=heatmap_variant))
    return path


def build_prediction_report(estimates: list, hardware=None, command: str = "", *, baseline: str = "flash",
                            heatmap_variant: Optional[str] = None) -> str:
    """The HTML of a prediction-only report from a sweep of ``Estimate``s (no measurements:
    no cross-check or model-error sections)."""
    data = from_estimates(list(estimates), hardware=hardware, command=command, baseline=baseline,
                          heatmap_variant=heatmap_variant)
    return build_html(data)


def write_prediction_report(estimates: list, path, hardware=None, command: str = "", *,
                            baseline: str = "flash", heatmap_variant: Optional[str] = None) -> Path:
    """Write a prediction-only report (``attncost predict --html``) to ``path`` atomically."""
    path = Path(path)
    write_atomic(path, build_prediction_report(estimates, hardware, command, baseline=baseline,
                                               heatmap_variant=heatmap_variant))
    return path


__all__ = ["build_run_report", "write_run_report", "build_prediction_report", "write_prediction_report",
           "SECTIONS_RUN", "SECTIONS_PREDICTION"]
