"""`attncost profile`: measure variants on this machine's device, beside the model's prediction.

One skeleton (``_profile``: flags, device, dtype, hardware profile, results file, progress bar,
Ctrl-C) runs two kinds of run, which differ only in ``check`` (their own flags), ``variants``,
``plan`` (the points, said on stderr), ``run`` and ``summary``: a layer sweep (``LayerRun``,
every variant at every shape, ``profiler.sweep``) and a whole model (``ModelRun``, ``--model``:
time to first token and decode tokens/s, ``profiler.model_stack``).
"""

import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..costmodel.timing import MODES
from ..costmodel.units import DTYPES, PHASES
from ..costmodel.units import MIB
from ..reports.fmt import ROUGH, UNSTABLE_MARK, error, measured_ms, pct, predicted_ms, sig
from .app import app
from .errors import fail
from .layout import Column, PlainHelp, fit_console, print_table
from .options import (BACKEND_CHOICES, CSV_HELP, DEVICE_CHOICES, RESULTS_FILE, WIDE_HELP, check_choice, check_csv,
                      check_output, check_param_values, command_line, load_hardware, load_model, make_shape, parse_ints,
                      parse_params, parse_T, parse_variants, write_csv)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

GPU_DEFAULTS = dict(d=1024, heads=16, T="512:32768", budget=1.0)
# Apple GPUs share the host's memory: T 32768 (16 GiB of math-path scores) would swap
MPS_DEFAULTS = dict(GPU_DEFAULTS, T="512:8192")
CPU_DEFAULTS = dict(d=256, heads=4, T="128:1024", budget=0.2)
MAX_BUDGET_S = 3600.0  # --budget: seconds of timing per point
MODEL_T = {"gpu": "512,2048", "cpu": "128"}


def defaults(device: str) -> dict:
    """The layer sweep's default d, heads, T and budget on ``device``."""
    return {"cuda": GPU_DEFAULTS, "mps": MPS_DEFAULTS}.get(device, CPU_DEFAULTS)


def default_count(device: str) -> bool:
    """FLOP counting by default on the CPU and MPS; on CUDA it would re-run every forward twice
    (fvcore's trace, FlopCounterMode) and FlopCounterMode asserts on grouped-query SDPA in some torch
    versions."""
    return device != "cuda"


