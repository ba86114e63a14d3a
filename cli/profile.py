"""`attncost profile`: measure variants on this machine's device, beside the model's prediction."""

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import fail
from .main import app
from .options import make_shape, parse_ints, parse_params, parse_T, parse_variants

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

PHASES = ("prefill", "decode", "train")
DTYPES = ("bf16", "fp16", "fp32")
BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")
GPU_DEFAULTS = dict(d=1024, heads=16, T="512:32768", budget=1.0)
CPU_DEFAULTS = dict(d=256, heads=4, T="128:1024", budget=0.2)


@app.command()
def profile(
    device: str = typer.Option("auto", help="auto (a CUDA GPU, else Apple MPS, else the CPU), cuda, mps or cpu."),
    dtype: Optional[str] = typer.Option(None, help="bf16, fp16 or fp32 (default: bf16 on a GPU, fp32 on the CPU)."),
    phase: str = typer.Option("prefill", help="prefill, decode (one token against a cache of T) or train (forward + backward)."),
    variants: str = typer.Option("all", help="'all' or a comma-separated list (see `attncost variants`)."),
    d: Optional[str] = typer.Option(None, "--d", help="Model width or a list 1024,2048 (default 1024 on a GPU, 256 on the CPU)."),
    T: Optional[str] = typer.Option(None, "--T", help="Tokens: 4096, a list 512,1024 or powers of two 512:32768 "
                                                       "(default 512:32768 on a GPU, 128:1024 on the CPU)."),
    heads: Optional[int] = typer.Option(None, help="Attention heads, must divide d (default 16 on a GPU, 4 on the CPU)."),
    batch: int = typer.Option(1, help="Sequences per batch."),
    backend: str = typer.Option("auto", help="SDPA backend to force: auto (torch's choice), flash, cudnn, efficient or math."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="A variant parameter, e.g. linformer.k=128 (repeatable)."),
    hardware: Optional[str] = typer.Option(None, help="Profile for the predictions: a built-in name or a JSON file "
                                                      "(default: the built-in profile matching this device)."),
    out: Optional[str] = typer.Option(None, help="Results file (default runs/DEVICE-PHASE-DTYPE.json)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the results file, skipping the points it holds."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results file."),
    no_count: bool = typer.Option(False, "--no-count", help="Skip the FLOP counters (fvcore, FlopCounterMode): faster on big sweeps."),
    budget: Optional[float] = typer.Option(None, help="Seconds of timing per point (default 1 on a GPU, 0.2 on the CPU)."),
    model: Optional[str] = typer.Option(None, "--model", help="Run a whole model instead of one layer: a preset "
                                        "(gpt2, llama-3-8b, ...) or a model JSON file, random weights; measures time "
                                        "to first token and decode tokens/s (default variant: the model's own)."),
    new_tokens: int = typer.Option(8, "--new-tokens", help="With --model: decode steps per timed call (the "
                                   "per-token time is the call's time / N, each step against a cache of T)."),
    logits: str = typer.Option("all", "--logits", help="With --model: the prefill's LM head over 'all' T tokens "
                               "or the 'last' one, as `attncost predict --model`."),
) -> None:
    """Measure time and peak memory of attention variants on this machine, beside the prediction."""
    if model is not None:
        return _profile_model(model, device=device, dtype=dtype, variants=variants, d=d, heads=heads, T=T,
                              batch=batch, backend=backend, param=param, hardware=hardware, out=out, resume=resume,
                              overwrite=overwrite, budget=budget, new_tokens=new_tokens, logits=logits)
    if new_tokens != 8 or logits != "all":
        raise fail("--new-tokens and --logits apply only with --model")
    # -- flags that need no torch ----------------------------------------------------------
    if phase not in PHASES:
        raise fail(f"--phase must be one of {', '.join(PHASES)}, not {phase!r}")
    _check_run_flags(dtype, backend, device, budget)
    for flag, value in (("--heads", heads), ("--batch", batch)):
        if value is not None and value < 1:
            raise fail(f"{flag} must be a positive integer, not {value}")
    if resume and overwrite:
        raise fail("--resume and --overwrite contradict each other: pass one of them")
    names = parse_variants(variants)
    params = parse_params(param)
    _check_param_values(params)

    # -- the device --------------------------------------------------------------------------
    from ..profiler.device import device_name, slug

    dev = _resolve(device, backend)
    defaults = GPU_DEFAULTS if dev != "cpu" else CPU_DEFAULTS
    dt = dtype or ("fp32" if dev == "cpu" else "bf16")
    ds, heads_ = parse_ints(d, "--d") if d else [defaults["d"]], heads or defaults["heads"]
    d_ = ds[0]
    Ts = parse_T(T or defaults["T"])
    shapes = [make_shape(T=t, d=w, heads=heads_, batch=batch, dtype=dt, phase=phase) for w in ds for t in Ts]
    name = device_name(dev)
    _say_device(dev, device, name, dt, dtype, d, heads, T, d_, heads_, Ts)

    hw, hw_label = _hardware(hardware, dev, name)
    path = Path(out) if out else Path("runs") / f"{slug(name)}-{phase}-{dt}.json"
    if path.exists() and path.is_dir():
        raise fail(f"--out {path} is a folder: give a file name such as {path / 'run.json'}")
    if path.exists() and not resume and not overwrite:
        raise fail(f"--out {path} already exists: pass --resume to complete it, --overwrite to start again, "
                   f"or another --out")

    from ..profiler.device import environment
    from ..profiler.sweep import SweepError, make_grid, run_sweep

    grid = make_grid(names, shapes, params)
    env = environment(dev, dt, hardware_profile=hw_label)
    budget_s = budget or defaults["budget"]
    run = None
    try:
        with _progress() as progress:
            task = progress.add_task("starting", total=len(grid))

            def on_begin(variant, prm, shape, index, total):
                progress.update(task, description=f"{variant} T={shape.T:,}")

            def on_point(point, index, total, skipped):
                progress.advance(task)

            run = run_sweep(path, grid, dev, dt, backend, resume, on_point, count=not no_count, hardware=hw,
                            env=env, command=_command({
                                "--device": device, "--dtype": dtype, "--phase": phase, "--variants": variants,
                                "--d": d, "--T": T, "--heads": heads, "--batch": batch, "--backend": backend,
                                "--param": param, "--hardware": hardware, "--out": out, "--resume": resume,
                                "--overwrite": overwrite, "--no-count": no_count, "--budget": budget}),
                            name=path.stem, on_begin=on_begin,
                            measure_kwargs=dict(budget_s=budget_s))
    except SweepError as err:
        raise fail(str(err))
    except KeyboardInterrupt:
        done = _count_points(path)
        err_console.print(f"[yellow]interrupted[/]: {path} holds {done} of {len(grid)} points; run the same "
                          f"command with --resume to finish it.")
        raise typer.Exit(130)
    except OSError as err:
        raise fail(f"--out {path}: cannot write there ({err.strerror or err})")
    _print_summary(run, grid, path)


# -- helpers -------------------------------------------------------------------------------
def _check_param_values(params: dict) -> None:
    """Values out of every range fail now; values that do not fit one shape (linformer.k > T) make
    that point n/a instead."""
    from pydantic import ValidationError

    from ..costmodel.variants import REGISTRY

    for variant, p in params.items():
        try:
            REGISTRY[variant].params(**p)
        except ValidationError as err:
            e = err.errors()[0]
            key = e["loc"][0] if e["loc"] else "?"
            raise fail(f"--param {variant}.{key}={p.get(key)!r}: {e['msg'].removeprefix('Value error, ')}")


def _check_run_flags(dtype, backend: str, device: str, budget) -> None:
    """The flags the layer sweep and the model run share, checked before torch is imported."""
    if dtype is not None and dtype not in DTYPES:
        raise fail(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if backend not in BACKENDS:
        raise fail(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if device not in ("auto", "cuda", "mps", "cpu"):
        raise fail(f"--device must be one of auto, cuda, mps or cpu, not {device!r}")
    if budget is not None and not budget > 0:
        raise fail(f"--budget must be a positive number of seconds, not {budget}")


def _resolve(device: str, backend: str) -> str:
    """The torch device to run on ("auto": CUDA, else MPS, else CPU), checked against --backend."""
    from ..profiler.device import DeviceError, check_backend, resolve_device

    try:
        dev = resolve_device(device)
        check_backend(backend, dev)
    except DeviceError as err:
        raise fail(str(err))
    return dev


def _say_device(dev, requested, name, dt, dtype_flag, d_flag, heads_flag, T_flag, d_, heads_, Ts) -> None:
    import torch

    if dev == "cpu":
        lead = "No GPU found: running on the CPU" if requested == "auto" else "Running on the CPU"
        err_console.print(f"{lead} ({name}, {torch.get_num_threads()} threads).")
        if dtype_flag is None:
            err_console.print("dtype fp32 (the CPU default: bf16 and fp16 matmuls are slow on most CPUs, "
                              "fast only with AVX512-BF16 or AMX).")
        elif dt != "fp32":
            err_console.print(f"[yellow]note[/]: {dt} on the CPU: matmuls are slow without AVX512-BF16 or AMX "
                              f"(fp16 especially), so times may say more about the conversion than the variant.")
        if d_flag is None or heads_flag is None or T_flag is None:
            err_console.print(f"Small CPU grid (about a minute on 2 cores): d={d_}, heads={heads_}, "
                              f"T {Ts[0]:,}..{Ts[-1]:,}.")
    else:
        err_console.print(f"Running on {name} ({dev}), {dt}.")
    from ..profiler.device import busy_warning

    busy = busy_warning(dev)
    if busy:
        err_console.print(f"[yellow]note[/]: {busy}.")


def _hardware(hardware: Optional[str], dev: str, name: str):
    from ..costmodel.hardware import HardwareError, get_hardware
    from ..profiler.device import default_hardware

    if hardware:
        try:
            hw = get_hardware(hardware)
        except HardwareError as err:
            raise fail(f"--hardware: {err}")
        return hw, hardware
    matched = default_hardware(dev, name)
    if matched is None:
        err_console.print(f"[yellow]note[/]: no built-in hardware profile matches {name}: predicted times are left "
                          f"out. Run `attncost calibrate` and pass --hardware FILE.json.")
        return None, None
    if dev == "cpu":
        err_console.print("Predictions use the generic 'cpu' profile; `attncost calibrate --device cpu` fits one to "
                          "this machine (then pass --hardware FILE.json).")
    return get_hardware(matched), matched


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=False)


def _command(flags: dict) -> str:
    """The exact command line as typed (``attncost profile ...``); when called from Python (tests,
    where sys.argv is the caller's), the flags that were set, rebuilt."""
    argv = list(sys.argv)
    if argv[1:2] == ["profile"] or Path(argv[0]).name.startswith("attncost"):
        return shlex.join(["attncost"] + argv[1:])
    words = ["attncost", "profile"]
    for flag, value in flags.items():
        if value is None or value is False:
            continue
        for v in (value if isinstance(value, list) else [value]):
            words += [flag] if v is True else [flag, str(v)]
    return shlex.join(words)


def _count_points(path: Path) -> int:
    from ..costmodel.results import Run

    try:
        return len(Run.load(path).points)
    except Exception:
        return 0


def _print_summary(run, grid, path: Path) -> None:
    if run is None:
        return
    keys = {}
    from ..profiler.sweep import point_params
    from ..costmodel.results import Point

    for v, p, s in grid:  # this command's points, in grid order (a resumed file may hold more)
        keys[Point(variant=v, params=point_params(v, s, p), shape=s).key] = None
    by_key = {p.key: p for p in run.points}
    points = [by_key[k] for k in keys if k in by_key]
    from rich import box

    table = Table(header_style="bold", pad_edge=False, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    for c, j in (("variant", "left"), ("T", "right"), ("meas. ms", "right"), ("pred. ms", "right"),
                 ("error", "right"), ("peak MiB", "right"), ("sdpa", "left"), ("status", "left")):
        table.add_column(c, justify=j, no_wrap=True)
    errors = []
    messages: dict = {}
    for p in points:
        meas = p.timing.median_s if p.timing else None
        pred = p.predicted_time_s
        err = (pred - meas) / meas if (meas and pred is not None) else None
        if err is not None and p.status == "ok":
            errors.append(abs(err))
        status = p.status if p.status == "ok" else f"[red]{p.status}[/]" if p.status in ("error", "oom") else f"[dim]{p.status}[/]"
        if p.message:
            messages.setdefault(p.message, []).append(f"{p.variant} T={p.shape.T:,}")
        table.add_row(p.variant, f"{p.shape.T:,}", _ms(meas), _ms(pred),
                      "–" if err is None else f"{err:+.0%}",
                      "–" if p.peak_memory_bytes is None else f"{p.peak_memory_bytes / 2**20:,.1f}",
                      p.backend or "–", status)
    console.print(table)
    for msg, where in messages.items():
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        console.print(f"[dim]- {', '.join(where[:3])}{more}: {msg}[/]")
    n_ok = sum(p.status == "ok" for p in points)
    line = f"Wrote {path} ({len(points)} points: {n_ok} ok"
    for s in ("oom", "error", "n/a"):
        k = sum(p.status == s for p in points)
        if k:
            line += f", {k} {s}"
    line += ")."
    console.print(line)
    unstable = sum(1 for p in points if p.timing is not None and p.timing.stable is False)
    if unstable:
        console.print(f"[dim]{unstable} of {len(points)} points did not reach a stable median (95% interval within "
                      f"2%) in the time budget: raise --budget for tighter numbers.[/]")
    if errors:
        errors.sort()
        console.print(f"Predicted vs measured time: median |error| {errors[len(errors) // 2]:.0%} over {len(errors)} "
                      f"points (error = predicted / measured - 1; meas. = median of repeated calls; peak MiB = "
                      f"memory above the inputs; sdpa = the backend that ran).")


def _ms(x: Optional[float]) -> str:
    """Milliseconds to 3-4 significant digits: 0.140, 4.65, 47.2, 1,811."""
    if x is None:
        return "–"
    ms = x * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


# -- `attncost profile --model`: a whole model ---------------------------------------------------
MODEL_T = {"gpu": "512,2048", "cpu": "128"}


def _profile_model(model: str, *, device, dtype, variants, d, heads, T, batch, backend, param, hardware, out,
                   resume, overwrite, budget, new_tokens, logits) -> None:
    """Time to first token and decode tokens/s of a whole model (random weights), beside predict_model."""
    from ..costmodel.models import ModelError, get_model

    try:
        cfg = get_model(model)
    except ModelError as err:
        raise fail(f"--model: {err}")
    if d is not None or heads is not None:
        raise fail(f"--d and --heads come from the model with --model ({cfg.name}: d={cfg.d}, heads={cfg.heads})")
    _check_run_flags(dtype, backend, device, budget)
    if batch < 1 or new_tokens < 1:
        raise fail(f"--batch and --new-tokens must be positive integers, not {batch} and {new_tokens}")
    if logits not in ("all", "last"):
        raise fail(f"--logits must be 'all' or 'last', not {logits!r}")
    if resume and overwrite:
        raise fail("--resume and --overwrite contradict each other: pass one of them")
    names = [cfg.attention] if variants.strip().lower() == "all" else parse_variants(variants)
    params = parse_params(param)
    _check_param_values(params)

    from ..profiler.device import device_name, environment, slug

    dev = _resolve(device, backend)
    dt = dtype or ("fp32" if dev == "cpu" else "bf16")
    Ts = parse_T(T or MODEL_T["cpu" if dev == "cpu" else "gpu"])
    name = device_name(dev)
    err_console.print(f"Running {cfg.name} ({cfg.layers} layers, d={cfg.d}, random weights) on {name} ({dev}), {dt}; "
                      f"T {', '.join(f'{t:,}' for t in Ts)}, batch {batch}, {new_tokens} decode steps per timed call.")
    hw, hw_label = _hardware(hardware, dev, name)
    path = Path(out) if out else Path("runs") / f"{slug(name)}-model-{slug(cfg.name)}-{dt}.json"
    if path.exists() and path.is_dir():
        raise fail(f"--out {path} is a folder: give a file name such as {path / 'run.json'}")
    if path.exists() and not resume and not overwrite:
        raise fail(f"--out {path} already exists: pass --resume to complete it, --overwrite to start again, "
                   f"or another --out")

    from ..profiler.model_stack import run_models
    from ..profiler.sweep import SweepError

    env = environment(dev, dt, hardware_profile=hw_label)
    total = len(Ts) * len(names)
    try:
        with _progress() as progress:
            task = progress.add_task("starting", total=total)
            run = run_models(
                path, model, names, Ts, batch, dev, dt, params=params, new_tokens=new_tokens, logits=logits,
                hardware=hw, backend=backend, resume=resume, env=env, name=path.stem,
                command=_command({"--model": model, "--device": device, "--dtype": dtype, "--variants": variants,
                                  "--T": T, "--batch": batch, "--backend": backend, "--param": param,
                                  "--hardware": hardware, "--out": out, "--resume": resume,
                                  "--overwrite": overwrite, "--budget": budget, "--new-tokens": new_tokens,
                                  "--logits": logits}),
                measure_kwargs=dict(budget_s=budget or (GPU_DEFAULTS if dev != "cpu" else CPU_DEFAULTS)["budget"]),
                on_begin=lambda v, t, i, n: progress.update(task, description=f"{cfg.name} {v} T={t:,}"),
                on_point=lambda p, i, n, skipped: progress.advance(task))
    except SweepError as err:
        raise fail(str(err))
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted[/]: {path} holds {_count_points(path)} points; run the same "
                          f"command with --resume to finish it.")
        raise typer.Exit(130)
    except OSError as err:
        raise fail(f"--out {path}: cannot write there ({err.strerror or err})")
    _print_model_summary(run, path)


def _print_model_summary(run, path: Path) -> None:
    from rich import box

    table = Table(header_style="bold", pad_edge=False, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    for c, j in (("model", "left"), ("variant", "left"), ("T", "right"), ("TTFT ms", "right"), ("pred", "right"),
                 ("err", "right"), ("ms/tok", "right"), ("pred", "right"), ("err", "right"),
                 ("tok/s", "right"), ("status", "left")):
        table.add_column(c, justify=j, no_wrap=True)

    def err(pred, meas):
        return "–" if not meas or pred is None else f"{pred / meas - 1:+.0%}"

    points = [p for p in run.points if p.model is not None]
    for p in points:
        status = p.status if p.status == "ok" else f"[red]{p.status}[/]" if p.status in ("error", "oom") else f"[dim]{p.status}[/]"
        table.add_row(p.model, p.variant, f"{p.shape.T:,}", _ms(p.ttft_s), _ms(p.predicted_ttft_s),
                      err(p.predicted_ttft_s, p.ttft_s), _ms(p.decode_s_per_token),
                      _ms(p.predicted_decode_s_per_token), err(p.predicted_decode_s_per_token, p.decode_s_per_token),
                      "–" if p.decode_tokens_per_s is None else f"{p.decode_tokens_per_s:,.1f}", status)
    console.print(table)
    for p in points:
        if p.message:
            console.print(f"[dim]- {p.model} {p.variant} T={p.shape.T:,}: {p.message}[/]")
    n_ok = sum(p.status == "ok" for p in points)
    console.print(f"Wrote {path} ({len(points)} points: {n_ok} ok). TTFT = prefill of T tokens (median); ms/tok = "
                  f"one decode step (a token per sequence) against a cache of T; tok/s = batch / ms/tok measured; "
                  f"pred = `attncost predict --model` for {run.environment.hardware_profile or 'no profile'}; "
                  f"err = pred / measured - 1.")
