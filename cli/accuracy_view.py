"""`attncost crosscheck --time RUN.json [--by-op]`: the time model's error on a measured run, and
(--by-op, a run profiled with --ops) where each variant's error comes from, op kind by op kind."""

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ..costmodel.accuracy import (PACE_TOLERANCE, REST, TARGET_MEDIAN, TARGET_P90, by_op, by_variant,
                                  crossover_table, label, pace_ratio, pace_summary, point_errors, summary,
                                  within_shape, within_summary)
from ..reports.fmt import count, error, measured_ms, ms, nbytes, pct, predicted_ms
from .errors import fail
from .layout import datasheet_warning, fit_console, print_json
from .options import load_run, write_csv

console = Console(highlight=False)


def time_check(path: str, as_json: bool, ops: bool = False, csv_path: Optional[Path] = None,
               wide: bool = False) -> None:
    """Print the error table (``ops``: and the error by op kind); exit 1 when the median error is above
    the 15 % target. ``csv_path``: also the points (their --json fields) as a CSV file."""
    fit_console(console, wide)
    run = load_run(path, "--time")
    errors = point_errors(run)
    within = within_shape(errors)
    total, per_variant, cross = summary(errors), by_variant(errors, within), crossover_table(run)
    peers = within_summary(within)
    pace = pace_summary(errors, run.hardware)
    ratios = [pace_ratio(p, run.hardware) for p, *_ in errors]
    kinds = _by_op(run, path) if ops else None
    passed = total["median"] is not None and total["median"] <= TARGET_MEDIAN
    points = [{"variant": p.variant, "exec": p.exec_mode, "shape": p.shape.model_dump(), "predicted_s": pr,
               "measured_s": m, "error": e, "error_within_shape": w, "pace_ratio": k}
              for (p, pr, m, e), k, w in zip(errors, ratios, within)]
    if csv_path is not None:
        write_csv(csv_path, points)
    if as_json:
        doc = {"run": path, "device": run.environment.device_name or run.environment.device,
               "hardware_profile": run.environment.hardware_profile, "summary": total, "within_shape": peers,
               "target": {"median": TARGET_MEDIAN, "p90": TARGET_P90}, "ok": passed,
               "by_variant": per_variant, "crossovers": cross, "pace": pace,
               "points": points}
        if kinds is not None:
            doc["by_op"] = {name: {**s, "rows": [r.model_dump() for r in s["rows"]]} for name, s in kinds.items()}
        print_json(doc)
    else:
        _print(run, path, errors, ratios, total, per_variant, cross, kinds)
        if peers["points"]:
            console.print(_within_line(peers), soft_wrap=True)
        if pace is not None:
            console.print(_pace_line(pace), soft_wrap=True)
    if not passed:
        raise typer.Exit(1)


def _by_op(run, path: str) -> dict:
    """``accuracy.by_op`` of the run, or exit 2 where it has nothing to show."""
    if run.hardware is None:
        raise fail(f"--by-op: {path} holds no hardware profile to predict with (profile it with --hardware)")
    kinds = by_op(run)
    if not kinds:
        raise fail(f"--by-op: {path} holds no measured point with times by op kind: profile with --ops")
    return kinds


def _print(run, path, errors, ratios, total, per_variant, cross, kinds=None) -> None:
    env = run.environment
    console.print(f"[bold]time model vs measured[/] · {path} · {env.device_name or env.device} · "
                  f"profile {env.hardware_profile or '?'} · {run.dtype}")
    warn = datasheet_warning(run.hardware) if run.hardware is not None else None
    if warn:
        console.print(warn)
    if kinds is not None:
        _print_by_op(kinds)
    else:
        t = Table(box=box.SIMPLE_HEAD, header_style="bold")
        paced = any(ratios)
        for c in ("variant", "d", "T", "phase", "measured ms", "predicted ms", "error") + (("pace",) if paced else ()):
            t.add_column(c, justify="left" if c in ("variant", "phase") else "right", no_wrap=c != "variant")
        for (p, pr, m, e), k in zip(errors, ratios):
            stable = p.timing.stable if p.timing else None
            t.add_row(label(p), count(p.shape.d), count(p.shape.T), p.shape.phase, measured_ms(m, stable),
                      predicted_ms(pr, e), _styled(e), *((_pace(k),) if paced else ()))
        console.print(t)
    v = Table(box=box.SIMPLE_HEAD, header_style="bold", title="by variant (bias: the median signed error)")
    within = any(s.get("within_bias") is not None for s in per_variant.values())
    heads = ("variant", "points", "median |error|", "p90 |error|", "bias") + (("bias in its shape",) if within else ())
    for c in heads:
        v.add_column(c, justify="left" if c == "variant" else "right", no_wrap=c != "variant")
    for name, s in per_variant.items():
        w = s.get("within_bias")
        v.add_row(name, str(s["points"]), pct(s["median"], signed=False), pct(s["p90"], signed=False),
                  error(s["bias"]), *((("–" if w is None else error(w)),) if within else ()))
    console.print(v)
    if cross:
        c = Table(box=box.SIMPLE_HEAD, header_style="bold", title="where each variant becomes faster (T)")
        for col in ("variant", "vs", "d", "measured", "predicted", "ratio"):
            c.add_column(col, justify="left" if col in ("variant", "vs") else "right", no_wrap=col not in ("variant", "vs"))
        for r in cross:
            mode = "" if r["exec"] == "eager" else f" ({r['exec']})"
            c.add_row(r["variant"] + mode, r["baseline"], count(r["d"]), _T(r["measured_T"]), _T(r["predicted_T"]),
                      "–" if r["ratio"] is None else f"{r['ratio']:.2f}x")
        console.print(c)
    if total["median"] is None:
        console.print("[red]no measured point with a prediction: nothing to judge[/]")
        return
    ok = total["median"] <= TARGET_MEDIAN
    console.print(f"{'[green]' if ok else '[red]'}median |error| {pct(total['median'], signed=False)} over "
                  f"{total['points']} points (target {pct(TARGET_MEDIAN, signed=False)}), p90 "
                  f"{pct(total['p90'], signed=False)} (target {pct(TARGET_P90, signed=False)})[/]")


