"""`attncost fidelity`: how closely each approximate variant reproduces exact softmax attention on
the same Q/K/V (profiler/fidelity.py). torch is imported only when the command runs."""

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..reports.fmt import pct, sig
from .app import app
from .errors import fail
from .layout import Column, PlainHelp, fit_console, print_json, print_table
from .options import (REPORT_FILE, T_HELP, WIDE_HELP, check_choice, check_output, check_param_values,
                      list_items, make_shape, parse_params, parse_T, parse_variants)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

INPUT_CHOICES = ("random", "structured", "both")
MAX_T = 4096  # profiler.fidelity.MAX_T, repeated here so that bad flags fail before torch loads
MAX_STEPS = 100_000


def _sweep_values(params: dict) -> dict:
    """--param values with commas become lists (swept): linformer.k=32,64,128."""
    return {v: {k: (list_items(x, f"--param {v}.{k}") if "," in x else x) for k, x in kv.items()}
            for v, kv in params.items()}


def _cell(x: Optional[float]) -> str:
    """A table cell: three significant digits (an exponent below 0.001, where zeros would pile up),
    a dim dash where there is no value."""
    if x is None:
        return DASH
    return f"{x:.2e}" if 0 < abs(x) < 1e-3 else sig(x)


DASH = "[dim]–[/]"


def _params_cell(point: dict) -> str:
    return point["label"].partition(" ")[2] or DASH


def _distill_cell(point: dict) -> str:
    d = point.get("distill")
    if not d:
        return ""
    cell = f"{d['steps']} / {sig(d['final_loss'])} (from {sig(d['initial_loss'])})"
    if "selector_top1" in d:
        cell += (f", top-1 {pct(d['selector_top1'], 3, signed=False)} "
                 f"(chance {pct(d['selector_top1_chance'], 3, signed=False)})")
    return cell


# T and the inputs name each table (a table per pair), so that the rows fit 80 columns
COLUMNS = (Column("variant", "left"), Column("params", "left", wrap=True), Column("causal", "left"),
           Column("cos\nout"), Column("rel err\nout"), Column("cos\nattn"), Column("rel err\nattn"),
           Column("distill steps / final loss", "left", wide=True, wrap=True))
TITLE = "Fidelity to exact softmax attention (same Q/K/V, fp32)"


def _tables(points: list) -> list:
    """(title, rows) per (T, inputs), in the points' order, each closed by the uniform-attention
    baseline."""
    groups: dict = {}
    for p in points:
        groups.setdefault((p["T"], p["inputs"]), []).append(p)
    return [(f"T {T:,} · {inputs} inputs", _rows(group)) for (T, inputs), group in groups.items()]


def _rows(points: list) -> list:
    """The rows of one (T, inputs) group: a row per point, then the baseline per causality."""
    rows, baselines = [], {}
    for p in points:
        if p["baseline_cosine_output"] is not None:
            baselines[p["causal"]] = p
        head = [p["variant"], _params_cell(p), "yes" if p["causal"] else "no"]
        if p["status"] != "ok":
            rows.append(head + [DASH] * 4 + [f"[dim]{p['status']}[/]"])
            continue
        if p["kind"] == "reference":
            head[0] = f"[dim]{head[0]}[/]"
        rows.append(head + [_cell(p["cosine_output"]), _cell(p["rel_error_output"]), _cell(p["cosine_attention"]),
                            _cell(p["rel_error_attention"]), _distill_cell(p)])
    return rows + [["[italic dim]uniform mean[/]", "[dim]baseline[/]", "yes" if causal else "no",
                    _cell(p["baseline_cosine_output"]), _cell(p["baseline_rel_error_output"]), DASH, DASH, ""]
                   for causal, p in sorted(baselines.items())]


def _distill_notes(points: list) -> list:
    """The distillation of the learned variants, as lines below a table that has no column for it."""
    return [f"{p['label']} at T = {p['T']}, {p['inputs']}: distilled {_distill_cell(p)}." for p in points
            if p["status"] == "ok" and p.get("distill")]


def _footnotes(points: list) -> list:
    lines, seen = [], set()
    for p in points:
        if p["status"] != "ok" and p["reason"] and (p["variant"], p["reason"]) not in seen:
            seen.add((p["variant"], p["reason"]))
            lines.append(f"{p['variant']} {p['status']}: {p['reason']}.")
    for p in points:
        for note in p["notes"]:
            if (p["variant"], note) not in seen:
                seen.add((p["variant"], note))
                lines.append(f"{p['variant']}: {note}.")
    return lines


