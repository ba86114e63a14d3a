"""`attncost calibrate`: microbenchmark this machine's device and fit a hardware profile to it."""

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..reports.fmt import error, nbytes, pct, sig
from .app import app
from .errors import fail
from .layout import PlainHelp
from .options import DEVICE_CHOICES, PROFILE_FILE, ROWS_FILE, check_choice, check_output

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@app.command(cls=PlainHelp)
def calibrate(
    device: str = typer.Option("auto", help="auto (a CUDA GPU, else Apple MPS, else the CPU), cuda, mps or cpu."),
    out: Optional[str] = typer.Option(None, help="Profile file to write (default calibrated-DEVICE.json); the raw "
                                                 "rows go beside it as NAME.microbench.json."),
    quick: bool = typer.Option(False, "--quick", help="A smaller grid: seconds on a CPU, a minute on a GPU."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --out file that is not a hardware "
                                   "profile, or a NAME.microbench.json beside it that holds no rows."),
    nproc: int = typer.Option(1, "--nproc", help="Also measure p2p, all-reduce and all-to-all between N processes "
                              "(torch.distributed: gloo on the CPU, NCCL on CUDA) into the profile's interconnect."),
) -> None:
    """Measure matmuls, element ops, per-op overhead and SDPA here; write a profile for --hardware."""
    check_choice(device, DEVICE_CHOICES, "--device")
    if nproc < 1:
        raise fail(f"--nproc counts processes: at least 1, not {nproc}")
    path = None if out is None else _output(out, overwrite)  # before the device starts
    from ..profiler.device import DeviceError, device_name, resolve_device, slug

    try:
        dev = resolve_device(device)
    except DeviceError as err:
        raise fail(str(err))
    name = device_name(dev)
    if path is None:
        path = _output(f"calibrated-{slug(name)}.json", overwrite)
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
    if nproc > 1:
        from ..profiler.distributed import DistributedError, links_into_profile

        try:
            hw = links_into_profile(result["path"], nproc, dev)
        except DistributedError as err:
            raise fail(f"--nproc {nproc}: {err}")
        links = ", ".join(f"{k} {v.bandwidth_Bps / 1e9:.3g} GB/s + {v.latency_s * 1e6:.3g} us"
                          for k, v in hw.interconnect.collectives.items())
        console.print(f"Links between {nproc} processes ({hw.interconnect.name}), each collective right after "
                      f"compute: {links}; {pct(hw.interconnect.overlap, signed=False)} of a transfer hidden behind "
                      f"compute; compute {sig(hw.interconnect.contention, 3)}x as long with all {nproc} busy.")
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
    console.print(_laws(hw))
    console.print(f"Fitted on the built-in '{result['base']}' profile in {result['seconds']:.0f} s: host time per "
                  f"eager op {_host_times(hw)}{_gemv(hw)}{_slow_matmuls(hw)}{_cold(hw)}; attention backend "
                  f"{hw.attention_backend}{_attention(hw)}{_speedup(hw)}.")
    pace = _pace(result["rows"])
    if pace:
        console.print(pace)
    console.print(f"Wrote the profile to {result['path']} and the rows to {result['rows_path']}.", soft_wrap=True)
    console.print(f"Use it: attncost predict --hardware {result['path']} ...  or  attncost profile --hardware "
                  f"{result['path']} ...", soft_wrap=True)


def _pace(rows: list) -> str:
    """The reference workload's first and last times (``profiler.pace``), and a warning where the
    machine's pace changed between them by more than ``PACE_TOLERANCE``."""
    from ..costmodel.accuracy import PACE_TOLERANCE
    from ..costmodel.fit import PACE_ROW

    first, last = (next((r["ms"] for r in rows if r.get("op") == PACE_ROW and r.get("when") == w), None)
                   for w in ("first", "last"))
    if first is None or last is None:
        return ""
    change = last / first - 1.0
    text = (f"The machine's pace: the reference workload took {sig(first, 3)} ms first and {sig(last, 3)} ms last "
            f"({error(change)}).")
    if abs(change) > PACE_TOLERANCE:
        text += (" [yellow]The machine's pace changed during the calibration[/]: its fits mix two paces; "
                 "calibrate again on a quiet machine.")
    return text


def _cold(hw) -> str:
    """Where a layer's own traffic evicts its weights, caches and inputs between calls, and what each
    kernel then pays, in words ("" where the fit found no eviction)."""
    if not hw.cold_from_bytes:
        return ""
    return (f"; a layer moving {nbytes(hw.cold_from_bytes)} to {nbytes(hw.cold_full_bytes or hw.cold_from_bytes)} "
            f"per call finds its weights, caches and inputs evicted, in part to wholly: each kernel then pays up "
            f"to {sig(hw.cold_latency_s * 1e6, 3)} us + {sig(hw.cold_s_per_byte * 1e12, 3)} ps per byte of them"
            + _per_access(hw.cold_access_s_per_byte))


def _per_access(rates: dict) -> str:
    """``Hardware.cold_access_s_per_byte`` in words ("" where it has none)."""
    words = {"matmul": "in a matmul of several rows", "index": "in a gather by index"}
    return f" ({', '.join(f'{sig(s * 1e12, 3)} ps {words[a]}' for a, s in rates.items())})" if rates else ""


def _gemv(hw) -> str:
    """The matrix-vector products' pace per dtype where the fit gave them a law of their own, in words."""
    paces = [f"{sig(hw.mem_bandwidth * e.gemv_mem_eff / 1e9, 3)} GB/s in {dt}" for dt, e in hw.matmul.items()
             if e.gemv_mem_eff]
    return f"; matrix-vector products (m = 1) stream their matrix at {', '.join(paces)}" if paces else ""


