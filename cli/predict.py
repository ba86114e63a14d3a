"""`attncost predict`, `attncost variants`, `attncost hardware`: the analytic model, no torch."""

import json
from typing import List, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..costmodel.as_run import graph_profile
from ..costmodel.crossover import OCTAVE_SAMPLES, REL_EQUAL, cheaper
from ..costmodel.evaluate import evaluate
from ..costmodel.timing import MODES
from ..costmodel.units import GIGA, MIB
from .app import app
from .errors import fail
from ..reports.fmt import sig
from .options import (REPORT_FILE, check_choice, check_output, check_params, load_hardware, make_shape, parse_ints, parse_params,
                      parse_T, parse_variants)

console = Console(highlight=False, width=None if Console().is_terminal else 160)


@app.command()
def predict(
    d: Optional[str] = typer.Option(None, "--d", help="Model width, or a comma-separated list (sweep); required unless --model."),
    T: str = typer.Option(..., "--T", help="Tokens: 4096, a list 512,1024,4096 or powers of two 512:65536."),
    heads: Optional[int] = typer.Option(None, help="Attention heads (must divide d) [default: 16]."),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", help="K/V heads of gqa (default heads/4)."),
    batch: int = typer.Option(1, help="Sequences per batch."),
    dtype: str = typer.Option("bf16", help="bf16, fp16 or fp32."),
    phase: Optional[str] = typer.Option(None, help="prefill, decode (one token against a cache of T) or train [default: prefill]."),
    causal: bool = typer.Option(True, "--causal/--no-causal", help="Causal (decoder) attention."),
    variants: Optional[str] = typer.Option(None, help="'all' or a comma-separated list (see `attncost variants`) "
                                           "[default: all; with --model: its native variant, flash, gqa, mqa, mla]."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="A variant parameter, e.g. linformer.k=128 (repeatable)."),
    hardware: str = typer.Option("h100", help="A built-in profile (see `attncost hardware`) or a JSON file."),
    baseline: str = typer.Option("flash", help="The variant others are compared with."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    html: Optional[str] = typer.Option(None, "--html", help="Also write an HTML report to this file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --html replace a file that is not an attncost "
                                                              "report."),
    plotly_js: str = typer.Option("inline", "--plotly-js", help="With --html, inline: plotly.js inside the page (one "
                                  "file that works anywhere); shared: one plotly.min.js beside the page, shared by "
                                  "the reports written to that folder (both work offline)."),
    model: Optional[str] = typer.Option(None, "--model", help="A whole model: a preset (gpt2, gpt2-medium, gpt2-xl, "
                                        "llama-3-8b, mistral-7b, deepseek-v2-lite), a Hugging Face config.json or a "
                                        "folder holding one, or a model JSON file; shows prefill (time to first token) "
                                        "and decode (tokens/s) at --batch, per variant."),
    weights_dtype: Optional[str] = typer.Option(None, "--weights-dtype", help="With --model: the linear layers' "
                                                "weights in bf16, fp16, fp8, int8 or int4 (int: weight-only) "
                                                "[default: the checkpoint's, else --dtype]."),
    kv_dtype: Optional[str] = typer.Option(None, "--kv-dtype", help="With --model: the KV cache in bf16, fp16, fp8 "
                                           "or int8 [default: --dtype]."),
    logits: str = typer.Option("all", "--logits", help="With --model: the prefill's LM head over 'all' T tokens "
                                                       "(a forward pass) or the 'last' one (generation)."),
    kernels: Optional[str] = typer.Option(None, "--kernels", help="One variant: a row per kernel of its prediction "
                                          "(ops, kind, FLOPs, bytes, time, bound, host or device) at one --T and --d."),
    exec_mode: str = typer.Option("eager", "--exec", help="eager (the host issues each op, as PyTorch eager) or "
                                  "graph (the device replays a captured sequence, as CUDA graphs: no host cost)."),
) -> None:
    """Predict FLOPs, memory and time of attention variants, with crossovers against a baseline;
    with --model, of a whole model with each attention variant swapped in."""
    if overwrite and html is None:
        raise fail("--overwrite applies only with --html")
    from ..reports import PLOTLY_JS_MODES

    check_choice(plotly_js, PLOTLY_JS_MODES, "--plotly-js")
    if plotly_js != "inline" and html is None:
        raise fail("--plotly-js applies only with --html")
    check_choice(exec_mode, MODES, "--exec")
    if model is not None and exec_mode != "eager":
        raise fail("--exec graph applies to the layer view: with --model the prediction is eager")
    if model is not None:
        given = [f for f, v in (("--d", d), ("--heads", heads), ("--kv-heads", kv_heads), ("--phase", phase),
                                ("--html", html), ("--kernels", kernels)) if v is not None] + (
            [] if causal else ["--no-causal"])
        if given:
            raise fail(f"{', '.join(given)} cannot be combined with --model: the model sets the shape, and "
                       f"the view shows both prefill and decode")
        from .model_view import run

        run(model, T, batch, dtype, variants, param, load_hardware(hardware), as_json, logits,
            weights_dtype=weights_dtype, kv_dtype=kv_dtype)
        return
    if d is None:
        raise fail("--d is required unless --model is given")
    if logits != "all":
        raise fail("--logits applies only with --model")
    if kernels is not None and (variants is not None or html is not None):
        raise fail("--kernels names the one variant shown, in a table or --json: --variants and --html cannot be "
                   "combined with it")
    if weights_dtype is not None or kv_dtype is not None:
        raise fail("--weights-dtype and --kv-dtype apply only with --model (the layer view stores its cache in "
                   "--dtype)")
    heads = 16 if heads is None else heads
    phase = phase or "prefill"
    variants = "all" if variants is None else variants
    Ts, ds = parse_T(T), parse_ints(d, "--d")
    names = parse_variants(variants)
    base = parse_variants(baseline, "--baseline")[0]
    params = parse_params(param)
    hw = load_hardware(hardware)
    priced = hw if exec_mode == "eager" else graph_profile(hw)  # graph mode: no host cost
    out = None if html is None else check_output(html, "--html", "report.html", kind=REPORT_FILE, inputs=[hardware],
                                                 overwrite=overwrite)
    common = dict(heads=heads, kv_heads=kv_heads, batch=batch, dtype=dtype, phase=phase, causal=causal)
    shapes = [make_shape(T=t, d=dd, **common) for dd in ds for t in Ts]
    for v, p in params.items():  # explicit parameters must fit every shape asked for
        for s in shapes:
            check_params(v, p, s)
    if kernels is not None:
        from .kernels_view import kernels_report

        return kernels_report(kernels, shapes, params, priced, as_json)
    # The table and the report show the time ranges alone: search the other metrics for --json only.
    results = evaluate(names, base, shapes, params, priced, None if as_json else ("time",))
    if as_json:
        print(json.dumps({"shape": shapes[0].model_dump(), "sweep": {"T": Ts, "d": ds},
                          "hardware": hw.model_dump(), "exec": exec_mode, "baseline": base,
                          "results": [r.model_dump() for r in results]}, indent=1, allow_nan=False))
    else:
        _print(results, base, hw, shapes)
        if exec_mode == "graph":
            console.print("[dim]--exec graph: times as the device replays a captured sequence (CUDA graphs), "
                          "with no host time per op.[/]")
    if out is not None:
        from ..reports import write_prediction_report

        try:
            path = write_prediction_report(results, out, priced, command="attncost " + _argv(), baseline=base,
                                           plotly_js=plotly_js)
        except OSError as err:
            raise fail(f"--html {out}: cannot write there ({err.strerror or err})")
        if not as_json:
            console.print(f"Report written to [bold]{escape(str(path))}[/]")


def _argv() -> str:
    import shlex
    import sys

    return " ".join(shlex.quote(a) for a in sys.argv[1:])


# -- presentation ------------------------------------------------------------------------
def _ratio(base: Optional[float], x: Optional[float]) -> str:
    if not base or not x:
        return "–"
    text = f"{base / x:.2f}x"
    return f"[green]{text}[/]" if cheaper(x, base) else f"[red]{text}[/]" if cheaper(base, x) else text


def _ranges(e) -> str:
    """Where ``e`` is faster (cheaper in FLOPs without a time model) than the baseline: every range
    of T, up to two, then how many more."""
    ranges = (e.cheaper_ranges_T or {}).get("time" if e.time_s is not None else "flops") or []
    if not ranges:
        return "never"
    text = [f"from {a:,}" if b is None else f"{a:,} to {b - 1:,}" for a, b in ranges]
    return "; ".join(text[:2]) + (f"; +{len(text) - 2} more" if len(text) > 2 else "")


def _print(results, base, hw, shapes) -> None:
    s0 = shapes[0]
    sweep = len(shapes) > 1
    ds = sorted({s.d for s in shapes})
    console.print(
        f"[bold]{s0.phase}[/] · batch {s0.batch} · d {', '.join(map(str, ds))} · {s0.heads} heads "
        f"(head dim {', '.join(str(d // s0.heads) for d in ds)}) · {s0.dtype} · "
        f"{'causal' if s0.causal else 'non-causal'}" + ("" if sweep else f" · T {s0.T:,}")
        + f" · {hw.name} ({hw.description})")
    by_shape: dict = {}
    for e in results:
        by_shape.setdefault(e.shape, {})[e.variant] = e
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1))
    heads = ((["T", "d"] if sweep else []) + ["variant", "GFLOP\ncore", "GFLOP\ntotal", f"FLOPs\nvs {base}",
             "act MiB\nunfused/fused", "KV\nMiB", "FLOP\n/byte", "bound", "ms", f"time\nvs {base}",
             f"faster than\n{base} at T"])
    for c in heads:
        table.add_column(c, justify="left" if c in ("variant", "bound") or c.startswith("faster") else "right",
                         no_wrap=True)
    notes: dict = {}
    params: dict = {}
    for i, (shape, row) in enumerate(by_shape.items()):
        b = row.get(base)
        bb = b if b is not None and b.status == "ok" else None
        if i and sweep:
            table.add_section()
        for e in row.values():
            lead = [f"{shape.T:,}", f"{shape.d:,}"] if sweep else []
            if e.params:
                params[e.variant] = ", ".join(f"{k}={v}" for k, v in e.params.items())
            if e.status != "ok":
                table.add_row(*lead, e.variant, *["–"] * 9, "[dim]n/a[/]")
                notes[f"{e.variant}: {e.reason}"] = None
                continue
            for n in e.notes:
                notes[f"{e.variant}: {n}"] = None
            table.add_row(
                *lead, e.variant, sig(e.flops_core / GIGA), sig(e.flops / GIGA),
                _ratio(bb.flops if bb else None, e.flops),
                f"{sig(e.activation_bytes_unfused / MIB)} / {sig(e.activation_bytes_fused / MIB)}",
                sig(e.kv_cache_bytes / MIB), sig(e.arithmetic_intensity),
                e.bound or "–", sig(e.time_s * 1e3) if e.time_s is not None else "–",
                _ratio(bb.time_s if bb else None, e.time_s), _ranges(e))
    console.print(table)
    console.print(f"[dim]x > 1: cheaper than {base} (green: by more than {REL_EQUAL:g} of it; closer is a tie). "
                  f"'faster than {base} at T': the ranges where the predicted time is lower, searched from 16 (or "
                  f"the smallest T asked for) to 4,194,304 tokens at {OCTAVE_SAMPLES} or more points per octave "
                  f"and every T shown. Fused causal kernels count half the dense core (FlashAttention's "
                  f"convention); the math path (mha) counts it dense.[/]")
    if params:
        console.print("[dim]parameters: " + "; ".join(f"{k} {v}" for k, v in params.items()) + "[/]")
    for n in notes:
        console.print(f"[dim]- {n}[/]")



