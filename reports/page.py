"""Assemble the report into one HTML page that loads nothing from the network: plotly.js inlined
once (``inline``) or read from the ``plotly.min.js`` beside the page (``shared``), no other script,
style, font or image, and a Content-Security-Policy that forbids any network request."""

import json
import math
import platform
from datetime import datetime, timezone
from typing import Optional

import plotly

from .. import __version__
from ..costmodel.crossover import HI as SEARCH_HI
from ..costmodel.crossover import LO as SEARCH_LO
from ..costmodel.results import OOM_STATUSES
from . import fmt
from .data import (Grid, KvData, ReportData, crosscheck_rows, error_by_series, error_rows, findings,
                   flop_counter_reference, grid_faster, intersections, kv_data, model_crossovers, model_notes,
                   speedup_grid, within_shape)
from .fidelity_data import FidelityData, cost_text, fidelity_findings, fidelity_notes, settings_text
from .fidelity_figure import fidelity_figure
from .figures import (NEAR, device_memory, flops_figure, heatmap_figure, kv_figure, memory_figure, model_time_figure,
                      roofline_figure, time_figure)
from .html import bullets, definitions, details, esc, lead, note, swatch, table
from .panels import panels_for
from .parallel_figure import parallel_data, parallel_html
from .plotdict import PlotFigure
from .plotly_bundle import PLOTLY_FILE, PLOTLY_JS_MODES, bundle, write_page

# In the head of every page, before plotly.js: how attncost knows a page it wrote, which a later
# report may replace without --overwrite.
GENERATOR_TAG = '<meta name="generator" content="attncost">'

# The page may run inline scripts and styles and show data: images; it may fetch nothing. A page
# that shares plotly.js may load scripts from its own origin too (its folder: ``SHARED_SCRIPT``).
_CSP = ("default-src 'none'; script-src {scripts}'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; connect-src 'none'; worker-src blob:; "
        "base-uri 'none'; form-action 'none'")
CSP = _CSP.format(scripts="")
CSP_SHARED = _CSP.format(scripts="'self' ")
SHARED_SCRIPT = f'<script src="{PLOTLY_FILE}"></script>'

PLOT_CONFIG = {"responsive": True, "displaylogo": False, "scrollZoom": False,
               "modeBarButtonsToRemove": ["select2d", "lasso2d"],
               "toImageButtonOptions": {"format": "png", "scale": 2}}

CSS = """
:root { --fg:#1d1d1f; --muted:#5f6368; --line:#e3e3e6; --bg:#fff; --band:#f6f7f9; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:var(--bg);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { padding: 28px 40px 18px; border-bottom: 1px solid var(--line); background: var(--band); }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; overflow-wrap: anywhere; }
header .sub { color: var(--muted); font-size: 14px; }
main { max-width: 1320px; margin: 0 auto; padding: 8px 40px 60px; }
nav.toc { margin: 18px 0 8px; padding: 12px 18px; border: 1px solid var(--line); border-radius: 8px;
  background: var(--band); }
nav.toc ol { margin: 4px 0 0; padding-left: 22px; columns: 2; column-gap: 40px; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
section { padding-top: 14px; margin-top: 18px; border-top: 1px solid var(--line); }
h2 { font-size: 21px; margin: 8px 0 6px; font-weight: 620; }
h3 { font-size: 16px; margin: 18px 0 6px; font-weight: 620; }
p.lead { color: var(--muted); margin: 0 0 10px; max-width: 92ch; }
ul.findings { padding-left: 20px; margin: 6px 0 12px; }
ul.findings li { margin: 4px 0; max-width: 110ch; }
.plot { width: 100%; border: 1px solid var(--line); border-radius: 6px; margin: 10px 0 4px; overflow: hidden; }
ul.cross { margin: 4px 0 8px; padding-left: 20px; color: var(--muted); font-size: 14px; }
.table-wrap { overflow: auto; max-height: 560px; border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top;
  white-space: nowrap; }
th { position: sticky; top: 0; background: #eef0f3; font-weight: 600; z-index: 1; }
td.l, th.l { text-align: left; }
td.v { white-space: normal; min-width: 14ch; max-width: 40ch; overflow-wrap: anywhere; text-align: left; }
th.msg { text-align: left; }
td.msg { white-space: normal; min-width: 18ch; max-width: 60ch; overflow-wrap: anywhere; text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
.status-oom { color: #b00020; font-weight: 600; }
.status-error { color: #000; font-weight: 600; background: #fff3cd; }
.bad { color: #b00020; } .good { color: #137333; }
dl.env { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 8px 0; font-size: 14px; }
dl.env dt { color: var(--muted); } dl.env dd { margin: 0; overflow-wrap: anywhere; }
pre.cmd { background: #f3f4f6; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px;
  white-space: pre-wrap; overflow-wrap: anywhere;
  font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.note { color: var(--muted); font-size: 13px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 20px; border-top: 1px solid var(--line); }
"""

