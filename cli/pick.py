"""`attncost pick`: the attention variants and parameters that meet a budget, as a Pareto front of
time, memory and fidelity (the sweep is ``costmodel.pick``; the sentences ``reports.pick_figure``)."""

import re
from typing import Optional

import typer
from rich.markup import escape

from ..costmodel.pick import SORT_KEYS, Constraints, PickResult, pick
from ..costmodel.units import DTYPES, PHASES
from ..reports import fmt
from ..reports.pick_figure import (FIDELITY_METHOD, NO_FIDELITY, excluded_text, fidelity_text, limits_text,
                                   nothing_text, outcome_text, params_text, tied_params_text)
from .app import app
from .errors import fail
from .layout import Column, PlainHelp, datasheet_warning, print_json, print_table, screen
from .options import (REPORT_FILE, WIDE_HELP, check_choice, check_csv, check_output, command_line, load_fidelity_file,
                      load_hardware, load_model, make_shape, parse_T, parse_variants, write_csv)

# decimal (kB, MB, GB, TB: powers of 1000) and binary (KiB, MiB, GiB, TiB: powers of 1024) sizes
SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_AMOUNT = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-zµ]+)\s*$", re.IGNORECASE)


def parse_amount(text: str, units: dict, flag: str, example: str) -> float:
    """"64MiB" -> 67108864.0 by ``units`` (case-insensitive); exit 2 with one sentence unless it is
    a positive number with a known unit."""
    m = _AMOUNT.match(text)
    scale = units.get(m.group(2).lower()) if m else None
    if scale is None:
        raise fail(f"{flag} must be a number and a unit ({', '.join(units)}) such as {example}, not {text!r}")
    value = float(m.group(1)) * scale
    if not value > 0 or value == float("inf"):
        raise fail(f"{flag} must be more than 0 (a budget of {text} leaves no point), not {text!r}")
    return value


def _constraints(max_time, max_memory, max_kv, min_cosine, max_rel_error, fidelity) -> Constraints:
    if (min_cosine is not None or max_rel_error is not None) and fidelity is None:
        which = "--min-cosine" if min_cosine is not None else "--max-rel-error"
        raise fail(f"{which} needs --fidelity FILE (written by `attncost fidelity --json`): without one the fidelity "
                   f"of the approximations is unknown")
    if min_cosine is not None and not 0 < min_cosine <= 1:
        raise fail(f"--min-cosine must be more than 0 and at most 1 (1: exact attention), not {min_cosine:g}")
    if max_rel_error is not None and not max_rel_error > 0:
        raise fail(f"--max-rel-error must be more than 0 (0: exact attention only), not {max_rel_error:g}")
    return Constraints(
        max_time=None if max_time is None else parse_amount(max_time, TIME_UNITS, "--max-time", "2ms, 500us or 0.9s"),
        max_memory=None if max_memory is None else parse_amount(max_memory, SIZE_UNITS, "--max-memory",
                                                                 "8GiB or 1.5GB"),
        max_kv=None if max_kv is None else parse_amount(max_kv, SIZE_UNITS, "--max-kv", "64MiB or 1.5GB"),
        min_cosine=min_cosine, max_rel_error=max_rel_error)