@app.command(cls=PlainHelp)
def fidelity(
    variants: str = typer.Option("all", help="'all' or a comma-separated list (see `attncost variants`)."),
    T: str = typer.Option("256,1024", "--T", help=f"{T_HELP} At most {MAX_T}."),
    d: int = typer.Option(256, "--d", help="Model width; the head dim is d / heads."),
    heads: int = typer.Option(4, help="Attention heads, must divide d."),
    batch: int = typer.Option(1, help="Sequences per sample."),
    causal: bool = typer.Option(True, "--causal/--no-causal", help="Causal attention (variants that are causal or not by nature keep theirs)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="A variant parameter, e.g. linformer.k=128; "
                                                                     "a comma list sweeps it: linformer.k=32,64,128 (repeatable)."),
    inputs: str = typer.Option("both", help="random (iid N(0,1) Q/K/V), structured (local band + low-rank heads) or both."),
    distill_steps: int = typer.Option(200, "--distill-steps", help="Adam steps distilling the learned variants (topk, mlp_attention); 0: untrained."),
    seed: int = typer.Option(0, help="Seed of the inputs, random features and initial weights."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML report with the cost-vs-fidelity "
                                                             "chart (Pareto front per T; cost in FLOPs)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --html replace a file that is not an attncost "
                                                              "report."),
    plotly_js: str = typer.Option("inline", "--plotly-js", help="With --html, inline: plotly.js inside the page (one "
                                  "file that works anywhere); shared: one plotly.min.js beside the page, shared by "
                                  "the reports written to that folder (both work offline)."),
) -> None:
    """How closely each approximate variant reproduces exact softmax attention on the same Q/K/V.

    Cosine similarity and relative error of the output and the attention matrix, on random and
    structured inputs; the learned variants are distilled first."""
    # -- flags (no torch yet) ----------------------------------------------------------------
    check_choice(inputs, INPUT_CHOICES, "--inputs")
    for flag, value in (("--d", d), ("--heads", heads), ("--batch", batch)):
        if value < 1:
            raise fail(f"{flag} must be a positive integer, not {value}")
    if batch > 64:
        raise fail(f"--batch must be between 1 and 64 for fidelity, not {batch}")
    if not 0 <= distill_steps <= MAX_STEPS:
        raise fail(f"--distill-steps must be between 0 and {MAX_STEPS:,}, not {distill_steps}")
    if overwrite and html is None:
        raise fail("--overwrite applies only with --html")
    from ..reports import PLOTLY_JS_MODES

    check_choice(plotly_js, PLOTLY_JS_MODES, "--plotly-js")
    if plotly_js != "inline" and html is None:
        raise fail("--plotly-js applies only with --html")
    if html is not None:
        check_output(html, "--html", "fidelity.html", kind=REPORT_FILE, overwrite=overwrite)
    if not 0 <= seed < 2**31:
        raise fail(f"--seed must be between 0 and {2**31 - 1}, not {seed}")
    Ts = parse_T(T)
    if max(Ts) > MAX_T:
        raise fail(f"--T values must be between 1 and {MAX_T} for fidelity (it forms T x T attention matrices), got {T!r}")
    names = parse_variants(variants)
    params = _sweep_values(parse_params(param))
    check_param_values(params)
    for t in Ts:
        make_shape(T=t, d=d, heads=heads, batch=batch, causal=causal, dtype="fp32")
    kinds = ["random", "structured"] if inputs == "both" else [inputs]
    if "structured" in kinds and d // heads < 3:
        raise fail(f"--d / --heads: structured inputs need a head dimension of at least 3, not {d // heads}")

    # -- run ---------------------------------------------------------------------------------
    from ..profiler.fidelity import OOM_STATUSES, SCHEMA_VERSION, FidelityError, fidelity_points

    total = len(Ts) * len(kinds) * len(names)
    done = []

    def progress(pt: dict) -> None:
        done.append(pt)
        status.update(f"fidelity: {len(done)}/{total} points (last: {pt['label']}, T={pt['T']}, {pt['inputs']})")

    with err_console.status("fidelity: starting", spinner="dots") as status:
        try:
            points = fidelity_points(names, Ts, d=d, heads=heads, batch=batch, causal=causal, params=params,
                                     inputs=kinds, distill_steps=distill_steps, seed=seed, progress=progress)
        except FidelityError as err:
            raise fail(str(err))
    short = [p for p in points if p["status"] in OOM_STATUSES]
    if short and not any(p["status"] == "ok" for p in points):
        raise fail(f"--d {d}, --heads {heads}, --T {T}, --batch {batch}: no point fits in memory "
                   f"({short[0]['reason']}); lower --d, --T or --batch")

    import torch

    from .. import __version__

    doc = {
        "schema": "attncost-fidelity", "schema_version": SCHEMA_VERSION, "attncost_version": __version__,
        "torch_version": torch.__version__,
        "settings": {"variants": names, "T": Ts, "d": d, "heads": heads, "batch": batch, "causal": causal,
                     "params": params, "inputs": kinds, "distill_steps": distill_steps, "seed": seed,
                     "dtype": "fp32", "device": "cpu"},
        "points": points,
    }
    if html is not None:
        from ..reports import write_fidelity_report

        try:
            path = write_fidelity_report([doc], html, paths=["attncost fidelity (this run)"], plotly_js=plotly_js)
        except OSError as err:
            raise fail(f"--html {html}: cannot write there ({err.strerror or err})")
        err_console.print(f"Report written to {path.resolve()}", markup=False, soft_wrap=True)
    if as_json:
        print_json(doc)
        return
    print_fidelity(points, wide)


def print_fidelity(points: list, wide: bool = False) -> None:
    """The command's tables (one per T and inputs), its notes and its legend, as wide as
    ``fit_console`` says."""
    fit_console(console, wide)
    console.print(f"[bold]{TITLE}[/]")
    columns = COLUMNS if any(p.get("distill") for p in points) else COLUMNS[:-1]  # no empty column
    for title, rows in _tables(points):
        print_table(console, columns, rows, wide=wide, title=title, keys=2)
    for line in ([] if wide else _distill_notes(points)) + _footnotes(points):
        console.print(f"[dim]{escape(line)}[/]")
    console.print("[dim]cos: cosine similarity to exact attention (1 = same direction); rel err: |approx - exact|_F / "
                  "|exact|_F. Learned variants: distillation steps / final loss (its initial loss), on held-out "
                  "inputs; topk: selector top-1 accuracy against the exact top-1 key.[/]")
