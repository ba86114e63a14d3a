"""HTML reports: plotly figures from measured runs or from a prediction sweep, assembled into one
page that loads nothing from the network. Never imports torch.

Public API:
    build_run_report(runs, paths=None, *, hardware=None, baseline="flash", heatmap_variant=None,
                     fidelity=None, fidelity_paths=None, plotly_js="inline") -> str
    write_run_report(runs, path, *, paths=None, hardware=None, baseline="flash", heatmap_variant=None,
                     fidelity=None, fidelity_paths=None, plotly_js="inline") -> Path
    build_prediction_report(estimates, hardware=None, command="", *, baseline="flash", heatmap_variant=None,
                            plotly_js="inline") -> str
    write_prediction_report(estimates, path, hardware=None, command="", *, baseline="flash",
                            heatmap_variant=None, plotly_js="inline") -> Path
    build_fidelity_report(docs, paths=None, *, hardware=None, plotly_js="inline") -> str
    write_fidelity_report(docs, path, *, paths=None, hardware=None, plotly_js="inline") -> Path

``plotly_js`` (``PLOTLY_JS_MODES``): "inline" puts plotly.js in the page (one file, about 5 MB);
"shared" has the page load ``plotly.min.js`` from its own folder, which ``write_*`` writes there
once, so that reports written to one folder share one copy and stay offline.

``fidelity``/``docs``: `attncost fidelity --json` documents, as ``costmodel.fidelity_doc.load_fidelity`` reads them
(``costmodel.fidelity_doc.FidelityDoc``) or as parsed JSON; a malformed one raises
``FidelityFileError``.

Importing this package is cheap: plotly loads when a report is built, so ``reports.fmt`` (the
number formats the CLI shares) comes without it.
"""

from pathlib import Path
from typing import Optional

from .plotly_bundle import PLOTLY_FILE, PLOTLY_JS_MODES, write_page

SECTIONS_RUN = ("summary", "flops", "time", "memory", "crossover", "roofline", "crosscheck",
                "model-error", "environment")
SECTIONS_FIDELITY = ("fidelity",)
SECTIONS_PREDICTION = ("summary", "flops", "time", "memory", "crossover", "roofline", "environment")


def build_run_report(runs: list, paths: Optional[list] = None, *, hardware=None, baseline: str = "flash",
                     heatmap_variant: Optional[str] = None, fidelity: Optional[list] = None,
                     fidelity_paths: Optional[list] = None, plotly_js: str = "inline") -> str:
    """The HTML of a report on one or more measured ``Run``s (several: compared on the same
    charts). ``paths``: the files they came from, shown in the environment section. ``hardware``
    (a Hardware, a profile name or file) overrides the profile each run was predicted with
    (embedded in it, else the built-in it names), for the roofline ceilings and the heatmap's
    time model. ``fidelity``: fidelity documents for a cost-vs-fidelity
    section, costed on ``hardware`` or else the first run's profile."""
    from .data import from_runs
    from .fidelity_data import fidelity_data
    from .page import build_html

    data = from_runs(list(runs), paths=[str(p) for p in paths] if paths else None, hardware=hardware,
                     baseline=baseline, heatmap_variant=heatmap_variant)
    fid = None
    if fidelity:
        hw = next((s.hardware for s in data.sources if s.hardware is not None), None)
        fid = fidelity_data(list(fidelity), fidelity_paths, hw)
    return build_html(data, fid, plotly_js)


def write_run_report(runs: list, path, *, paths: Optional[list] = None, hardware=None, baseline: str = "flash",
                     heatmap_variant: Optional[str] = None, fidelity: Optional[list] = None,
                     fidelity_paths: Optional[list] = None, plotly_js: str = "inline") -> Path:
    """Write ``build_run_report`` to ``path`` atomically; returns the path."""
    return write_page(path, build_run_report(runs, paths, hardware=hardware, baseline=baseline,
                                         heatmap_variant=heatmap_variant, fidelity=fidelity,
                                         fidelity_paths=fidelity_paths, plotly_js=plotly_js), plotly_js)


def build_fidelity_report(docs: list, paths: Optional[list] = None, *, hardware=None, plotly_js: str = "inline") -> str:
    """A page with the cost-vs-fidelity section alone: x is predicted time on ``hardware`` (a
    Hardware or a profile name) where given, else FLOPs."""
    from .fidelity_data import fidelity_data
    from .page import build_fidelity_html

    return build_fidelity_html(fidelity_data(list(docs), [str(p) for p in paths] if paths else None, hardware),
                               plotly_js)


def write_fidelity_report(docs: list, path, *, paths: Optional[list] = None, hardware=None,
                          plotly_js: str = "inline") -> Path:
    """Write ``build_fidelity_report`` to ``path`` atomically; returns the path."""
    return write_page(path, build_fidelity_report(docs, paths, hardware=hardware, plotly_js=plotly_js), plotly_js)


def build_prediction_report(estimates: list, hardware=None, command: str = "", *, baseline: str = "flash",
                            heatmap_variant: Optional[str] = None, plotly_js: str = "inline") -> str:
    """The HTML of a prediction-only report from a sweep of ``Estimate``s (no measurements:
    no cross-check or model-error sections)."""
    from .data import from_estimates
    from .page import build_html

    data = from_estimates(list(estimates), hardware=hardware, command=command, baseline=baseline,
                          heatmap_variant=heatmap_variant)
    return build_html(data, plotly_js=plotly_js)


def write_prediction_report(estimates: list, path, hardware=None, command: str = "", *,
                            baseline: str = "flash", heatmap_variant: Optional[str] = None,
                            plotly_js: str = "inline") -> Path:
    """Write a prediction-only report (``attncost predict --html``) to ``path`` atomically."""
    return write_page(path, build_prediction_report(estimates, hardware, command, baseline=baseline,
                                                heatmap_variant=heatmap_variant, plotly_js=plotly_js), plotly_js)


__all__ = ["build_run_report", "write_run_report", "build_prediction_report", "write_prediction_report",
           "build_fidelity_report", "write_fidelity_report",
           "SECTIONS_RUN", "SECTIONS_PREDICTION", "SECTIONS_FIDELITY", "PLOTLY_JS_MODES", "PLOTLY_FILE"]