def _within_line(peers: dict) -> str:
    """The error left within each shape, against the median of the variants timed beside it."""
    return (f"within its shape: median |error| {pct(peers['median'], signed=False)}, p90 "
            f"{pct(peers['p90'], signed=False)} over {peers['points']} points (each against the median error of "
            f"the variants timed with it: what neither the machine's pace nor the calibration's level explains).")


def _pace(ratio: Optional[float]) -> str:
    """A point's pace ratio, "1.31x", yellow beyond the tolerance; "–" where not timed."""
    if ratio is None:
        return "–"
    text = f"{ratio:.2f}x"
    return f"[yellow]{text}[/]" if abs(ratio - 1.0) > PACE_TOLERANCE else text


def _pace_line(pace: dict) -> str:
    """The machine's pace beside the points against the calibration's."""
    text = (f"pace: the reference workload ran {pace['min']:.2f}x-{pace['max']:.2f}x its time at calibration "
            f"beside these points (median {pace['median']:.2f}x)")
    if not pace["off"]:
        return text + f"; within {pct(PACE_TOLERANCE, signed=False)} at every point."
    return (text + f"; [yellow]{pace['off']} of {pace['points']} points beyond {pct(PACE_TOLERANCE, signed=False)}"
            f"[/]: the machine ran at another pace than when it was calibrated, and their errors include some of "
            f"that drift.")


FAULTS_SHOWN = 2**20  # a series shows its page faults where either side reaches this many bytes per call


def _print_faults(kinds: dict) -> None:
    """The memory each series faulted in per call beside what its prediction faults in, where either
    reaches ``FAULTS_SHOWN``."""
    shown = {name: s["faults"] for name, s in kinds.items()
             if s.get("faults") and max(s["faults"].values()) >= FAULTS_SHOWN}
    if not shown:
        return
    t = Table(box=box.SIMPLE_HEAD, header_style="bold", title="memory faulted in per call")
    for c in ("variant", "measured", "priced"):
        t.add_column(c, justify="left" if c == "variant" else "right")
    for name, f in shown.items():
        t.add_row(name, nbytes(f["measured"]), nbytes(f["priced"]))
    console.print(t)
    console.print("[dim]measured: minor page faults per call times the page size (getrusage); priced: the "
                  "outputs the model faults in page by page (the profile's fresh_bytes and larger), at its "
                  "fresh_s_per_byte. Memory faulted in that is not priced is time the model misses.[/]")


def _span(ratios: list) -> str:
    """1.3x, or 1.2-2.4x."""
    lo, hi = min(ratios), max(ratios)
    return f"{lo:.2g}x" if f"{lo:.2g}" == f"{hi:.2g}" else f"{lo:.2g}-{hi:.2g}x"


def _T(x) -> str:
    return "never in the sweep" if x is None else count(x)


def _styled(e: float) -> str:
    """A signed error, yellow above the median target, red above the p90 one."""
    style = "" if abs(e) <= TARGET_MEDIAN else "yellow" if abs(e) <= TARGET_P90 else "red"
    return f"[{style}]{error(e)}[/]" if style else error(e)


def _print_by_op(kinds: dict) -> None:
    """A section per series: its kinds, predicted beside measured, and the kind that made it off."""
    t = Table(box=box.SIMPLE_HEAD, header_style="bold", title="time by op kind (mean per call over the points)")
    for c in ("variant", "kind", "predicted ms", "measured ms", "share of error"):
        t.add_column(c, justify="left" if c in ("variant", "kind") else "right", no_wrap=c != "variant")
    for name, s in kinds.items():
        for i, r in enumerate(s["rows"]):
            mark = " [bold]<- largest[/]" if r.kind == s["largest"] else ""
            t.add_row(name if i == 0 else "", r.kind, ms(r.predicted_s, unit=False), ms(r.measured_s, unit=False),
                      pct(r.share) + mark)
        verdict = "off" if abs(s["error"]) > TARGET_MEDIAN else "within target"
        t.add_row("", f"[bold]all ({s['points']} points)[/]", "", "", _styled(s["error"]))
        t.add_row("", f"[dim]{verdict}: mostly {s['largest']}[/]", "", "", "")
        t.add_section()
    console.print(t)
    sources = {s["source"] for s in kinds.values()}
    where = ("kernel time on the device" if sources == {"device"} else "host self time of the aten ops"
             if sources == {"host"} else "device kernel time (CUDA runs), else host self time")
    console.print(f"[dim]measured: torch.profiler, {where}, by op kind; predicted: the cost model's kernels by "
                  f"the same kinds, priced as each point ran; {REST}: the rest of the layer's time (measured: "
                  f"outside any aten op; predicted on a GPU: waiting for the host). share of error: (predicted - "
                  f"measured) / measured layer time, averaged over the points; the shares add up to the error.[/]")
    _print_faults(kinds)
    ratios = [s["profiled_ratio"] for s in kinds.values() if s["profiled_ratio"]]
    if ratios:
        console.print(f"[dim]Under torch.profiler a call took {_span(ratios)} its time alone (the profiler's own "
                      f"cost per op): the host times are divided by that ratio, in proportion to the "
                      f"layer's measured time; an op the profiler slows more than the rest still shows "
                      f"too long.[/]")
