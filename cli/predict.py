"""`attncost predict`, `attncost variants`, `attncost hardware`: the analytic model, no torch."""

from typing import List, Optional

import typer
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text

from ..costmodel.as_run import graph_profile
from ..costmodel.crossover import HI, LO, OCTAVE_SAMPLES, cheaper
from ..costmodel.evaluate import evaluate
from ..costmodel.timing import MODES
from ..costmodel.units import GIB, GIGA, MIB
from .app import app
from .errors import fail
from .layout import SECTION, Column, PlainHelp, datasheet_warning, print_json, print_table, screen
from ..reports.fmt import sig
from .options import (REPORT_FILE, check_choice, command_line, check_output, check_params, list_items, load_hardware, make_shape,
                      WIDE_HELP, parse_ints, parse_params, parse_T, parse_variants, CSV_HELP, T_HELP, check_csv, write_csv)



@app.command(cls=PlainHelp)
def predict(
    d: Optional[str] = typer.Option(None, "--d", help="Model width, or a comma-separated list (sweep); required unless --model."),
    T: str = typer.Option(..., "--T", help=T_HELP),
    heads: Optional[int] = typer.Option(None, help="Attention heads (must divide d) (default 16)."),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", help="K/V heads of gqa (default heads/4)."),
    batch: str = typer.Option("1", help="Sequences per batch, or a comma-separated list (sweep)."),
    dtype: str = typer.Option("bf16", help="bf16, fp16 or fp32."),
    phase: Optional[str] = typer.Option(None, help="prefill, decode (one token against a cache of T) or train (default prefill)."),
    causal: bool = typer.Option(True, "--causal/--no-causal", help="Causal (decoder) attention."),
    variants: Optional[str] = typer.Option(None, help="'all' or a comma-separated list (see `attncost variants`) "
                                           "(default all; with --model: its native variant, flash, gqa, mqa, mla)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="A variant parameter, e.g. linformer.k=128 (repeatable)."),
    hardware: str = typer.Option("h100", help="A built-in profile (see `attncost hardware`) or a JSON file; a comma-separated list "
                                  "compares profiles side by side."),
    baseline: str = typer.Option("flash", help="The variant others are compared with."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    csv: Optional[str] = typer.Option(None, "--csv", help=CSV_HELP),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
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
                                                "(default: the checkpoint's, else --dtype)."),
    kv_dtype: Optional[str] = typer.Option(None, "--kv-dtype", help="With --model: the KV cache in bf16, fp16, fp8 "
                                           "or int8 (default: --dtype)."),
    logits: str = typer.Option("all", "--logits", help="With --model: the prefill's LM head over 'all' T tokens "
                                                       "(a forward pass) or the 'last' one (generation)."),
    kernels: Optional[str] = typer.Option(None, "--kernels", help="One variant: a row per kernel of its prediction "
                                          "(ops, kind, FLOPs, bytes, time, bound, host or device) at one --T and --d."),
    exec_mode: str = typer.Option("eager", "--exec", help="eager (the host issues each op, as PyTorch eager) or "
                                  "graph (the device replays a captured sequence, as CUDA graphs: no host cost)."),
    tp: int = typer.Option(1, "--tp", help="Tensor parallel: split the heads over N devices (figures per device)."),
    cp: int = typer.Option(1, "--cp", help="Context parallel: split the sequence over N devices (figures per device)."),
    cp_kind: str = typer.Option("ring", "--cp-kind", help="With --cp: ring (K/V blocks passed around a ring) or "
                                "ulysses (all-to-all from sequence shards to head shards)."),
    sequence_parallel: bool = typer.Option(False, "--sequence-parallel", help="With --tp: reduce-scatter and "
                                           "all-gather instead of the all-reduce."),
) -> None:
    """Predict FLOPs, memory and time of attention variants, or of a whole model (--model).

    Each variant is compared with a baseline, with the ranges of T where it is faster; with
    --model, the whole model is priced with each attention variant swapped in."""
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
                                ("--kernels", kernels)) if v is not None] + (
            [] if causal else ["--no-causal"])
        if given:
            raise fail(f"{', '.join(given)} cannot be combined with --model: the model sets the shape, and "
                       f"the view shows both prefill and decode")
        from .model_view import run, write_report

        csv_path, hws = check_csv(csv, inputs=[model, hardware]), _hardware(hardware)
        if len(hws) > 1 and html is not None:
            raise fail("--html takes one --hardware")
        out = None if html is None else check_output(html, "--html", "report.html", kind=REPORT_FILE,
                                                     inputs=[hardware, model], overwrite=overwrite)
        runs = []
        for i, hw in enumerate(hws):
            if i:
                screen().print()
            runs.append((hw, run(model, T, parse_ints(batch, "--batch"), dtype, variants, param, hw, as_json, logits,
                                 weights_dtype=weights_dtype, kv_dtype=kv_dtype, wide=wide)))
        _write_csv(csv_path, [(hw, [r.as_dict() for r in results]) for hw, results in runs])
        if out is not None:
            write_report(model, runs[0][1], runs[0][0], out, command_line(), plotly_js, quiet=as_json)
        return
    if d is None:
        raise fail("--d is required unless --model is given")
    if logits != "all":
        raise fail("--logits applies only with --model")
    if kernels is not None and (variants is not None or html is not None or csv is not None):
        raise fail("--kernels names the one variant shown, in a table or --json: --variants, --html and --csv "
                   "cannot be combined with it")
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
    hws = _hardware(hardware)
    if len(hws) > 1 and (html is not None or kernels is not None):
        raise fail("--html and --kernels take one --hardware")
    hw = hws[0]
    priced = hw if exec_mode == "eager" else graph_profile(hw)  # graph mode: no host cost
    out = None if html is None else check_output(html, "--html", "report.html", kind=REPORT_FILE, inputs=[hardware],
                                                 overwrite=overwrite)
    csv_path = check_csv(csv, inputs=[hardware])
    common = dict(heads=heads, kv_heads=kv_heads, dtype=dtype, phase=phase, causal=causal)
    shapes = [make_shape(T=t, d=dd, batch=b, **common) for b in parse_ints(batch, "--batch") for dd in ds for t in Ts]
    for v, p in params.items():  # explicit parameters must fit every shape asked for
        for s in shapes:
            check_params(v, p, s)
    if tp != 1 or cp != 1 or sequence_parallel:
        from .parallel_view import parse_layout, run as run_parallel

        if kernels is not None or html is not None or len(hws) > 1 or exec_mode != "eager":
            raise fail("--tp and --cp show their own table: --kernels, --html, --exec graph and a list of "
                       "--hardware cannot be combined with them")
        return run_parallel(names, shapes, params, hw, parse_layout(tp, cp, cp_kind, sequence_parallel), as_json,
                            wide)
    if kernels is not None:
        from .kernels_view import kernels_report

        return kernels_report(kernels, shapes, params, priced, as_json, wide=wide)
    # The table and the report show the time ranges alone: search the other metrics for --json only.
    metrics = None if as_json or csv_path else ("time",)
    results = evaluate(names, base, shapes, params, priced, metrics)
    runs = [(hw, results)] + [(h, evaluate(names, base, shapes, params, h if exec_mode == "eager" else
                                           graph_profile(h), metrics)) for h in hws[1:]]
    console = screen(wide)
    if as_json:
        doc = {"shape": shapes[0].model_dump(), "sweep": {"T": Ts, "d": ds}, "hardware": hw.model_dump(),
               "exec": exec_mode, "baseline": base, "results": [r.model_dump() for r in results]}
        if len(hws) > 1:  # one entry per profile, each as the single-profile document has it
            doc["compare"] = [{"hardware": h.model_dump(), "results": [r.model_dump() for r in rs]} for h, rs in runs]
        print_json(doc)
    else:
        _print(console, runs, base, shapes, wide)
        if exec_mode == "graph":
            console.print("[dim]--exec graph: times as the device replays a captured sequence (CUDA graphs), "
                          "with no host time per op.[/]")
    _write_csv(csv_path, [(h, [r.model_dump() for r in rs]) for h, rs in runs])
    if out is not None:
        from ..reports import write_prediction_report

        try:
            path = write_prediction_report(results, out, priced, command=command_line(), baseline=base,
                                           plotly_js=plotly_js)
        except OSError as err:
            raise fail(f"--html {out}: cannot write there ({err.strerror or err})")
        if not as_json:
            console.print(f"Report written to [bold]{escape(str(path))}[/]")


