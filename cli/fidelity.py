"""`attncost fidelity`: how closely each approximate variant reproduces exact softmax attention on
the same Q/K/V (profiler/fidelity.py). torch is imported only when the command runs."""

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ..reports.fmt import pct, sig
from .app import app
from .errors import fail
from .layout import SECTION, Column, fit_console, print_table
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
    """A table cell: three significant digits, a dim dash where there is no value."""
    return "[dim]–[/]" if x is None else sig(x)


def _params_cell(point: dict) -> str:
    return point["label"].partition(" ")[2] or "[dim]–[/]"


def _distill_cell(point: dict) -> str:
    d = point.get("distill")
    if not d:
        return ""
    cell = f"{d['steps']} / {sig(d['final_loss'])} (from {sig(d['initial_loss'])})"
    if "selector_top1" in d:
        cell += (f", top-1 {pct(d['selector_top1'], 3, signed=False)} "
                 f"(chance {pct(d['selector_top1_chance'], 3, signed=False)})")
    return cell


COLUMNS = (Column("variant", "left"), Column("params", "left", wrap=True), Column("T"), Column("inputs", "left"),
           Column("causal", "left"), Column("cos out"), Column("rel err out"), Column("cos attn"),
           Column("rel err attn"), Column("distill steps / final loss", "left", wide=True, wrap=True))
TITLE = "Fidelity to exact softmax attention (same Q/K/V, fp32)"


def _rows(points: list) -> list:
    """The table's rows, a section per (T, inputs), each closed by the uniform-attention baseline."""
    rows, group = [], None
    for p in points:
        key = (p["T"], p["inputs"])
        if group is not None and key != group[0]:
            rows += _baseline_rows(group[1]) + [SECTION]
        if group is None or key != group[0]:
            group = (key, {})
        if p["baseline_cosine_output"] is not None:
            group[1][p["causal"]] = p
        head = [p["variant"], _params_cell(p), str(p["T"]), p["inputs"], "yes" if p["causal"] else "no"]
        if p["status"] != "ok":
            rows.append(head + ["[dim]–[/]"] * 4 + [f"[dim]{p['status']}[/]"])
            continue
        if p["kind"] == "reference":
            head[0] = f"[dim]{head[0]}[/]"
        rows.append(head + [_cell(p["cosine_output"]), _cell(p["rel_error_output"]), _cell(p["cosine_attention"]),
                            _cell(p["rel_error_attention"]), _distill_cell(p)])
    if group is not None:
        rows += _baseline_rows(group[1])
    return rows


def _baseline_rows(by_causal: dict) -> list:
    """Uniform attention (the mean of the visible values), for each causality in the group."""
    return [["[italic dim]uniform mean[/]", "[dim]baseline[/]", str(p["T"]), p["inputs"], "yes" if causal else "no",
             _cell(p["baseline_cosine_output"]), _cell(p["baseline_rel_error_output"]), "", "", ""]
            for causal, p in sorted(by_causal.items())]


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


@app.command()
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
    """How closely each approximate variant reproduces exact softmax attention on the same Q/K/V:
    cosine similarity and relative error of the output and the attention matrix, on random and
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
        print(json.dumps(doc, indent=1, allow_nan=False))
        return
    fit_console(console, wide)
    print_table(console, COLUMNS, _rows(points), wide=wide, title=TITLE, keys=2)
    for line in ([] if wide else _distill_notes(points)) + _footnotes(points):
        console.print(f"[dim]{line}[/]", soft_wrap=True)
    console.print("[dim]cos: cosine similarity to exact attention (1 = same direction); rel err: |approx - exact|_F / "
                  "|exact|_F. Learned variants: distillation steps / final loss (its initial loss), on held-out "
                  "inputs; topk: selector top-1 accuracy against the exact top-1 key.[/]", soft_wrap=True)