def _attention(hw) -> str:
    """The default backend's fitted head dims, pace beyond the caches and backward (``AttentionEfficiency``),
    in words."""
    e = hw.attention.get(hw.attention_backend)
    if e is None:
        return ""
    parts = []
    if e.dh_cap:
        parts.append(f"fitted up to head dim {sig(e.dh_cap, 3)}")
    if e.dram_eff:
        parts.append(f"beyond the caches at {sig(hw.mem_bandwidth * e.dram_eff / 1e9, 3)} GB/s")
    if e.backward != 1.0:
        parts.append(f"its backward {sig(e.backward, 3)}x the forward's law for 2.5x the FLOPs")
    return f" ({'; '.join(parts)})" if parts else ""


def _speedup(hw) -> str:
    """The fused attention's speedup on the machine's threads (``Hardware.attention_speedup``), in words."""
    if not (hw.threads and hw.attention_speedup):
        return ""
    return (f", its {hw.threads} threads {sig(hw.attention_speedup, 3)}x as fast as one (a call of fewer "
            f"(batch, head, query block) items leaves threads idle)")


def _slow_matmuls(hw) -> str:
    """Where the fit found matmuls slowing beyond the caches (``MatmulEfficiency.cache_bytes``), in words."""
    slow = [f"{sig(hw.mem_bandwidth * e.dram_eff / 1e9, 3)} GB/s beyond {nbytes(e.cache_bytes)} in {dt}"
            for dt, e in hw.matmul.items() if e.cache_bytes and e.dram_eff]
    return f"; matmuls of several rows move their bytes at most at {', '.join(slow)}" if slow else ""


def _laws(hw) -> Table:
    """The fitted law of each element-op kind: latency + bytes / bandwidth + rows x time per row."""
    t = Table(header_style="bold", pad_edge=False, title="element ops: latency + bytes / bandwidth + rows x per row")
    for c in ("law", "latency", "bandwidth", "per row"):
        t.add_column(c, justify="left" if c == "law" else "right", no_wrap=c == "per row")
    t.add_row("default (copy)", f"{hw.kernel_latency_s * 1e6:.2f} us",
              f"{hw.mem_bandwidth * hw.mem_efficiency / 1e9:.1f} GB/s", "")
    for k in sorted({*hw.vector_eff, *hw.vector_latency, *hw.vector_row_s}):
        row = hw.op_row_s(k)
        per_row = f"{row * 1e9:.2f} ns" if row else ""
        if k == "topk" and hw.topk_select_s:
            per_row += f" + k log2(k+1) x {hw.topk_select_s * 1e9:.2f} ns"
        if k == "topk" and hw.topk_paths is not None:  # priced by its path instead (timing.topk_path_s)
            continue
        t.add_row(k, f"{hw.op_latency(k) * 1e6:.2f} us", f"{hw.mem_bandwidth * hw.op_eff(k) / 1e9:.1f} GB/s", per_row)
    p = hw.topk_paths
    if p is not None:
        t.add_row(f"topk: k x {p.partial_from:g} <= n", f"{p.latency_s * 1e6:.2f} us", "as copy",
                  f"{p.scan_s * 1e9:.2f} ns n + {p.heap_s * 1e9:.2f} ns k lg(n/k) lg(k+1)")
        t.add_row("topk: else", "", "as copy", f"{p.select_s * 1e9:.2f} ns n + {p.sort_s * 1e9:.2f} ns k lg(k+1)")
    if hw.cache_bytes and hw.dram_eff:
        dram = hw.mem_bandwidth * hw.dram_eff
        t.add_row(f"beyond {nbytes(hw.cache_bytes)} moved", "", f"at most {dram / 1e9:.1f} GB/s", "")
    if hw.fresh_bytes:
        t.add_row(f"fresh outputs ≥ {nbytes(hw.fresh_bytes)}", f"+ {hw.fresh_s_per_byte * 1e12:.0f} us/MB", "", "")
    return t


def _host_times(hw) -> str:
    """The host time per eager op of each class, in words."""
    parts = [("element-wise", hw.launch_overhead_s), ("matmul", hw.host_matmul_s), ("SDPA", hw.host_sdpa_s),
             ("index", hw.host_index_s), ("view", hw.view_overhead_s), ("module call", hw.module_overhead_s),
             ("autograd node", hw.autograd_node_s), ("backward call", hw.backward_call_s)]
    text = ", ".join(f"{name} {sig(s * 1e6, 3)} us" for name, s in parts if s is not None)
    if hw.sequence_overhead_s:
        text += f", plus {sig(hw.sequence_overhead_s * 1e6, 3)} us an op in a layer's mixed sequence"
    return text + (" (the host runs each op to its end)" if hw.host_sync else "")


def _output(out: str, overwrite: bool):
    """--out checked, and the rows file beside it: each may replace a file of its own kind only
    (without --overwrite)."""
    from ..profiler.calibrate import sidecar_path

    path = check_output(out, "--out", "profile.json", kind=PROFILE_FILE, overwrite=overwrite)
    if path.suffix.lower() != ".json":
        raise fail(f"--out must name a .json file (that is what --hardware reads), not {str(path)!r}")
    check_output(sidecar_path(path), f"--out {path.name}: the rows file", "profile.microbench.json", kind=ROWS_FILE,
                 overwrite=overwrite)
    return path