def _hardware(text: str) -> list:
    """--hardware: one profile, or a comma-separated list to compare."""
    return [load_hardware(x) for x in list_items(text, "--hardware")]


def _write_csv(path, runs: list) -> None:
    """--csv: the --json results of each (hardware, results) in ``runs``, a row each; where several
    profiles are compared, a first column names the profile."""
    if path is None:
        return
    many = len(runs) > 1
    try:
        write_csv(path, [({"hardware": hw.name} if many else {}) | row for hw, rows in runs for row in rows])
    except OSError as err:
        raise fail(f"--csv {path}: cannot write there ({err.strerror or err})")


# -- presentation ------------------------------------------------------------------------
def _ratio(base: Optional[float], x: Optional[float]) -> str:
    if not base or not x:
        return "–"
    text = f"{base / x:.2f}x"
    return f"[green]{text}[/]" if cheaper(x, base) else f"[red]{text}[/]" if cheaper(base, x) else text


def _ranges(e, base: str, low: int) -> str:
    """Where ``e`` is faster (cheaper in FLOPs without a time model) than the baseline: every range
    of T, up to two, then how many more; a range from the bottom of the search (``low``) is marked *."""
    if e.variant == base:
        return "baseline"
    ranges = (e.cheaper_ranges_T or {}).get("time" if e.time_s is not None else "flops") or []
    if not ranges:
        return "never"

    def one(a: int, b: Optional[int]) -> str:
        if a <= low:
            return "every T*" if b is None else f"up to {b - 1:,}*"
        return f"from {a:,}" if b is None else f"{a:,} to {b - 1:,}"

    text = [one(a, b) for a, b in ranges]
    return "; ".join(text[:2]) + (f"; +{len(text) - 2} more" if len(text) > 2 else "")