# Draw every figure once the bundle is loaded; mark the body when all have drawn (or failed).
_BOOT = """
(function () {
  var figs = JSON.parse(document.getElementById("attncost-figures").textContent);
  var config = JSON.parse(document.getElementById("attncost-config").textContent);
  var pending = [];
  figs.forEach(function (f) {
    var el = document.getElementById(f.id);
    if (!el) { return; }
    if (typeof Plotly === "undefined") { el.textContent = MISSING; return; }
    pending.push(Plotly.newPlot(el, f.figure.data, f.figure.layout, config));
  });
  Promise.all(pending).then(function () { document.body.setAttribute("data-plots-ready", String(pending.length)); },
                            function (e) { document.body.setAttribute("data-plots-ready", "error"); throw e; });
})();
"""


def _finite(value):
    """``value`` with every NaN or infinite float made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_for_script(obj) -> str:
    """JSON safe inside a <script> element: no "</script>", no "<!--", no HTML-sensitive bytes; a
    NaN or infinity is null (as plotly's own encoder writes it, which imports a dataframe library:
    a tenth of a second of a report)."""
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # a number that JSON cannot hold
        text = json.dumps(_finite(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


class Page:
    """Sections in order; each has an id (the anchor), a title, and HTML built with ``esc``."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self.sections: list = []  # (id, title, html)
        self.figures: list = []  # (div id, figure)

    def section(self, sid: str, title: str, body: str) -> None:
        self.sections.append((sid, title, body))

    def figure(self, fid: str, fig: PlotFigure) -> str:
        """A div for ``fig``, as tall as the figure (plotly's resize keeps to the div's height)."""
        self.figures.append((fid, fig))
        height = int(fig.layout.get("height") or 520)
        return f'<div class="plot" id="{esc(fid)}" style="height:{height + 2}px"></div>'

    def render(self, plotly_js: str = "inline") -> str:
        """The page; ``plotly_js`` "inline" puts plotly.js in it, "shared" loads ``plotly.min.js``
        from the page's folder (``plotly_bundle.write_shared`` writes it there)."""
        if plotly_js not in PLOTLY_JS_MODES:
            raise ValueError(f"plotly_js must be one of {', '.join(PLOTLY_JS_MODES)}, not {plotly_js!r}")
        shared = plotly_js == "shared"
        toc = "".join(f'<li><a href="#{esc(sid)}">{esc(t)}</a></li>' for sid, t, _ in self.sections)
        body = "".join(f'<section id="{esc(sid)}"><h2>{esc(t)}</h2>{html}</section>'
                       for sid, t, html in self.sections)
        figs = [{"id": fid, "figure": fig.to_plotly_json()} for fid, fig in self.figures]
        script = ""
        if self.figures and shared:
            script = SHARED_SCRIPT
        elif self.figures:
            js = bundle()
            if "</script" in js.lower():  # never happens with the published bundles
                raise RuntimeError("plotly.js bundle contains '</script': cannot inline it")
            script = f"<script>{js}</script>"
        missing = (f"{PLOTLY_FILE} was not found beside this page: no chart." if shared
                   else "plotly.js failed to load: no chart.")
        generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        offline = (f"offline: this page loads {PLOTLY_FILE} from its folder and nothing from the network" if shared
                   else "self-contained: this page loads nothing from the network")
        return "".join([
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            GENERATOR_TAG + "\n",
            f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP_SHARED if shared else CSP)}">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            f"<title>{esc(self.title)}</title>\n<style>{CSS}</style>\n",
            script + "\n" if script else "",
            "</head>\n<body>\n",
            f"<header><h1>{esc(self.title)}</h1><div class=\"sub\">{esc(self.subtitle)}</div></header>\n",
            "<main>\n<noscript><p class=\"note\">The charts need JavaScript; the tables below do not.</p></noscript>\n",
            f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{toc}</ol></nav>\n'
            if len(self.sections) > 1 else "",
            body,
            "\n</main>\n",
            f"<footer>attncost {esc(__version__)} · plotly {esc(plotly.__version__)} · generated {esc(generated)}"
            f" · {esc(offline)}</footer>\n",
            f'<script type="application/json" id="attncost-figures">{_json_for_script(figs)}</script>\n',
            f'<script type="application/json" id="attncost-config">{_json_for_script(PLOT_CONFIG)}</script>\n',
            f"<script>var MISSING = {_json_for_script(missing)};{_BOOT}</script>\n" if figs else "",
            "</body>\n</html>\n",
        ])