@app.command("pick", cls=PlainHelp)
def pick_cmd(
    d: Optional[int] = typer.Option(None, "--d", help="Model width; required unless --model."),
    T: str = typer.Option(..., "--T", help="Tokens (one value): 32768 or 32k (k = 1024, M = 1048576)."),
    heads: Optional[int] = typer.Option(None, help="Attention heads (must divide d) (default 16)."),
    batch: int = typer.Option(1, help="Sequences per batch."),
    phase: str = typer.Option("prefill", help="prefill, decode (one token against a cache of T) or train."),
    dtype: str = typer.Option("bf16", help="bf16, fp16 or fp32."),
    causal: bool = typer.Option(True, "--causal/--no-causal", help="Causal (decoder) attention."),
    hardware: str = typer.Option("h100", help="A built-in profile (see `attncost hardware`) or a JSON file."),
    exec_mode: str = typer.Option("eager", "--exec", help="eager (the host issues each op) or graph (a captured "
                                  "sequence, as CUDA graphs: no host cost)."),
    variants: str = typer.Option("all", help="'all' or a comma-separated list of the variants to sweep."),
    model: Optional[str] = typer.Option(None, "--model", help="A whole model (a preset, a Hugging Face config.json or "
                                        "a model file): it sets d and heads, and --max-memory then limits its weights "
                                        "+ KV cache + peak prefill activations (logits of the last token only)."),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Largest predicted time per layer: 2ms, 500us, "
                                           "0.9s."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Largest activations + KV cache of one layer "
                                             "(the whole model with --model): 64MiB, 8GiB (binary), 1.5GB (decimal)."),
    max_kv: Optional[str] = typer.Option(None, "--max-kv", help="Largest KV cache (or decode state) of one layer for "
                                         "batch x T tokens: 64MiB, 1.5GB."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Smallest cosine of the output to exact "
                                               "attention, in (0, 1]; needs --fidelity."),
    max_rel_error: Optional[float] = typer.Option(None, "--max-rel-error", help="Largest relative error of the "
                                                  "output; needs --fidelity."),
    fidelity: Optional[str] = typer.Option(None, "--fidelity", help="A file of `attncost fidelity --json`: fidelity "
                                           "becomes an objective and may be constrained."),
    sort: str = typer.Option("time", "--sort", help="Order of the front: time, memory or fidelity (best first)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    csv_path: Optional[str] = typer.Option(None, "--csv", help="Write every point of the sweep to this CSV file."),
    html: Optional[str] = typer.Option(None, "--html", help="Also write an HTML page: the sweep's scatter with the "
                                       "front."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --html replace a file that is not an attncost "
                                                              "report."),
    plotly_js: str = typer.Option("inline", "--plotly-js", help="With --html: inline or shared (see predict)."),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """The best attention variants and parameters under a time, memory, KV or fidelity budget.

    Sweeps every variant's parameters, drops what breaks a constraint and prints the Pareto front of
    time, memory and fidelity."""
    from ..reports import PLOTLY_JS_MODES

    check_choice(plotly_js, PLOTLY_JS_MODES, "--plotly-js")
    if html is None and (overwrite or plotly_js != "inline"):
        raise fail("--overwrite and --plotly-js apply only with --html")
    check_choice(phase, PHASES, "--phase")
    check_choice(dtype, DTYPES, "--dtype")
    check_choice(sort, SORT_KEYS, "--sort")
    if sort == "fidelity" and fidelity is None:
        raise fail("--sort fidelity needs --fidelity FILE: without one the fidelity is unknown")
    constraints = _constraints(max_time, max_memory, max_kv, min_cosine, max_rel_error, fidelity)
    Ts = parse_T(T)
    if len(Ts) > 1:
        raise fail(f"--T takes one value for pick (the context to serve), not {T!r}")
    names = parse_variants(variants)
    hw = load_hardware(hardware)
    from ..costmodel.timing import MODES

    check_choice(exec_mode, MODES, "--exec")
    shape, memory = _shape(model, d, heads, Ts[0], batch, phase, dtype, causal)
    doc = None if fidelity is None else load_fidelity_file(fidelity)
    out = None if html is None else check_output(html, "--html", "pick.html", kind=REPORT_FILE,
                                                 inputs=[hardware, fidelity], overwrite=overwrite)
    csv_out = check_csv(csv_path, inputs=[hardware, fidelity])
    if exec_mode == "graph":
        from ..costmodel.as_run import graph_profile

        hw = graph_profile(hw)
    result = pick(shape, hw, constraints, variants=names, fidelity=doc, model_memory=memory, sort=sort)
    if not result.front:
        raise fail(nothing_text(result))
    if csv_out is not None:
        write_csv(csv_out, [_flat(p) for p in result.points])
    if as_json:
        print_json(_document(result, hw, fidelity))
    else:
        _print(result, hw, wide)
    if out is not None:
        from ..reports.pick_figure import write_pick_report

        try:
            path = write_pick_report(result, out, hw.name, command_line(), plotly_js)
        except OSError as err:
            raise fail(f"--html {out}: cannot write there ({err.strerror or err})")
        if not as_json:
            screen().print(f"Report written to [bold]{escape(str(path))}[/]")


def _shape(model, d, heads, T, batch, phase, dtype, causal):
    """(the layer's shape, a whole model's memory function or None)."""
    if model is None:
        if d is None:
            raise fail("--d is required unless --model is given")
        return make_shape(T=T, d=d, heads=16 if heads is None else heads, batch=batch, phase=phase, dtype=dtype,
                          causal=causal), None
    given = [f for f, v in (("--d", d), ("--heads", heads)) if v is not None] + ([] if causal else ["--no-causal"])
    if given:
        raise fail(f"{', '.join(given)} cannot be combined with --model: the model sets the shape")
    from ..costmodel.model_memory import memory_bytes
    from ..costmodel.model_spec import attention_shape

    cfg = load_model(model)
    make_shape(T=T, d=cfg.d, heads=cfg.heads, batch=batch, phase=phase, dtype=dtype)  # exit 2 naming a bad flag
    shape = attention_shape(cfg, T, batch, dtype, phase)
    return shape, lambda v, p: memory_bytes(cfg, v, cfg.variant_params(v, p), T, batch, dtype, logits="last")


# -- output ------------------------------------------------------------------------------

def _document(result: PickResult, hw, fidelity_path: Optional[str]) -> dict:
    """The --json document (stable field names)."""
    return {
        "shape": result.shape.model_dump(), "hardware": hw.name, "constraints": result.constraints.active(),
        "memory": "whole model" if result.whole_model else "layer activations + KV cache",
        "fidelity": {"file": fidelity_path, "objective": result.objective,
                     "method": NO_FIDELITY if result.objective is None else FIDELITY_METHOD},
        "sort": result.sort, "points_total": len(result.points), "excluded": result.excluded,
        "front": [result.points[i].as_dict() for i in result.front],
        "off_front": [{"variant": o.variant, "points": o.points, "feasible": o.feasible, "broken": o.broken,
                       "why": outcome_text(result, o)} for o in result.outcomes if not o.on_front],
        "points": [p.as_dict() for p in result.points],
    }


def _flat(p) -> dict:
    """A CSV row: the point's fields, its parameters as one text."""
    row = p.as_dict()
    row["params"] = params_text(p.params) if p.params else ""
    row["resolved"] = params_text(p.resolved)
    row["broken"] = ";".join(p.broken)
    return row


def _print(result: PickResult, hw, wide: bool) -> None:
    console = screen(wide)
    s = result.shape
    console.print(f"[bold]pick[/] · one attention layer · {s.phase} · batch {s.batch} · T {s.T:,} · d {s.d:,} · "
                  f"{s.heads} heads · {s.dtype} · {'causal' if s.causal else 'non-causal'} · {escape(hw.name)} "
                  f"({escape(hw.description)})")
    console.print(f"constraints: {limits_text(result)}. {excluded_text(result)}.")
    fid = "cosine" if result.objective == "cosine" else "rel.\nerror"
    cols = [Column("#"), Column("variant", "left"), Column("parameters", "left", wrap=True), Column("ms"),
            Column("memory" if not result.whole_model else "model\nmemory"), Column("KV cache\nper layer"),
            Column("GFLOP", wide=True)] + ([Column(fid)] if result.objective else [])
    rows = []
    for rank, tied in enumerate(result.front_rows(), 1):
        p = result.points[tied[0]]
        params = tied_params_text([result.points[i] for i in tied])
        rows.append([str(rank), p.variant, escape(params), fmt.ms(p.time_s, unit=False),
                     fmt.nbytes(p.memory_bytes), fmt.nbytes(p.kv_bytes), fmt.sig(p.flops / 1e9)]
                    + ([fidelity_text(p.fidelity, result.objective)] if result.objective else []))
    print_table(console, cols, rows, wide=wide, keys=2,
                title=f"Pareto front of time, memory{' and fidelity' if result.objective else ''}, best first by "
                      f"{result.sort}")
    off = [o for o in result.outcomes if not o.on_front]
    if off:
        console.print("[bold]not on the front[/]")
        for o in off:
            console.print(f"  {o.variant}: {escape(outcome_text(result, o))}")
    memory = ("memory: the whole model's weights, KV cache and peak activations (prefill of batch x T, logits of "
              "the last token)"
              if result.whole_model else "memory: the layer's peak activations + the KV cache (or decode state) it "
                                          "keeps for batch x T tokens")
    method = NO_FIDELITY if result.objective is None else FIDELITY_METHOD
    console.print(f"[dim]{memory}; ms: predicted time of one layer. {escape(method)}[/]")
    warn = datasheet_warning(hw)
    if warn:
        console.print(warn)
