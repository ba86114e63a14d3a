"""`attncost crosscheck --time RUN.json`: the time model's error on a measured run."""

import json

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ..costmodel.accuracy import TARGET_MEDIAN, TARGET_P90, by_variant, crossover_table, point_errors, summary
from ..reports.fmt import count, ms, pct
from .options import load_run

console = Console(highlight=False, width=None if Console().is_terminal else 140)


def time_check(path: str, as_json: bool) -> None:
    """Print the error table; exit 1 when the median error is above the 15 % target."""
    run = load_run(path, "--time")
    errors = point_errors(run)
    total, per_variant, cross = summary(errors), by_variant(errors), crossover_table(run)
    passed = total["median"] is not None and total["median"] <= TARGET_MEDIAN
    if as_json:
        print(json.dumps({"run": path, "device": run.environment.device_name or run.environment.device,
                          "hardware_profile": run.environment.hardware_profile, "summary": total,
                          "target": {"median": TARGET_MEDIAN, "p90": TARGET_P90}, "ok": passed,
                          "by_variant": per_variant, "crossovers": cross,
                          "points": [{"variant": p.variant, "shape": p.shape.model_dump(), "predicted_s": pr,
                                      "measured_s": m, "error": e} for p, pr, m, e in errors]}, indent=1))
    else:
        _print(run, path, errors, total, per_variant, cross)
    if not passed:
        raise typer.Exit(1)


def _print(run, path, errors, total, per_variant, cross) -> None:
    env = run.environment
    console.print(f"[bold]time model vs measured[/] · {path} · {env.device_name or env.device} · "
                  f"profile {env.hardware_profile or '?'} · {run.dtype}")
    t = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for c in ("variant", "d", "T", "phase", "measured ms", "predicted ms", "error"):
        t.add_column(c, justify="left" if c in ("variant", "phase") else "right")
    for p, pr, m, e in errors:
        style = "" if abs(e) <= TARGET_MEDIAN else "yellow" if abs(e) <= TARGET_P90 else "red"
        t.add_row(p.variant, count(p.shape.d), count(p.shape.T), p.shape.phase, ms(m, 4, unit=False),
                  ms(pr, 4, unit=False), f"[{style}]{pct(e)}[/]" if style else pct(e))
    console.print(t)
    v = Table(box=box.SIMPLE_HEAD, header_style="bold", title="by variant")
    for c in ("variant", "points", "median |error|", "p90 |error|", "bias (median signed)"):
        v.add_column(c, justify="left" if c == "variant" else "right")
    for name, s in per_variant.items():
        v.add_row(name, str(s["points"]), pct(s["median"], signed=False), pct(s["p90"], signed=False),
                  pct(s["bias"]))
    console.print(v)
    if cross:
        c = Table(box=box.SIMPLE_HEAD, header_style="bold", title="where each variant becomes faster (T)")
        for col in ("variant", "vs", "d", "measured", "predicted", "ratio"):
            c.add_column(col, justify="left" if col in ("variant", "vs") else "right")
        for r in cross:
            c.add_row(r["variant"], r["baseline"], count(r["d"]), _T(r["measured_T"]), _T(r["predicted_T"]),
                      "–" if r["ratio"] is None else f"{r['ratio']:.2f}x")
        console.print(c)
    if total["median"] is None:
        console.print("[red]no measured point with a prediction: nothing to judge[/]")
        return
    ok = total["median"] <= TARGET_MEDIAN
    console.print(f"{'[green]' if ok else '[red]'}median |error| {pct(total['median'], signed=False)} over "
                  f"{total['points']} points (target {pct(TARGET_MEDIAN, signed=False)}), p90 "
                  f"{pct(total['p90'], signed=False)} (target {pct(TARGET_P90, signed=False)})[/]")


def _T(x) -> str:
    return "never in the sweep" if x is None else count(x)