# -- tables ------------------------------------------------------------------------------

def _rel(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or not b:
        return "–"
    x = a / b - 1
    cls = "good" if abs(x) <= 0.01 else "bad"
    return f'<span class="{cls}">{esc(fmt.pct(x, 3))}</span>'


def crosscheck_table(data: ReportData) -> str:
    rows = crosscheck_rows(data)
    if not rows:
        return note("No point carries FLOP counter results (profile with --count): nothing to cross-check.")
    out = []
    for s, r in rows:
        c = r.counts
        skipped = []
        if c.fvcore_skipped:
            skipped.append("fvcore: " + ", ".join(f"{k} ×{v}" for k, v in c.fvcore_skipped.items()))
        if c.flop_counter_skipped:
            skipped.append("FlopCounterMode: " + ", ".join(str(x) for x in c.flop_counter_skipped))
        out.append([
            swatch(s.variant) + esc(s.label), esc(fmt.count(r.T)), esc(r.shape.phase),
            f'<span title="{esc(fmt.count(c.analytic))}">{esc(fmt.flops(c.analytic, digits=5))}</span>',
            esc(fmt.flops(c.analytic_matmul, digits=5)),
            esc(fmt.flops(c.fvcore, digits=5)) if c.fvcore is not None else "–", _rel(c.fvcore, c.analytic),
            esc(fmt.flops(c.flop_counter, digits=5)) if c.flop_counter is not None else "–",
            _rel(c.flop_counter, flop_counter_reference(c)), esc("; ".join(skipped)) or "none"])
    return table(["variant", "T", "phase", "analytic", "analytic (matmuls)", "fvcore", "vs analytic",
                  "FlopCounterMode", "vs analytic matmuls*", "ops a counter skipped"], out, left=(0, 2),
                 msg_cols=(9,)) + (
        '<p class="note">* FlopCounterMode counts matmul-like ops only, and fused attention dense (it '
        'ignores is_causal and masks): it is compared with the analytic matmul FLOPs with fused causal '
        'cores counted dense.</p>')


def error_tables(data: ReportData) -> str:
    rows = error_rows(data)
    status_rows = [(s, r) for s in data.series for r in s.rows if r.status in OOM_STATUSES + ("error",)]
    if not rows and not status_rows:
        return '<p class="note">No point was measured successfully: nothing to compare the model with.</p>'
    html = ""
    per = error_by_series(data)
    within = within_shape(rows)
    peers = any(w is not None for w in within)  # a column where shapes have peers enough
    if per:
        html += "<h3>Median error per variant</h3>" + table(
            ["variant", "measured points", "median error (signed)", "median |error|"]
            + ["median within its shape"] * peers,
            [[swatch(s.variant) + esc(s.label), esc(n), esc(fmt.pct(m)), esc(fmt.pct(a, signed=False))]
             + [esc("–" if w is None else fmt.pct(w))] * peers for s, n, m, a, w in sorted(per, key=lambda x: x[3])])
    paced = any(r.pace_ratio for _, r, *_ in rows)  # a column where the run recorded the machine's pace
    out = []
    for (s, r, p, m, e), w in zip(rows, within):
        pace = [esc("–" if r.pace_ratio is None else f"{r.pace_ratio:.2f}x")] if paced else []
        out.append([swatch(s.variant) + esc(s.label), esc(fmt.count(r.T)), esc(fmt.ms(p)),
                    esc(fmt.ms(m)), esc(fmt.ms(r.timing.p10_s)), esc(fmt.ms(r.timing.p90_s)),
                    esc(r.timing.repetitions), esc(fmt.pct(e)), *[esc("–" if w is None else fmt.pct(w))] * peers,
                    *pace, esc(r.backend or "–"),
                    "ok" + (" (not stable)" if getattr(r.timing, "stable", None) is False else "")])
    for s, r in status_rows:
        out.append([swatch(s.variant) + esc(s.label), esc(fmt.count(r.T)), esc(fmt.ms(r.predicted_time_s)),
                    "–", "–", "–", "–", "–", *(["–"] * peers), *(["–"] if paced else []),
                    esc(r.backend or "–"),
                    f'<span class="status-{esc(r.status)}">{esc(r.status)}</span>'
                    + (f": {esc(r.message)}" if r.message else "")])
    head = (["variant", "T", "predicted", "measured median", "p10", "p90", "reps", "error"]
            + ["within its shape"] * peers + ["pace"] * paced)
    html += "<h3>Every point</h3>" + table(head + ["backend", "status"], out, left=(0, len(head)),
                                            msg_cols=(len(head) + 1,))
    if peers:
        html += note("within its shape: the point's error against the median error of the variants measured at its "
                     "shape in the same run (timed together, in interleaved rounds): what neither the machine's pace "
                     "nor the calibration's level explains, and what the crossovers rest on.")
    if paced:
        html += note("pace: the time of attncost's reference workload beside the point against its time when the "
                     "hardware profile was calibrated (1.20x: the machine ran it 20% slower); where it is far from "
                     "1, the point's error includes the machine's drift.")
    return html


ENV_LABELS = {"sdpa_backend_requested": "SDPA backend asked for", "sdpa_backend": "SDPA backends that ran",
              "cuda": "CUDA", "cpu_count": "CPU count"}  # environment fields whose name reads poorly as is


def environment_html(data: ReportData) -> str:
    parts = []
    for src in data.sources:
        items = []
        if src.run is not None:
            run = src.run
            env = run.environment.model_dump()
            items += [("run", src.label), ("file", src.path), ("created", run.created),
                      ("attncost version", run.attncost_version), ("schema version", run.schema_version),
                      ("dtype", run.dtype)]
            named = {k for k, _ in items}
            items += [(ENV_LABELS.get(k, k.replace("_", " ")),
                       v if not isinstance(v, (dict, list)) else json.dumps(v))
                      for k, v in env.items()
                      if v is not None and k != "hardware_profile"  # the profile: below
                      and k.replace("_", " ") not in named]
            backends = sorted({r.backend for r in src.rows if r.backend})
            if backends and not env.get("sdpa_backend"):
                items.append((ENV_LABELS["sdpa_backend"], ", ".join(backends)))
            statuses = {}
            for r in src.rows:
                statuses[r.status] = statuses.get(r.status, 0) + 1
            items.append(("points", ", ".join(f"{n} {k}" for k, n in sorted(statuses.items())) or "none"))
        else:
            items += [("attncost version", __version__), ("python", platform.python_version()),
                      ("points", len(src.rows))]
        hw = src.hardware
        if hw is not None:
            items.append(("hardware profile", hw.name + (f" — {hw.description}" if hw.description else "")))
            if hw.peak(src.dtype):
                items.append((f"peak ({src.dtype}, datasheet)", fmt.rate(hw.peak(src.dtype))))
            if hw.bandwidth:
                items.append(("memory bandwidth", fmt.bandwidth(hw.bandwidth)))
            measured = hw.measured_ceiling(src.dtype)
            if measured is not None:
                items.append((f"measured ceiling ({src.dtype}, calibrated)",
                              f"{fmt.rate(measured[0])}, {fmt.bandwidth(measured[1])}"))
            items.append(("efficiencies", "fitted to measurements (calibrated)" if hw.fitted
                          else "assumed: datasheet peaks, not calibrated (fit them with attncost calibrate)"))
            if hw.memory:
                items.append(("memory (profile)", fmt.nbytes(hw.memory)))
        elif src.run is not None and src.run.environment.hardware_profile:
            items.append(("hardware profile",
                          f"{src.run.environment.hardware_profile} (not in the results file: ceilings not "
                          "drawn; give the profile with attncost report --hardware)"))
        cmd = src.command or ""
        h = f"<h3>{esc(src.label)}</h3>" if len(data.sources) > 1 else ""
        parts.append(h + definitions(items) + "<h3>Command</h3>"
                     + (f'<pre class="cmd">{esc(cmd)}</pre>' if cmd else '<p class="note">not recorded</p>'))
    return "".join(parts)


# -- the summary ---------------------------------------------------------------------------

def _shapes_text(data: ReportData) -> str:
    shapes = {}
    for s in data.series:
        sh = s.shape
        key = (sh.batch, sh.d, sh.heads, sh.kv_heads, sh.dtype, sh.causal, sh.phase)
        shapes.setdefault(key, set()).update(r.T for r in s.rows)
    out = []
    for (b, d, h, kvh, dtype, causal, phase), Ts in shapes.items():
        Ts = sorted(Ts)
        span = (f"T = {fmt.count(Ts[0])}" if len(Ts) == 1
                else f"T = {fmt.count(Ts[0])} to {fmt.count(Ts[-1])} ({len(Ts)} values)")
        out.append(f"{phase}, batch {fmt.count(b)}, d = {fmt.count(d)}, {h} heads (head dim {d // h})"
                   + (f", {kvh} KV heads" if kvh else "")
                   + f", {dtype}, {'causal' if causal else 'not causal'}, {span}")
    return "; ".join(out) or "no points"


UNCALIBRATED = ("datasheet peaks, not calibrated: its times are estimates; attncost calibrate on the device "
                "fits a profile")


def profile_text(hw) -> str:
    """A hardware profile as the summary names it, saying so where it is not fitted to measurements."""
    text = hw.name + (f" — {hw.description}" if hw.description else "")
    return text if hw.fitted else f"{text} ({UNCALIBRATED})"


def summary_html(data: ReportData) -> str:
    items = []
    for src in data.sources:
        if src.run is not None:
            env = src.run.environment
            dev = env.device_name or env.device
            sw = ", ".join(f"{k} {v}" for k, v in (("torch", env.torch), ("CUDA", env.cuda), ("driver", env.driver),
                                                     ("python", env.python)) if v)
            items.append((f"device ({src.label})" if len(data.sources) > 1 else "device", dev))
            items.append(("software", (sw + ", " if sw else "") + f"attncost {src.run.attncost_version}"))
        else:
            hw = src.hardware
            items.append(("hardware", profile_text(hw) if hw else "none given: FLOPs and bytes only"))
    profiles = list(dict.fromkeys(profile_text(s.hardware) for s in data.sources
                                  if s.run is not None and s.hardware is not None))
    if profiles:
        items.append(("predicted on", "; ".join(profiles)))
    items.append(("figures", "per layer: " + PER_LAYER))
    items.append(("shape", _shapes_text(data)))
    items.append(("baseline", data.baseline))
    variants = sorted({s.variant for s in data.series})
    items.append(("variants", ", ".join(variants) or "none"))
    n = len(data.rows)
    by = {}
    for r in data.rows:
        by[r.status] = by.get(r.status, 0) + 1
    items.append(("points", f"{n}: " + ", ".join(f"{v} {k}" for k, v in sorted(by.items())) if n else "none"))
    notes = model_notes(data)
    notes_html = "<h3>Notes from the cost model</h3>" + bullets(notes, "cross") if notes else ""
    return (definitions(items) + "<h3>Findings</h3>" + bullets(findings(data)) + notes_html
            + '<p class="note">FLOPs count a matmul as 2 × multiply-accumulates; a fused causal kernel is '
              'counted as half the dense core (FlashAttention\'s convention). Units: FLOPs decimal '
              '(GFLOP = 10⁹), memory binary (MiB = 2²⁰ bytes), time in ms. Hover any chart for exact numbers.</p>')


# -- the report ----------------------------------------------------------------------------

PER_LAYER = ("one attention layer (its Q/K/V and output projections included; not the MLP, not the whole "
             "model)")


def build_html(data: ReportData, fidelity: Optional[FidelityData] = None, plotly_js: str = "inline") -> str:
    """The whole page for ``data``: sections that make sense for a run or for a prediction; with
    ``fidelity``, a cost-vs-fidelity section too. ``plotly_js``: ``Page.render``."""
    measured = data.kind == "run"
    what = "measured runs beside the cost model" if measured else "cost-model prediction"
    hw = data.sources[0].hardware if not measured and data.sources else None
    page = Page(data.title, what + (f" on {hw.name}" if hw else "") + " · every figure is per attention layer")
    page.section("summary", "Summary", summary_html(data))
    page.section("flops", "FLOPs vs sequence length",
                 lead("FLOPs per layer by the cost model, log-log: the slope tells the growth (slope 2: quadratic "
                      "in T, slope 1: linear)." + (" A variant at a shape is drawn once, however many runs have it."
                                                   if len(data.sources) > 1 else ""))
                 + _panels_note(data) + page.figure("fig-flops", flops_figure(data)))
    has_time = any(r.predicted_time_s or r.measured_s for r in data.rows)
    if measured or has_time:
        text = ("Predicted time per layer (lines) with measured medians (markers; bars span p10–p90). "
                "Red crosses: out of memory; black asterisks: errors. Stars: crossovers with the baseline "
                f"({data.baseline}), filled where the measured curves cross, hollow where the predicted ones do."
                if measured else
                "Predicted time per layer on the hardware profile; hollow stars mark where the predicted curves "
                f"cross the baseline's ({data.baseline}).")
        page.section("time", "Time vs sequence length", lead(text) + _panels_note(data)
                     + page.figure("fig-time", time_figure(data)))
    par = parallel_data(data)
    if par is not None:
        page.section("parallel", "Beyond one device", parallel_html(page, par))
    kv = kv_data(data)
    page.section("memory", "Memory",
                 lead("Peak activation memory per layer: the model's fused (solid) and unfused (dashed) peaks"
                      + (", the measured allocator peak (markers) and out-of-memory points (red crosses)"
                         if measured else "")
                      + ". Weights and the KV cache are not included; what decode keeps is below. "
                      + _device_memory_text(data))
                 + page.figure("fig-memory", memory_figure(data))
                 + page.figure("fig-kv", kv_figure(kv)) + _kv_note(kv))
    grid = speedup_grid(data)
    page.section("crossover", "Crossovers and speedup",
                 (_crossover_list(data) if measured else "") + _model_crossover_table(data)
                 + _heatmap_lead(grid, data) + page.figure("fig-heatmap", heatmap_figure(grid, data.baseline)))
    page.section("roofline", "Roofline",
                 lead("Each point is one layer at one shape: its FLOPs over the bytes it moves (fused kernels, by "
                      "the model) against the FLOP/s it " + ("achieved (measured time)." if measured
                                                            else "is predicted to achieve.")
                      + " Ceilings: the device's peak FLOP/s for the dtype and its memory bandwidth, from the "
                        "datasheet; a calibrated profile adds the ceiling its calibration measured (large matmuls, "
                        "large copies), which is the one a layer can approach.")
                 + page.figure("fig-roofline", roofline_figure(data)))
    if measured:
        page.section("crosscheck", "FLOP cross-check",
                     lead("The analytic count beside fvcore (converted from MACs to FLOPs) and torch's "
                          "FlopCounterMode, with the ops each counter skipped.") + crosscheck_table(data))
        page.section("model-error", "Model error",
                     lead("Predicted time against the measured median: error = predicted / measured − 1 "
                          "(positive: the model is pessimistic).") + error_tables(data))
    if fidelity is not None:
        page.section("fidelity", "Cost vs fidelity", fidelity_html(page, fidelity))
    page.section("environment", "Environment and command", environment_html(data))
    return page.render(plotly_js)


def build_fidelity_html(fidelity: FidelityData, plotly_js: str = "inline") -> str:
    """A page with the cost-vs-fidelity section alone (no run, no prediction sweep)."""
    names = ", ".join(label for label, _, _ in fidelity.sources)
    page = Page("attncost fidelity report", f"approximations against exact attention, beside their cost · {names}")
    page.section("fidelity", "Cost vs fidelity", fidelity_html(page, fidelity))
    return page.render(plotly_js)


def build_model_html(cfg, results: list, hardware, labels: dict, command: str = "", plotly_js: str = "inline") -> str:
    """The page of `attncost predict --model ... --html`: the whole model with each attention
    variant (``ModelResult``s of ``costmodel.model_cost.predict_model``) on ``hardware``: a table
    per variant, and its predicted time by component (``labels``: component -> name) in prefill
    and in decode."""
    page = Page(f"{cfg.name} on {hardware.name}: the whole model, per attention variant",
                f"cost-model prediction · {cfg.layers} layers, d {cfg.d}, {cfg.heads} heads, native attention "
                f"{cfg.attention} · {hardware.description}")
    page.section("summary", "Variants", lead(
        "Each row is the whole model with one attention variant swapped in. TTFT: predicted prefill of T tokens "
        "x batch; decode tokens/s: for the whole batch, one token per sequence against a cache of T. A run that "
        "does not fit the device's memory is marked, and its figures are not achievable there."
        + ("" if hardware.calibrated else f" {hardware.name}: {UNCALIBRATED}."))
        + table(["variant", "batch", "T", "prefill FLOPs", "KV cache", "memory", "fits", "TTFT", "decode tok/s",
                 "max T fitting", "max batch"], [_model_row(r) for r in results], left=(0, 6)))
    page.section("prefill", "Where the prefill time goes",
                 page.figure("fig-prefill", model_time_figure(results, labels, "prefill")))
    page.section("decode", "Where the decode time goes",
                 page.figure("fig-decode", model_time_figure(results, labels, "decode")))
    page.section("environment", "Command", (f'<pre class="cmd">{esc(command)}</pre>' if command else "")
                 + note("Figures are predictions of the cost model (PyTorch eager), not measurements."))
    return page.render(plotly_js)


def _model_row(r) -> list:
    """A variant's cells in the model page's table (escaped HTML); the times of a run that does
    not fit in parentheses, as not achievable."""
    if r.status != "ok":
        return [swatch(r.variant) + esc(r.variant), esc(r.batch), esc(f"{r.T:,}")] + ["–"] * 7 + [esc(r.reason)]
    fits = r.fits is None or r.fits

    def mark(text: str) -> str:
        return esc(text) if fits or text == "n/a" else f'<span class="bad">({esc(text)})</span>'

    return [swatch(r.variant) + esc(r.variant), esc(f"{r.batch:,}"), esc(f"{r.T:,}"),
            esc(fmt.flops(r.prefill.flops_total)), esc(fmt.nbytes(r.kv_cache_bytes)), esc(fmt.nbytes(r.memory_bytes)),
            "yes" if fits else '<span class="bad">no: not achievable</span>',
            mark(fmt.ms(r.ttft_s)), mark(fmt.sig(r.decode_tokens_per_s) if r.decode_tokens_per_s else "n/a"),
            esc("–" if r.max_T_fitting is None else f"{r.max_T_fitting:,}"),
            esc("–" if r.max_batch_fitting is None else f"{r.max_batch_fitting:,}")]


def write_model_report(cfg, results: list, hardware, path, labels: dict, command: str = "",
                       plotly_js: str = "inline"):
    """Write ``build_model_html`` to ``path`` atomically (in "shared" mode, plotly.min.js beside
    it); returns the path."""
    return write_page(path, build_model_html(cfg, results, hardware, labels, command, plotly_js), plotly_js)


def _device_memory_text(data: ReportData) -> str:
    """The devices' memory: drawn on the chart where the data come near it, else in words."""
    far = [f"{name} has {fmt.nbytes(cap)}" for name, cap, drawn in device_memory(data) if not drawn]
    near = [name for name, _, drawn in device_memory(data) if drawn]
    text = f"The device's memory is drawn where the data come within {NEAR:g}× of it" + (
        f" ({', '.join(near)})." if near else ".")
    if far:
        text += f" Far above every value shown, so not drawn: {'; '.join(far)}."
    return text


def _panels_note(data: ReportData) -> str:
    if not panels_for(data.series, data.baseline).families:
        return ""
    return note(f"One panel per family of variants, on shared axes; the baseline ({data.baseline}) is drawn in "
                "every panel.")


def _kv_note(kv: KvData) -> str:
    parts = []
    if kv.no_decode:
        parts.append(f"No decode path, so no cache (n/a): {', '.join(kv.no_decode)}.")
    if kv.keeps_nothing:
        parts.append(f"Decode keeps nothing per token: {', '.join(kv.keeps_nothing)}.")
    if any(line.state for line in kv.lines):
        parts.append("A flat line is a state of fixed size (no per-token cache).")
    return note(" ".join(parts)) if parts else ""


def _spans(runs: list) -> str:
    return ", ".join(f"T = {fmt.tokens(a)}" if a == b else f"T = {fmt.tokens(a)} to {fmt.tokens(b)}" for a, b in runs)


def _heatmap_lead(grid: Optional[Grid], data: ReportData) -> str:
    """What the heatmap compares, at which width the crossover table holds, and where in the
    grid the variant is faster."""
    if grid is None:
        return lead(f"No variant to compare with {data.baseline} on a grid of widths.")
    basis = "predicted time" if grid.metric == "time" else "FLOPs"
    faster = "faster than" if grid.metric == "time" else "cheaper than"
    widths = ", ".join(fmt.count(d) for d in grid.data_ds)
    text = (f"The heatmap compares {grid.label} with {grid.baseline} over model width d and sequence length T by the "
            f"cost model ({basis}), the head dimension kept at {grid.shape.head_dim}. The crossover table above holds "
            f"at the width of the data, d = {widths} (the marked row): a crossover moves with d. ")
    groups: list = []  # [[first d, last d, runs of T]]: neighbouring widths alike grouped
    for d, runs in grid_faster(grid):
        if groups and groups[-1][2] == runs:
            groups[-1][1] = d
        else:
            groups.append([d, d, runs])
    if not any(runs for _, _, runs in groups):
        return lead(text + f"In this grid, {grid.label} is {faster} {grid.baseline} nowhere.")
    widths = [f"d = {fmt.count(a)}" + (f" to {fmt.count(b)}" if b != a else "") for a, b, _ in groups]
    text += f"In this grid, {grid.label} is {faster} {grid.baseline}: " + "; ".join(
        f"at {w}, {'for ' + _spans(runs) if runs else 'at no T'}" for w, (_, _, runs) in zip(widths, groups)) + "."
    return lead(text)


# -- cost vs fidelity ------------------------------------------------------------------------

def _fidelity_lead(data: FidelityData) -> str:
    cost_what = (f"its predicted time per layer on {data.hardware}" if data.metric == "time"
                 else "its FLOPs per layer (no hardware profile was given, so no time)")
    return ("Each point is one variant at one T on one kind of input (a fidelity run): x is "
            f"{cost_what} by the cost model, at the shape the fidelity run used; y is the cosine similarity of "
            "its output to exact softmax attention on the same Q/K/V (1 = the same direction). The black step "
            "line is the Pareto front: the points that no other point beats on both cost and fidelity "
            "(outlined and labelled; dominated points are lighter, without an outline). The grey dashed line is "
            "uniform attention, the mean of the visible values: an approximation that knows nothing."
            + (" The dotted one is its non-causal form (the mean of every value), the bar for the variants that "
               "are not causal by nature." if any(len(f.baselines) > 1 for f in data.facets) else ""))


def _fidelity_table(data: FidelityData) -> str:
    """Every drawn point, per facet, cheapest first."""
    rows = []
    for f in data.facets:
        for q in sorted(f.points, key=lambda q: q.cost):
            p = q.raw
            b = f.baselines.get(p.causal)
            rows.append([swatch(q.variant) + esc(q.label), esc(fmt.count(p.T)), esc(p.inputs),
                         "yes" if p.causal else "no", esc(cost_text(data, q)), esc(f"{q.cosine:.4f}"),
                         esc(f"{p.rel_error_output:.4f}") if p.rel_error_output is not None else "–",
                         esc(f"{b:.4f}") if b is not None else "–",
                         "front" if q.on_front else esc(f"dominated by {q.dominated_by}" if q.dominated_by
                                                        else "dominated")])
    if not rows:
        return ""
    return details("Every point", table(["variant", "T", "inputs", "causal",
                                         "time" if data.metric == "time" else "FLOPs", "output cosine",
                                         "rel. error", "uniform mean", "Pareto"], rows, left=(0, 2, 3, 8)))


def fidelity_html(page: Page, data: FidelityData) -> str:
    """The "Cost vs fidelity" section: lead, findings, skipped points, the chart, every point."""
    html = lead(_fidelity_lead(data)) + bullets(fidelity_findings(data))
    html += "".join(note(n) for n in fidelity_notes(data))
    html += page.figure("fig-fidelity", fidelity_figure(data)) + _fidelity_table(data)
    for label, path, doc in data.sources:
        html += (f'<p class="note">Fidelity data: {esc(path or label)} — {esc(settings_text(doc))}. '
                 "Cosines as measured by <code>attncost fidelity</code> (fp32, same Q/K/V); costs by the cost model "
                 "now.</p>")
    return html


def _model_crossover_table(data: ReportData) -> str:
    items = model_crossovers(data)
    if not items:
        return ""
    rows = []
    for s, metric, found in sorted(items, key=lambda x: (x[0].source.index, x[0].shape_text,
                                                         not x[2], x[2][0][0] if x[2] else 0)):
        for start, end in found or [(None, None)]:  # a row per range of T, "never" where there is none
            first = ("never" if start is None else
                     f"{fmt.count(start)} (bottom of the search)" if start <= SEARCH_LO else fmt.count(start))
            rows.append([swatch(s.variant) + esc(s.label), esc("predicted time" if metric == "time" else "FLOPs"),
                         esc(first),
                         esc(fmt.count(end - 1)) if end is not None else ("–" if start is None else "end of search")])
    ds = sorted({s.shape.d for s, _, _ in items})
    at = (f"at the width of the data, d = {fmt.count(ds[0])}" if len(ds) == 1
          else "at each series' width (d in its name)")
    return lead(f"Where the cost model puts each variant below the baseline ({data.baseline}), searching T from "
                f"{fmt.count(SEARCH_LO)} to {fmt.count(SEARCH_HI)} {at}; the heatmap below shows other widths:"
                ) + table(["variant", "compared by", f"cheaper than {data.baseline} from T", "up to T"], rows)


def _crossover_list(data: ReportData) -> str:
    found = []
    for s in data.series:
        b = data.baseline_for(s)
        if b is None:
            continue
        for what in ("measured", "predicted"):
            for T, _, direction in intersections(s.values(what), b.values(what)):
                found.append(f"{s.label} {'overtakes' if direction == 'below' else 'falls behind'} "
                             f"{b.name} near T ≈ {fmt.count(T)} ({what}; "
                             f"{'filled' if what == 'measured' else 'hollow'} star)")
    if not found:
        return (f'<p class="lead">No curve crosses the baseline ({esc(data.baseline)}) within the range of '
                'the data; the table below gives the cost model\'s crossovers over a wider range of T.</p>')
    return ('<p class="lead">Where the curves cross the baseline\'s (stars on the time chart; T interpolated '
            'between the T values of the data):</p><ul class="cross">'
            + "".join(f"<li>{esc(f)}</li>" for f in found) + "</ul>")
