"""`attncost crosscheck`: the analytic FLOP counts beside fvcore's and FlopCounterMode's, counted
on each variant's real PyTorch module. torch and fvcore are imported inside the command only."""

from typing import List, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ..costmodel.units import DEVICES, PHASES
from ..reports.fmt import flops, pct
from .app import app
from .errors import fail
from .layout import PlainHelp, fit_console, print_json
from .options import (BACKEND_CHOICES, CSV_HELP, T_HELP, WIDE_HELP, check_choice, check_csv, check_params,
                      make_shape, parse_ints, parse_params, parse_T, parse_variants, write_csv)

console = Console(highlight=False)

DIGITS = 5  # significant digits of FLOP counts, as in the report's cross-check table
FORWARD_PHASES = tuple(p for p in PHASES if p != "train")  # fvcore traces the forward only

CONVENTIONS = (
    "FLOPs = 2 x MACs for matmuls; fvcore's MACs are converted explicitly; other ops use "
    "costmodel/units.py ELEMENT_FLOPS per element (attncost's fvcore handles)",
    "fused attention (SDPA) counts the (query, key) pairs it computes: half the square when causal, "
    "T*w - w^2/2 for a sliding window",
    "FlopCounterMode counts matmul-like ops only and counts SDPA dense (it ignores is_causal and masks): "
    "it is compared with the analytic matmul FLOPs",
    "skipped: ops a counter saw and did not count (FCM, FlopCounterMode: everything but matmuls)",
    "exit status 1 when analytic and fvcore matmul FLOPs differ (relative 1e-9) for any variant",
)