@app.command(cls=PlainHelp)
def profile(
    device: str = typer.Option("auto", help="auto (a CUDA GPU, else Apple MPS, else the CPU), cuda, mps or cpu."),
    dtype: Optional[str] = typer.Option(None, help="bf16, fp16 or fp32 (default: bf16 on a GPU, fp16 on MPS "
                                                   "without bf16 (before macOS 14), fp32 on the CPU)."),
    phase: str = typer.Option("prefill", help="prefill, decode (one token against a cache of T) or train (forward + backward)."),
    variants: str = typer.Option("all", help="'all' or a comma-separated list (see `attncost variants`)."),
    d: Optional[str] = typer.Option(None, "--d", help="Model width or a list 1024,2048 (default 1024 on a GPU, 256 on the CPU)."),
    T: Optional[str] = typer.Option(None, "--T", help="Tokens: 4096, a list 512,1024 or a range 512:32768 (doubling) "
                                                       "(default 512:32768 on CUDA, 512:8192 on MPS, 128:1024 on "
                                                       "the CPU)."),
    heads: Optional[int] = typer.Option(None, help="Attention heads, must divide d (default 16 on a GPU, 4 on the CPU)."),
    batch: int = typer.Option(1, help="Sequences per batch."),
    backend: str = typer.Option("auto", help="SDPA backend to force: auto (torch's choice), flash, cudnn, efficient "
                                             "or math (cudnn and efficient: CUDA only; MPS: auto or math)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="A variant parameter, e.g. linformer.k=128 (repeatable)."),
    hardware: Optional[str] = typer.Option(None, help="Profile for the predictions: a built-in name or a JSON file "
                                                      "(default: the built-in profile matching this device)."),
    out: Optional[str] = typer.Option(None, help="Results file (default: in runs/, named by device, phase "
                                      "and dtype; --exec graph adds -graph)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the results file, skipping the points it holds."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file, even one that is not "
                                                              "a results file."),
    count: Optional[bool] = typer.Option(None, "--count/--no-count", help="Run the FLOP counters (fvcore, "
                                         "FlopCounterMode) on every point. Default: on the CPU and MPS, not on "
                                         "CUDA, where they re-run each forward twice."),
    budget: Optional[float] = typer.Option(None, help="Seconds of timing per point (default 1 on a GPU, 0.2 on the CPU)."),
    exec_mode: str = typer.Option("eager", "--exec", help="eager (the host issues each op, as PyTorch eager) or "
                                  "graph (the layer captured once in a CUDA graph and replayed: no host cost per "
                                  "op; CUDA only)."),
    ops: bool = typer.Option(False, "--ops", help="Also record where each point's time goes, by op kind "
                             "(torch.profiler: host time per aten op, and kernel time on CUDA) and, on a CPU, the "
                             "memory each call faults in; see `attncost crosscheck --time RUN.json --by-op`."),
    model: Optional[str] = typer.Option(None, "--model", help="Run a whole model instead of one layer: a preset "
                                        "(gpt2, llama-3-8b, ...), a Hugging Face config.json or a folder holding "
                                        "one, or a model JSON file, random weights; measures time to first token "
                                        "and decode tokens/s (default variant: the model's own)."),
    new_tokens: int = typer.Option(8, "--new-tokens", help="With --model: decode steps per timed call (the "
                                   "per-token time is the call's time / N, each step against a cache of T)."),
    logits: str = typer.Option("all", "--logits", help="With --model: the prefill's LM head over 'all' T tokens "
                               "or the 'last' one, as `attncost predict --model`."),
    weights_dtype: Optional[str] = typer.Option(None, "--weights-dtype", help="With --model: fp8 runs the blocks' "
                                                "linear layers as fp8 matmuls (torch._scaled_mm; CUDA, compute "
                                                "capability 8.9+) (default: --dtype)."),
    kv_dtype: Optional[str] = typer.Option(None, "--kv-dtype", help="With --model: fp8 stores the KV cache in fp8 "
                                           "(CUDA, compute capability 8.9+) (default: --dtype)."),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
    csv: Optional[str] = typer.Option(None, "--csv", help=CSV_HELP),
    cp: int = typer.Option(1, "--cp", help="Split the sequence over N processes (torch.distributed: gloo on the "
                           "CPU, NCCL on CUDA), spawned here unless launched by torchrun; prefill or train."),
    cp_kind: str = typer.Option("ring", "--cp-kind", help="With --cp: ring or ulysses."),
    tp: int = typer.Option(1, "--tp", help="Split the heads over N processes (tensor parallel: column-parallel "
                           "Q/K/V, row-parallel output, an all-reduce), as --cp."),
    sequence_parallel: bool = typer.Option(False, "--sequence-parallel", help="With --tp: the input sharded over "
                                           "the sequence, all-gathered, the output reduce-scattered."),
) -> None:
    """Measure time and peak memory of attention variants on this machine, beside the prediction."""
    o = SimpleNamespace(**locals())
    if cp != 1 or tp != 1 or sequence_parallel:
        from .parallel_view import profile_parallel

        return profile_parallel(o, command_line())
    kind = ModelRun(o) if model is not None else LayerRun(o)
    flags = {"--" + k.replace("_", "-"): v for k, v in vars(o).items() if k not in kind.unused and k != "exec_mode"}
    if exec_mode != "eager":
        flags["--exec"] = exec_mode
    _profile(kind, o, _command(flags))


def _profile(kind, o: SimpleNamespace, command: str) -> None:
    """Check the flags (before torch is imported), resolve the device, dtype and profile, measure
    ``kind``'s points into the results file, and print its summary."""
    kind.check()
    if o.dtype is not None:
        check_choice(o.dtype, DTYPES, "--dtype")
    check_choice(o.backend, BACKEND_CHOICES, "--backend")
    check_choice(o.device, DEVICE_CHOICES, "--device")
    check_choice(o.exec_mode, MODES, "--exec")
    _check_graph_mode(o.exec_mode, o.device)
    if o.budget is not None and not 0 < o.budget <= MAX_BUDGET_S:  # refuses nan and inf too
        raise fail(f"--budget must be a positive number of seconds, at most {MAX_BUDGET_S:,.0f} per point, "
                   f"not {o.budget}")
    if o.resume and o.overwrite:
        raise fail("--resume and --overwrite contradict each other: pass one of them")
    names = kind.variants(o.variants)
    params = parse_params(o.param)
    check_param_values(params)
    path = None if o.out is None else _results_file(o.out, o)  # before the device starts
    csv_path = check_csv(o.csv, inputs=[o.hardware, o.model, path])

    from ..profiler.device import device_name, environment, slug
    from ..profiler.runner import RunError

    dev = _resolve(o.device, o.backend)
    _check_graph_mode(o.exec_mode, dev)
    dt = _dtype(o.dtype, dev)
    name = device_name(dev)
    if path is None:
        path = _results_file(Path("runs") / f"{slug(name)}-{kind.file_tag}-{dt}.json", o)
    if csv_path is not None and csv_path.resolve() == path.resolve():
        raise fail(f"--csv {o.csv} is the results file this run writes: choose another --csv")
    kind.plan(dev, dt, name, names, params)
    hw, hw_label = _hardware(o.hardware, dev, name)
    budget_s = o.budget or defaults(dev)["budget"]
    # Without --overwrite, a file that appeared since the check (a run that has ended since) is
    # completed, never replaced; one that did not is started as by a run without --resume.
    resume = o.resume or not o.overwrite
    try:
        with _progress() as progress:
            task = progress.add_task("starting", total=kind.total)
            run = kind.run(path, dev, dt, backend=o.backend, resume=resume, hardware=hw,
                           env=environment(dev, dt, hardware_profile=hw_label), command=command, name=path.stem,
                           measure_kwargs=dict(budget_s=budget_s),
                           on_begin=lambda p, i, n: progress.update(task, description=_describe(p)),
                           on_point=lambda p, i, n, skipped: progress.advance(task))
    except RunError as err:
        raise fail(str(err))
    except KeyboardInterrupt:
        held = _count_points(path)
        err_console.print(f"[yellow]interrupted[/]: {path} holds {held}{kind.of_total} points; run the same "
                          f"command with --resume to finish it.")
        raise typer.Exit(130)
    except OSError as err:
        raise fail(f"--out {path}: cannot write there ({err.strerror or err})")
    points = kind.summary(run, path)
    if csv_path is not None:
        try:
            write_csv(csv_path, [p.model_dump(mode="json") for p in points])
        except OSError as err:
            raise fail(f"--csv {csv_path}: cannot write there ({err.strerror or err})")


class LayerRun:
    """A layer sweep: every variant at every (d, T) shape of one phase (``profiler.sweep``)."""

    unused = ("model", "new_tokens", "logits", "weights_dtype", "kv_dtype")  # flags of the model run

    def __init__(self, o: SimpleNamespace):
        self.o, self.grid, self.total, self.of_total = o, [], 0, ""
        self.file_tag = o.phase + ("-graph" if o.exec_mode == "graph" else "")
        self.variants = parse_variants

    def check(self) -> None:
        o = self.o
        if o.new_tokens != 8 or o.logits != "all":
            raise fail("--new-tokens and --logits apply only with --model")
        if o.weights_dtype is not None or o.kv_dtype is not None:
            raise fail("--weights-dtype and --kv-dtype apply only with --model")
        check_choice(o.phase, PHASES, "--phase")
        for flag, value in (("--heads", o.heads), ("--batch", o.batch)):
            if value is not None and value < 1:
                raise fail(f"{flag} must be a positive integer, not {value}")

    def plan(self, dev: str, dt: str, name: str, names: list, params: dict) -> None:
        """The grid of points (defaults sized for a GPU or the CPU), said on stderr."""
        from ..profiler.sweep import make_grid

        o, default = self.o, defaults(dev)
        ds, heads = parse_ints(o.d, "--d") if o.d else [default["d"]], o.heads or default["heads"]
        Ts = parse_T(o.T or default["T"])
        shapes = [make_shape(T=t, d=w, heads=heads, batch=o.batch, dtype=dt, phase=o.phase) for w in ds for t in Ts]
        self._say(dev, name, dt, ds[0], heads, Ts)
        self.grid = make_grid(names, shapes, params)
        self.total, self.of_total = len(self.grid), f" of {len(self.grid)}"

    def _say(self, dev, name, dt, d, heads, Ts) -> None:
        import torch

        from ..profiler.device import busy_warning

        o = self.o
        if dev == "cpu":
            lead = "No GPU found: running on the CPU" if o.device == "auto" else "Running on the CPU"
            err_console.print(f"{lead} ({name}, {torch.get_num_threads()} threads).")
            if o.dtype is None:
                err_console.print("dtype fp32 (the CPU default: bf16 and fp16 matmuls are slow on most CPUs, "
                                  "fast only with AVX512-BF16 or AMX).")
            elif dt != "fp32":
                err_console.print(f"[yellow]note[/]: {dt} on the CPU: matmuls are slow without AVX512-BF16 or AMX "
                                  f"(fp16 especially), so times may say more about the conversion than the variant.")
            if o.d is None or o.heads is None or o.T is None:
                err_console.print(f"Small CPU grid (about a minute on 2 cores): d={d}, heads={heads}, "
                                  f"T {Ts[0]:,}..{Ts[-1]:,}.")
        else:
            err_console.print(f"Running on {name} ({dev}), {dt}.")
            if dev == "mps" and o.T is None:
                err_console.print(f"MPS grid T {Ts[0]:,}..{Ts[-1]:,} (unified memory: longer sequences would swap; "
                                  f"pass --T for more).")
        busy = busy_warning(dev)
        if busy:
            err_console.print(f"[yellow]note[/]: {busy}.")

    def run(self, path: Path, dev: str, dt: str, **common):
        from ..profiler.sweep import run_sweep

        count = self.o.count if self.o.count is not None else default_count(dev)
        return run_sweep(path, self.grid, dev, dt, count=count, exec_mode=self.o.exec_mode, ops=self.o.ops, **common)

    def summary(self, run, path: Path) -> list:
        """Print this command's points of ``run`` (in grid order) as a table; returns them."""
        from ..profiler.sweep import grid_points

        by_key = {p.key: p for p in run.points}
        keys = dict.fromkeys(p.key for p in grid_points(self.grid, self.o.exec_mode))  # this command's, in grid order
        points = [by_key[k] for k in keys if k in by_key]  # (a resumed file may hold more)
        self.print(points, path)
        return points

    def print(self, points: list, path: Path) -> None:
        """The table of ``points`` (measured, predicted, error), their messages and the legend."""
        by_d = len({p.shape.d for p in points}) > 1
        columns = ([Column("d")] if by_d else []) + [
            Column("variant", "left"), Column("T"), Column("meas. ms"), Column("pred. ms"), Column("error"),
            Column("peak MiB"), Column("kernel", "left"), Column("status", "left")]
        rows, errors = [], []
        messages: dict = {}
        for p in points:
            meas = p.timing.median_s if p.timing else None
            pred = p.predicted_time_s
            err = (pred - meas) / meas if (meas and pred is not None) else None
            if err is not None and p.status == "ok":
                errors.append(abs(err))
            if p.message:
                messages.setdefault(p.message, []).append(f"{p.variant} {f'd={p.shape.d:,} ' if by_d else ''}"
                                                          f"T={p.shape.T:,}")
            rows.append(([f"{p.shape.d:,}"] if by_d else []) + [
                p.variant, f"{p.shape.T:,}", measured_ms(meas, p.timing.stable if p.timing else None),
                predicted_ms(pred, err), error(err), "–" if p.peak_memory_bytes is None else sig(p.peak_memory_bytes / MIB),
                p.backend or "–", _status(p)])
        fit_console(console, self.o.wide)
        print_table(console, columns, rows, wide=self.o.wide, keys=2 if by_d else 1)
        for msg, where in messages.items():
            more = f" and {len(where) - 3} more" if len(where) > 3 else ""
            console.print(f"[dim]- {', '.join(where[:3])}{more}: {msg}[/]")
        line = f"Wrote {path} ({len(points)} points: {sum(p.status == 'ok' for p in points)} ok"
        for s in ("oom", "oom-predicted", "error", "n/a"):
            k = sum(p.status == s for p in points)
            if k:
                line += f", {k} {s}"
        console.print(line + ").", soft_wrap=True)  # a path is never broken
        unstable = sum(1 for p in points if p.timing is not None and p.timing.stable is False)
        if unstable:
            console.print(f"[dim]{UNSTABLE_MARK}: {unstable} of {len(points)} points did not reach a stable median "
                          f"(95% interval within 2%; on a CPU, rounds within 2% of each other) in the time budget, "
                          f"shown to two digits: raise --budget for tighter numbers.[/]")
        if errors:
            from ..costmodel.accuracy import point_errors, within_shape, within_summary
            from ..profiler.sweep import CPU_ROUNDS

            errors.sort()
            peers = within_summary(within_shape(point_errors(SimpleNamespace(points=points))))
            within = (f", {pct(peers['median'], signed=False)} within its shape (against the median error of the "
                      f"variants timed with it)") if peers["points"] else ""
            console.print(f"Predicted vs measured time: median |error| {pct(errors[len(errors) // 2], signed=False)} "
                          f"over {len(errors)} points{within} (error = predicted / measured - 1; meas. = median of "
                          f"repeated calls, on a CPU that of the fastest of {CPU_ROUNDS} rounds interleaved with the "
                          f"other points of the shape; pred. to two digits beside an error above "
                          f"{pct(ROUGH, signed=False)}; peak MiB = memory above the inputs; kernel = the attention "
                          f"kernel that ran: an SDPA backend, or flex).")
        if self.o.exec_mode == "graph":
            console.print("Graph mode: each layer captured once in a CUDA graph and timed as its replay (no host "
                          "time per op); predicted in graph mode too.")
        if self.o.ops:
            console.print("Time by op kind recorded; this sets it beside the prediction:")
            console.print(f"  attncost crosscheck --time {escape(shlex.quote(str(path)))} --by-op", soft_wrap=True)  # never broken


class ModelRun:
    """A whole model with random weights, every variant at every T (``profiler.model_stack``)."""

    unused = ("phase", "d", "heads", "count")  # flags of the layer sweep

    def __init__(self, o: SimpleNamespace):
        self.o, self.cfg, self.names, self.params, self.Ts = o, None, [], {}, []
        self.total, self.of_total, self.file_tag = 0, "", ""  # file_tag: set once the model is known

    def check(self) -> None:
        from ..costmodel.model_graphs import LOGITS
        from ..profiler.device import slug

        from ..costmodel.units import KV_DTYPES, WEIGHT_DTYPES

        o = self.o
        layer_only = [f for f, given in (("--exec graph", o.exec_mode == "graph"), ("--ops", o.ops)) if given]
        if layer_only:
            raise fail(f"{' and '.join(layer_only)} apply to a layer sweep, not to --model")
        self.cfg = cfg = load_model(o.model)
        for flag, value, choices in (("--weights-dtype", o.weights_dtype, WEIGHT_DTYPES),
                                     ("--kv-dtype", o.kv_dtype, KV_DTYPES)):
            if value is not None:
                check_choice(value, choices, flag)
        stored = "".join(f"-{tag}{v}" for tag, v in (("w", o.weights_dtype), ("kv", o.kv_dtype)) if v)
        self.file_tag = f"model-{slug(cfg.name)}{stored}"
        if o.d is not None or o.heads is not None:
            raise fail(f"--d and --heads come from the model with --model ({cfg.name}: d={cfg.d}, heads={cfg.heads})")
        if o.batch < 1 or o.new_tokens < 1:
            raise fail(f"--batch and --new-tokens must be positive integers, not {o.batch} and {o.new_tokens}")
        check_choice(o.logits, LOGITS, "--logits")

    def variants(self, text: str) -> list:
        return [self.cfg.attention] if text.strip().lower() == "all" else parse_variants(text)

    def plan(self, dev: str, dt: str, name: str, names: list, params: dict) -> None:
        from ..profiler.model_stack import precision_unmeasurable

        cfg, o = self.cfg, self.o
        why = precision_unmeasurable(o.weights_dtype, o.kv_dtype, dev, dt)
        if why:
            flags = [f for f, v in (("--weights-dtype", o.weights_dtype), ("--kv-dtype", o.kv_dtype)) if v]
            raise fail(f"{' and '.join(flags)}: {why}")
        if cfg.weights_dtype and o.weights_dtype is None:
            err_console.print(f"[yellow]note[/]: the checkpoint's weights are {cfg.weights_dtype}; this run's are "
                              f"{dt} (pass --weights-dtype to change that).")
        self.Ts = Ts = parse_T(o.T or MODEL_T["cpu" if dev == "cpu" else "gpu"])
        self.names, self.params, self.total = names, params, len(Ts) * len(names)
        err_console.print(f"Running {cfg.name} ({cfg.layers} layers, d={cfg.d}, random weights) on {name} ({dev}), "
                          f"{dt}; T {', '.join(f'{t:,}' for t in Ts)}, batch {o.batch}, {o.new_tokens} decode steps "
                          f"per timed call.")

    def run(self, path: Path, dev: str, dt: str, **common):
        from ..profiler.model_stack import run_models

        o = self.o
        return run_models(path, o.model, self.names, self.Ts, o.batch, dev, dt, params=self.params,
                          new_tokens=o.new_tokens, logits=o.logits, weights_dtype=o.weights_dtype,
                          kv_dtype=o.kv_dtype, **common)

    def summary(self, run, path: Path) -> list:
        """Print the model points of ``run`` as a table, with a legend; returns them."""
        points = [p for p in run.points if p.model is not None]
        models = len({p.model for p in points}) > 1
        columns = ([Column("model", "left")] if models else []) + [
            Column("variant", "left"), Column("T"), Column("TTFT\nms"), Column("TTFT\npred"), Column("TTFT\nerror"),
            Column("decode\nms/tok"), Column("decode\npred"), Column("decode\nerror"), Column("tok/s", wide=True),
            Column("status", "left")]
        rows = []
        for p in points:
            ttft_err, dec_err = _error(p.predicted_ttft_s, p.ttft_s), _error(p.predicted_decode_s_per_token,
                                                                             p.decode_s_per_token)
            rows.append(([p.model] if models else []) + [
                p.variant, f"{p.shape.T:,}", measured_ms(p.ttft_s, p.timing.stable if p.timing else None),
                predicted_ms(p.predicted_ttft_s, ttft_err), error(ttft_err),
                measured_ms(p.decode_s_per_token, p.decode_timing.stable if p.decode_timing else None),
                predicted_ms(p.predicted_decode_s_per_token, dec_err), error(dec_err),
                "–" if p.decode_tokens_per_s is None else sig(p.decode_tokens_per_s), _status(p)])
        fit_console(console, self.o.wide)
        if points and not models:
            console.print(f"[bold]{escape(points[0].model)}[/] · batch {points[0].shape.batch} · whole model")
        print_table(console, columns, rows, wide=self.o.wide, keys=2 if models else 1)
        for p in points:
            if p.message:
                console.print(f"[dim]- {p.model} {p.variant} T={p.shape.T:,}: {p.message}[/]")
        n_ok = sum(p.status == "ok" for p in points)
        console.print(f"Wrote {path} ({len(points)} points: {n_ok} ok).", soft_wrap=True)  # a path is never broken
        console.print(f"[dim]TTFT = prefill of T tokens (median); ms/tok = one decode step (a token per sequence) "
                      f"against a cache of T; tok/s{'' if self.o.wide else ' (--wide)'} = batch / ms/tok measured; "
                      f"pred = `attncost predict --model` for {escape(run.environment.hardware_profile or 'no profile')}"
                      f"; error = pred / measured - 1; {UNSTABLE_MARK}: a median that did not settle.[/]")
        return points


# -- helpers -------------------------------------------------------------------------------
def _results_file(out, o: SimpleNamespace) -> Path:
    """--out, checked before anything is measured: a file attncost can write there, none of the
    command's inputs, a results file if it exists (else --overwrite), touched only with --resume
    or --overwrite, and no other run writing it now."""
    from ..profiler.runner import RunError, check_free

    path = check_output(out, "--out", "run.json", kind=RESULTS_FILE, inputs=[o.hardware, o.model],
                        overwrite=o.overwrite)
    if path.exists() and not o.resume and not o.overwrite:
        raise fail(f"--out {path} already exists: pass --resume to complete it, --overwrite to start again, "
                   f"or another --out")
    try:
        check_free(path)
    except RunError as err:
        raise fail(str(err))
    return path


def _check_graph_mode(exec_mode: str, device: str) -> None:
    """--exec graph on a device where it cannot be measured (CPU, MPS): exit 2, one sentence."""
    if exec_mode != "graph" or device not in ("cpu", "mps"):
        return
    from ..profiler.sweep import graph_unmeasurable

    raise fail(f"--exec graph: {graph_unmeasurable(device)}")


def _resolve(device: str, backend: str) -> str:
    """The torch device to run on ("auto": CUDA, else MPS, else CPU), checked against --backend."""
    from ..profiler.device import DeviceError, check_backend, resolve_device

    try:
        dev = resolve_device(device)
        check_backend(backend, dev)
    except DeviceError as err:
        raise fail(str(err))
    return dev


def _dtype(dtype: Optional[str], dev: str) -> str:
    """--dtype, or the device's default (fp32 on the CPU, bf16 on a GPU); on an MPS device without
    bfloat16 (before macOS 14) the default falls back to fp16 and an explicit bf16 is refused."""
    from ..profiler.device import dtype_supported

    dt = dtype or ("fp32" if dev == "cpu" else "bf16")
    if dev != "mps" or dt != "bf16" or dtype_supported(dev, dt):
        return dt
    if dtype is not None:
        raise fail("--dtype bf16: this MPS device has no bfloat16 (it needs macOS 14 or later); pass --dtype fp16 "
                   "or fp32")
    err_console.print("[yellow]note[/]: this MPS device has no bfloat16 (it needs macOS 14 or later): running in fp16.")
    return "fp16"


def _hardware(hardware: Optional[str], dev: str, name: str):
    from ..costmodel.hardware import get_hardware
    from ..profiler.device import default_hardware

    if hardware:
        return load_hardware(hardware), hardware
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
        return command_line()
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
    except (OSError, ValueError):  # gone, unreadable or not a results file
        return 0


def _describe(point) -> str:
    """The progress bar's label of the point being measured."""
    return f"{point.model + ' ' if point.model else ''}{point.variant} T={point.shape.T:,}"


def _error(pred: Optional[float], meas: Optional[float]) -> Optional[float]:
    """predicted / measured - 1, or None where either is missing."""
    return None if not meas or pred is None else pred / meas - 1


def _status(p) -> str:
    style = "" if p.status == "ok" else {"error": "red", "oom": "red", "oom-predicted": "yellow"}.get(p.status, "dim")
    return f"[{style}]{p.status}[/]" if style else p.status