def _kv(e) -> str:
    """KV cache or decode state in MiB; n/a for a variant with no decode path."""
    from ..costmodel.variants import REGISTRY

    return sig(e.kv_cache_bytes / MIB) if REGISTRY[e.variant].decode else "n/a"


def _leads(shapes) -> list:
    """The fields that vary across the rows, as (header, value of a shape)."""
    leads = []
    for field, header in (("batch", "batch"), ("T", "T"), ("d", "d")):
        if len({getattr(s, field) for s in shapes}) > 1:
            leads.append((header, lambda s, f=field: f"{getattr(s, f):,}"))
    return leads


def _timed_columns(hws, base: str) -> list:
    """The columns that depend on the hardware: one set, or one per profile side by side (the
    bound then with --wide only)."""
    if len(hws) == 1:
        return [Column("bound", "left"), Column("ms"), Column(f"time\nvs {base}")]
    return [c for h in hws for c in (Column(f"{h.name}\nbound", "left", wide=True), Column(f"{h.name}\nms"),
                                     Column(f"{h.name} time\nvs {base}"))]


def _title(shapes, hws) -> str:
    """The line above the table: what every row shares, and that its figures are per layer."""
    s0, ds = shapes[0], sorted({s.d for s in shapes})
    parts = [s0.phase, f"batch {s0.batch:,}" if len({s.batch for s in shapes}) == 1 else "",
             f"T {s0.T:,}" if len({s.T for s in shapes}) == 1 else "", f"d {', '.join(f'{d:,}' for d in ds)}",
             f"{s0.heads} heads (head dim {', '.join(str(d // s0.heads) for d in ds)})", s0.dtype,
             "causal" if s0.causal else "non-causal", escape(", ".join(f"{h.name} ({h.description})" for h in hws))]
    return "[bold]one attention layer[/] (figures per layer) · " + " · ".join(x for x in parts if x)