@app.command("variants")
def list_variants(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The attention variants: names, definitions, parameters and defaults."""
    from ..costmodel.variants import REGISTRY

    rows = []
    for v in REGISTRY.values():
        params = {k: {"default": f.default, "description": f.description or ""}
                  for k, f in v.params.model_fields.items()}
        rows.append({"name": v.name, "title": v.title, "definition": v.definition, "source": v.source,
                     "causal": {True: "causal", False: "not causal", None: "either"}[v.causal],
                     "decode": v.decode, "params": params, "notes": list(v.notes)})
    if as_json:
        print(json.dumps(rows, indent=1, allow_nan=False))
        return
    table = Table(show_lines=True, header_style="bold")
    for c in ("name", "definition", "parameters (default)", "source"):
        table.add_column(c, overflow="fold")
    for r in rows:
        ps = "\n".join(f"{k} = {'auto' if p['default'] is None else p['default']}: {p['description']}"
                       for k, p in r["params"].items()) or "–"
        extra = f"\n[dim]{r['causal']}; {'has' if r['decode'] else 'no'} decode path[/]"
        table.add_row(f"[bold]{r['name']}[/]\n{r['title']}", r["definition"] + extra, ps, r["source"])
    console.print(table)


@app.command("hardware")
def list_hardware_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The built-in hardware profiles and their published peaks."""
    from ..costmodel.hardware import list_hardware

    profiles = list_hardware()
    if as_json:
        print(json.dumps([h.model_dump() for h in profiles], indent=1, allow_nan=False))
        return
    table = Table(header_style="bold")
    for c in ("name", "description", "bf16 TFLOP/s", "fp32 TFLOP/s", "memory TB/s", "memory GiB"):
        table.add_column(c, justify="left" if c in ("name", "description") else "right")
    for h in profiles:
        table.add_row(h.name, h.description, f"{h.peak_flops.get('bf16', 0) / 1e12:,.1f}",
                      f"{h.peak_flops.get('fp32', 0) / 1e12:,.1f}", f"{h.mem_bandwidth / 1e12:,.2f}",
                      f"{h.mem_bytes / 2**30:,.0f}")
    console.print(table)