# Flags of the FLOP check; None where not given. They choose what to count, so --time (which
# checks the points of a profiled run as they were measured) refuses them.
@app.command(cls=PlainHelp)
def crosscheck(
    variants: Optional[str] = typer.Option(None, help="'all' or a comma-separated list (see `attncost variants`) "
                                           "(default all)."),
    d: Optional[str] = typer.Option(None, "--d", help="Model width, or a comma-separated list (default 256)."),
    T: Optional[str] = typer.Option(None, "--T", help=f"{T_HELP} Decode: the cache length (default 256)."),
    heads: Optional[int] = typer.Option(None, help="Attention heads (must divide d) (default 4)."),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", help="K/V heads of gqa (default heads/4)."),
    batch: Optional[int] = typer.Option(None, help="Sequences per batch (default 1)."),
    phase: Optional[str] = typer.Option(None, help="prefill or decode (fvcore traces the forward only; "
                                        "--ops also train) (default prefill)."),
    causal: Optional[bool] = typer.Option(None, "--causal/--no-causal", help="Causal (decoder) attention "
                                          "(default causal)."),
    param: Optional[List[str]] = typer.Option(None, "--param",
                                              help="A variant parameter, e.g. linformer.k=128 (repeatable)."),
    backend: Optional[str] = typer.Option(None, help="SDPA backend the modules ask for: auto, flash, cudnn, "
                                          "efficient, math (default auto)."),
    device: Optional[str] = typer.Option(None, help="Where the modules run: cpu, cuda or mps (default cpu)."),
    by_op: bool = typer.Option(False, "--by-op", help="Also print each variant's FLOPs by op category and fvcore op; "
                               "with --time, each variant's predicted and measured time by op kind (a run profiled "
                               "with --ops) and the kind its error comes from."),
    ops: bool = typer.Option(False, "--ops", help="Compare each variant's graph with a trace of the aten ops its "
                             "module runs instead, by op kind: kernels (count, bytes) and views; --phase train too."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    csv: Optional[str] = typer.Option(None, "--csv", help=CSV_HELP),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
    time: Optional[str] = typer.Option(None, "--time", help="A results file of `attncost profile`: check the "
                                       "predicted times against its measurements instead (exit 1 above 15%), each "
                                       "error also within its shape (against the median error of the variants "
                                       "timed with it). It checks every point of the file: the flags that choose "
                                       "what to count "
                                       "(--variants, --d, --T, --phase, --param, ...) cannot be combined with it."),
) -> None:
    """Check the analytic FLOPs against the counters on each variant's module, or (--time) times.

    FLOPs: the analytic count beside fvcore's and FlopCounterMode's, on each variant's PyTorch
    module; with --time RUN.json, the predicted times against a profiled run."""
    csv_path = check_csv(csv, inputs=[time])
    fit_console(console, wide)
    if time is not None:
        from .accuracy_view import time_check

        given = [flag for flag, value in (
            ("--variants", variants), ("--d", d), ("--T", T), ("--heads", heads), ("--kv-heads", kv_heads),
            ("--batch", batch), ("--phase", phase), ("--no-causal" if causal is False else "--causal", causal),
            ("--param", param), ("--backend", backend), ("--device", device), ("--ops", ops or None))
            if value is not None]
        if given:
            raise fail(f"{', '.join(given)} cannot be combined with --time: it checks every point of the "
                       f"results file as it was measured")
        return time_check(time, as_json, by_op, csv_path, wide)
    variants, d, T, phase, heads, batch, backend, device = (
        default if value is None else value for value, default in (
            (variants, "all"), (d, "256"), (T, "256"), (phase, "prefill"), (heads, 4), (batch, 1),
            (backend, "auto"), (device, "cpu")))
    causal = causal is not False
    if ops:
        from .ops_view import ops_check

        if by_op:
            raise fail("--by-op cannot be combined with --ops")
        return ops_check(variants, d, T, dict(heads=heads, kv_heads=kv_heads, batch=batch, phase=phase, causal=causal),
                         param, backend, device, as_json, csv_path, wide)
    check_choice(phase, FORWARD_PHASES, "--phase", why="fvcore traces the forward only")
    check_choice(backend, BACKEND_CHOICES, "--backend")
    check_choice(device.lower(), DEVICES, "--device")
    Ts, ds = parse_T(T), parse_ints(d, "--d")
    names = parse_variants(variants)
    params = parse_params(param)
    common = dict(heads=heads, kv_heads=kv_heads, batch=batch, dtype="fp32", phase=phase, causal=causal)
    shapes = [make_shape(T=t, d=dd, **common) for dd in ds for t in Ts]
    for v, p in params.items():
        for s in shapes:
            check_params(v, p, s)
    dev = _device(device)

    from ..profiler.counting import crosscheck as check

    results = [check(v, s, params.get(v), backend=backend, device=dev) for s in shapes for v in names]
    failed = [r for r in results if not r.ok]
    if csv_path is not None:
        write_csv(csv_path, [r.model_dump(mode="json") for r in results])
    if as_json:
        print_json({"conventions": list(CONVENTIONS), "ok": not failed,
                    "results": [r.model_dump(mode="json") for r in results]})
    else:
        _print(results, wide)
        if by_op:
            _print_by_op(results)
    if failed:
        raise typer.Exit(1)


def _device(name: str) -> str:
    """``name`` (one of DEVICES), or exit 2 if this machine does not have it."""
    import torch

    name = name.lower()
    ok = {"cpu": True, "cuda": torch.cuda.is_available(),
          "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if not ok[name]:
        raise fail(f"--device {name} is not available here; use --device cpu")
    return name


def _rel(r: Optional[float]) -> str:
    """A relative difference: "=" within 1e-9, else a percentage."""
    if r is None:
        return "-"
    return "=" if r <= 1e-9 else pct(r, 2, signed=False)


# (heading, justify, shown in the default layout); the rest appear with --wide
COLUMNS = (("variant", "left", True), ("B,T,d,H", "left", True), ("analytic", "right", True),
           ("analytic matmul", "right", False), ("fvcore", "right", False), ("Δ total", "right", True),
           ("fvcore matmul", "right", False), ("Δ matmul", "right", True), ("FlopCounterMode", "right", False),
           ("Δ FCM", "right", True), ("where they differ", "left", False), ("skipped", "left", False),
           ("notes", "left", True))


def _print(results: list, wide: bool = False) -> None:
    """The FLOP table: by default the analytic count and the differences, the text in one folded
    notes column and a single shape in the title (fits 100 columns); ``wide``: every count."""
    shapes = {_shape_text(r.shape) for r in results}
    one_shape = len(shapes) == 1 and not wide
    title = "FLOPs: analytic vs fvcore vs FlopCounterMode" + (f" (B,T,d,H = {shapes.pop()})" if one_shape else "")
    t = Table(box=box.SIMPLE_HEAVY, title=title, caption="\n".join(CONVENTIONS), caption_justify="left")
    keep = [i for i, (col, _, default) in enumerate(COLUMNS)
            if (col != "notes" if wide else default) and not (one_shape and col == "B,T,d,H")]
    for i in keep:
        col, just, _ = COLUMNS[i]
        text = just == "left" and col != "variant"
        t.add_column(col, justify=just, no_wrap=not text, overflow="fold")
    for r in results:
        cells = _cells(r)
        cells.append("; ".join(x for x in cells[10:12] if x and x != "-"))
        t.add_row(*(cells[i] for i in keep))
    console.print(t)
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(sorted({f"{r.variant} (T={r.shape.T}, d={r.shape.d})" for r in failed}))
        console.print(f"[bold red]analytic and fvcore matmul FLOPs differ, or the module failed:[/] {names}")
    else:
        console.print("[green]analytic matmul FLOPs == fvcore matmul FLOPs for every variant that applies.[/]")


def _shape_text(s) -> str:
    return f"{s.batch},{s.T},{s.d},{s.heads}" + ("" if s.causal else " nc")


def _cells(r) -> list:
    """The cells of one result, in the order of COLUMNS without notes."""
    shape = _shape_text(r.shape)
    if r.status != "ok":
        style = "yellow" if r.status == "n/a" else "bold red"
        return [r.variant, shape, f"[{style}]{r.status}[/]", "", "", "", "", "", "", "", r.reason or "", ""]
    mm = "[green]=[/]" if r.matmul_match else f"[bold red]{_rel(r.rel_diff_matmul)}[/]"
    fc = _rel(r.rel_diff_flop_counter)
    if r.flop_counter_match_dense and fc != "=":
        fc += " dense"
    diffs = "; ".join(r.differences) or "-"
    fv = ", ".join(f"{k} x{n}" for k, n in r.fvcore_skipped.items())
    skipped = f"[bold red]fvcore skipped: {fv}[/]" if fv else ""
    if r.flop_counter_skipped:
        skipped += ("; " if skipped else "") + "FCM skipped: " + ", ".join(
            x.removeprefix("aten.") for x in r.flop_counter_skipped)
    analytic, analytic_mm, fvcore, fvcore_mm, fcm = (flops(x, digits=DIGITS) for x in (
        r.analytic, r.analytic_matmul, r.fvcore, r.fvcore_matmul, r.flop_counter))
    return [r.variant, shape, analytic, analytic_mm, fvcore, _rel(r.rel_diff), fvcore_mm, mm, fcm, fc, diffs,
            skipped]


def _print_by_op(results: list) -> None:
    """Analytic FLOPs by op category beside fvcore's, and the fvcore ops in each category."""
    from ..profiler.counting import key_category

    t = Table(box=box.SIMPLE_HEAVY, title="FLOPs by op category: analytic (cost-model graph) vs fvcore (aten ops)")
    for col, just in (("variant", "left"), ("B,T,d,H", "left"), ("category", "left"), ("analytic", "right"),
                      ("fvcore", "right"), ("Δ", "right"), ("fvcore ops", "left")):
        t.add_column(col, justify=just, overflow="fold", no_wrap=just == "right")
    for r in results:
        if r.status != "ok":
            continue
        shape = _shape_text(r.shape)
        for i, (cat, v) in enumerate(r.categories.items()):
            ops = ", ".join(f"{k} {flops(x, digits=DIGITS)}" for k, x in r.fvcore_by_op.items()
                            if key_category(k) == cat)
            diff = v["fvcore"] - v["analytic"]
            same = abs(diff) <= 1e-9 * max(abs(v["analytic"]), 1.0)
            t.add_row(r.variant if i == 0 else "", shape if i == 0 else "", cat, flops(v["analytic"], digits=DIGITS),
                      flops(v["fvcore"], digits=DIGITS), "=" if same else ("+" if diff > 0 else "−") + flops(abs(diff)), ops or "-")
        t.add_section()
    console.print(t)