def _print(console, runs, base, shapes, wide: bool) -> None:
    """``runs``: (hardware, results) per profile, compared side by side: a row per (shape,
    variant), the hardware's figures in columns of their own."""
    hws = [h for h, _ in runs]
    ds = sorted({s.d for s in shapes})
    console.print(_title(shapes, hws))
    leads = _leads(shapes)
    one_T = len({s.T for s in shapes}) == 1 and len(hws) == 1  # else the ranges get a table of their own
    cols = [Column(h) for h, _ in leads] + [
        Column("variant", "left"), Column("GFLOP\ncore", wide=True), Column("GFLOP"), Column(f"FLOPs\nvs {base}"),
        Column("act MiB\nunfused", wide=True), Column("act MiB" + ("\nfused" if wide else "")),
        Column("KV cache /\nstate MiB"), Column("FLOP\n/byte", wide=True)] + _timed_columns(hws, base) + (
        [Column(f"faster than\n{base} at T", "left")] if one_T else [])
    low = min(LO, min(s.T for s in shapes))
    found = [{(e.shape, e.variant): e for e in results} for _, results in runs]
    rows, notes, params, cross = [], {}, {}, {}
    first = runs[0][1]
    for shape in dict.fromkeys(e.shape for e in first):
        if rows:
            rows.append(SECTION)
        lead = [f(shape) for _, f in leads]
        for e in (x for x in first if x.shape == shape):
            text = ", ".join(f"{k}={v}" for k, v in (e.params or {}).items() if v is not None)
            if text:  # None: a parameter that does not apply (gqa's window without one)
                params.setdefault(e.variant, {}).setdefault(text, set()).add(shape.d)
            if e.status != "ok":
                rows.append(lead + [e.variant] + ["–"] * (len(cols) - len(lead) - 1 - one_T)
                            + (["[dim]n/a[/]"] if one_T else []))
                notes[f"{e.variant}: {e.reason}"] = None
                continue
            for n in e.notes:
                notes[f"{e.variant}: {n}"] = None
            b = found[0].get((shape, base))
            cells = lead + [
                e.variant, sig(e.flops_core / GIGA), sig(e.flops / GIGA),
                _ratio(b.flops if b is not None and b.status == "ok" else None, e.flops),
                sig(e.activation_bytes_unfused / MIB), sig(e.activation_bytes_fused / MIB), _kv(e),
                sig(e.arithmetic_intensity)]
            for hw, on in zip(hws, found):
                x, b = on.get((shape, e.variant)), on.get((shape, base))
                bt = b.time_s if b is not None and b.status == "ok" else None
                if x is None or x.status != "ok":
                    cells += ["–"] * 3
                    continue
                cells += [x.bound or "–", sig(x.time_s * 1e3) if x.time_s is not None else "–",
                          _ratio(bt, x.time_s)]
                cross.setdefault((hw.name, shape.d, shape.batch, e.variant), _ranges(x, base, low))
            rows.append(cells + ([cross[(hws[0].name, shape.d, shape.batch, e.variant)]] if one_T else []))
    print_table(console, cols, rows, wide=wide, keys=len(leads) + 1)
    if not one_T:
        _print_crossovers(console, cross, base, wide)
    at_d = ", ".join(f"{d:,}" for d in ds)
    console.print(f"[dim]vs {base}: {base}'s figure over the variant's: above 1 (green) the variant is cheaper, "
                  f"below 1 (red) dearer. 'faster than {base} at T': the ranges of T where the predicted time is "
                  f"lower, at d {at_d} and the other settings shown, searched from {low:,} to {HI:,} tokens at "
                  f"{OCTAVE_SAMPLES} or more points per octave and every T shown; *: from the bottom of that search "
                  f"range ({low:,}); --json also gives the ranges where FLOPs and memory are lower. "
                  f"act MiB: activations with fused kernels{'' if wide else ' (--wide: unfused too)'}. "
                  f"KV cache / state: what decode keeps per layer (n/a: no decode path). Fused causal kernels count "
                  f"half the dense core (FlashAttention's convention); the math path (mha) counts it dense.[/]")
    _print_params(console, params, len(ds) > 1)
    for hw in hws:
        warn = datasheet_warning(hw)
        if warn:
            console.print(warn)
    for n in notes:
        console.print(f"[dim]- {escape(n)}[/]")


def _print_crossovers(console, cross: dict, base: str, wide: bool) -> None:
    """A T sweep, or profiles compared: where each variant is faster than the baseline, once per
    variant (and d, batch), a column per profile. ``cross``: (hardware, d, batch, variant) -> ranges."""
    profiles = list(dict.fromkeys(k[0] for k in cross))
    keys = list(dict.fromkeys(k[1:] for k in cross))
    vary = [i for i in range(2) if len({k[i] for k in keys}) > 1]
    cols = [Column(("d", "batch")[i]) for i in vary] + [Column("variant", "left")] + [
        Column(f"{h}: faster than\n{base} at T" if len(profiles) > 1 else f"faster than {base} at T", "left")
        for h in profiles]
    rows = [[f"{k[i]:,}" for i in vary] + [k[2]] + [cross.get((h, *k), "–") for h in profiles] for k in keys]
    print_table(console, cols, rows, wide=wide, keys=len(vary) + 1)


def _print_params(console, params: dict, by_d: bool) -> None:
    """The resolved parameters, per d where they change with it."""
    if not params:
        return
    parts = []
    for v, texts in params.items():
        if len(texts) == 1 or not by_d:
            parts.append(f"{v} {next(iter(texts))}")
        else:
            parts.append(f"{v} " + "; ".join(f"{t} (d {', '.join(f'{d:,}' for d in sorted(ds))})"
                                              for t, ds in texts.items()))
    console.print("[dim]parameters: " + escape("; ".join(parts)) + "[/]")


