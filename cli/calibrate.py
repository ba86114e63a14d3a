"""`attncost calibrate`: microbenchmark this machine's device and fit a hardware profile to it."""

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..reports.fmt import pct, sig
from .app import app
from .errors import fail
from .options import DEVICE_CHOICES, check_choice, check_output

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@app.command()
def calibrate(
    device: str = typer.Option("auto", help="auto (a CUDA GPU, else Apple MPS, else the CPU), cuda, mps or cpu."),
    out: Optional[str] = typer.Option(None, help="Profile file to write (default calibrated-DEVICE.json); the raw "
                                                 "rows go beside it as NAME.microbench.json."),
    quick: bool = typer.Option(False, "--quick", help="A smaller grid: under a minute on a 2-core CPU."),
) -> None:
    """Measure matmuls, element ops, per-op overhead and SDPA here; write a profile for --hardware."""
    check_choice(device, DEVICE_CHOICES, "--device")
    from ..profiler.device import DeviceError, device_name, resolve_device, slug

    try:
        dev = resolve_device(device)
    except DeviceError as err:
        raise fail(str(err))
    name = device_name(dev)
    path = check_output(out or f"calibrated-{slug(name)}.json", "--out", "profile.json")
    if path.suffix.lower() != ".json":
        raise fail(f"--out must name a .json file (that is what --hardware reads), not {str(path)!r}")
    import torch

    err_console.print(f"Calibrating {name} ({dev}{', ' + str(torch.get_num_threads()) + ' threads' if dev == 'cpu' else ''})"
                      f"{' (quick grid)' if quick else ''}: random normal inputs, median of repeated calls.")

    from ..profiler.device import busy_warning

    busy = busy_warning(dev)
    if busy:
        err_console.print(f"[yellow]note[/]: {busy}.")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..profiler.calibrate import calibrate as run_calibration
    from ..profiler.calibrate import summary

    try:
        with Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, transient=False) as progress:
            task = progress.add_task("starting", total=None)

            def on_row(what, done, total):
                progress.update(task, description=what[:34], completed=done, total=total)

            result = run_calibration(dev, path, quick=quick, progress=on_row)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: nothing was written.")
        raise typer.Exit(130)
    except OSError as err:
        raise fail(f"--out {path}: cannot write there ({err.strerror or err})")

    hw = result["hardware"]
    heads = Table(header_style="bold", pad_edge=False, title="measured")
    heads.add_column("what")
    heads.add_column("value", justify="right")
    for k, v in summary(result["rows"]).items():
        heads.add_row(k, sig(v, 4))
    console.print(heads)
    fit = Table(header_style="bold", pad_edge=False, title="fit: |predicted - measured| / measured")
    for c in ("rows", "n", "median", "p90"):
        fit.add_column(c, justify="left" if c == "rows" else "right")
    for k, s in result["errors"].items():
        if s["n"]:
            fit.add_row(k, str(s["n"]), pct(s["median"], signed=False), pct(s["p90"], signed=False))
    console.print(fit)
    console.print(f"Fitted on the built-in '{result['base']}' profile in {result['seconds']:.0f} s: "
                  f"matmul overhead {hw.host_matmul_s * 1e6:.1f} us, eager op {hw.launch_overhead_s * 1e6:.1f} us, "
                  f"attention backend {hw.attention_backend}.")
    console.print(f"Wrote the profile to {result['path']} and the rows to {result['rows_path']}.")
    console.print(f"Use it: attncost predict --hardware {result['path']} ...  or  attncost profile --hardware "
                  f"{result['path']} ...")