@app.command("variants", cls=PlainHelp)
def list_variants(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The attention variants: names, definitions, parameters and defaults."""
    from ..costmodel.variants import REGISTRY

    rows = []
    for v in REGISTRY.values():
        params = {k: {"default": f.default, "description": f.description or ""}
                  for k, f in v.params.model_fields.items()}
        rows.append({"name": v.name, "title": v.title, "definition": v.definition, "source": v.source,
                     "causal": {True: "causal", False: "not causal", None: "either"}[v.causal],
                     "decode": v.decode, "cost": v.cost, "params": params, "notes": list(v.notes)})
    if as_json:
        print_json(rows)
        return
    console = screen()
    for r in rows:  # a block per variant, its lines indented where they wrap: readable at any width
        console.print(f"[bold]{r['name']}[/] · {escape(r['title'])}")
        lines = [f"what: {escape(r['definition'])}", f"source: {escape(r['source'])}",
                 f"cost: {escape(r['cost'])}", f"use: {CAUSAL_WORDS[r['causal']]}; "
                 + ("decodes token by token" if r["decode"] else "no decode path (prefill and training only)")]
        lines += [f"[dim]{k}[/] (default {'auto' if p['default'] is None else p['default']}): "
                  f"{escape(p['description'])}" for k, p in r["params"].items()]
        lines += [f"[dim]- {escape(n)}[/]" for n in r["notes"]]
        for line in lines:
            console.print(Padding(Text.from_markup(line), (0, 0, 0, 2), expand=False))


CAUSAL_WORDS = {"causal": "causal only", "not causal": "not causal (it mixes future tokens)",
                "either": "causal or not"}


@app.command("hardware", cls=PlainHelp)
def list_hardware_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
                      wide: bool = typer.Option(False, "--wide", help="Show the descriptions too.")) -> None:
    """The built-in hardware profiles and their published peaks."""
    from ..costmodel.hardware import list_hardware

    profiles = list_hardware()
    if as_json:
        print_json([h.model_dump() for h in profiles])
        return
    console = screen(wide)
    cols = [Column("name", "left"), Column("description", "left", wide=True), Column("bf16\nTFLOP/s"),
            Column("TF32\nTFLOP/s"), Column("fp32\nTFLOP/s"), Column("memory\nTB/s"), Column("memory\nGiB"),
            Column("efficiencies", "left")]
    rows = [[h.name, escape(h.description), sig(h.peak_flops.get("bf16", 0) / 1e12),
             sig(h.peak_flops.get("fp32", 0) / 1e12), sig(h.vector_flops / 1e12), sig(h.mem_bandwidth / 1e12),
             sig(h.mem_bytes / GIB), "fitted" if h.calibrated else "[yellow]datasheet[/]"] for h in profiles]
    print_table(console, cols, rows, wide=wide)
    console.print("[dim]Dense tensor peaks (no sparsity); TF32: fp32 matmuls on tensor cores (where the device "
                  "has none, its fp32 rate); fp32: the non-tensor (vector) rate. fitted: efficiencies fitted to "
                  "microbenchmarks on the device; datasheet: datasheet peaks, not calibrated, efficiencies "
                  "assumed: run `attncost calibrate` on the device for a fitted profile. --wide: descriptions.[/]")
    console.print()
    print_table(console, [Column("name", "left"), Column("interconnect", "left"), Column("GB/s per\ndirection"),
                          Column("latency\nus"), Column("source", "left", wrap=True, wide=True)],
                [[h.name] + _links(h.interconnect) for h in profiles], wide=wide, title="links between devices")
    if not wide:
        sources = dict.fromkeys(h.interconnect.source for h in profiles if h.interconnect is not None)
        for i, source in enumerate(sources, 1):
            console.print(f"[dim]source {i}: {escape(source)}[/]")
    console.print("[dim]Used by `attncost predict --tp N / --cp N`; `attncost calibrate --nproc N` measures them "
                  "(p2p, all-reduce, all-to-all) into a profile.[/]")


def _links(link) -> list:
    """The hardware table's interconnect cells: name, per-direction GB/s, latency, source; 'none' where absent."""
    if link is None:
        return ["none", "–", "–", "–"]
    return [escape(link.name), sig(link.bandwidth_Bps / 1e9), sig(link.latency_s * 1e6), escape(link.source)]
