"""Microbenchmarks of the local device, and a hardware profile fitted to them.

``measure_rows(device)`` returns rows in the format of the H100 measurements shipped in
``costmodel/data/h100-microbench-2026-11-22.json``:

- ``mm``: M x K @ K x N over a grid of shapes, per dtype (``ms``, ``tflops``);
- ``bmm_qk`` / ``bmm_pv``: the attention-shaped batched matmuls (BH, T, dh);
- element ops by size (``elems``, ``ms``, ``GBps``): ``softmax`` (rows of 1024), ``copy``
  (``x.clone()``), ``exp``, ``add`` (``x + 1``: one read and one write), ``sum`` (one read),
  ``cumsum`` (along the second-to-last dim of a (n, 256) view, the layout of a prefix sum over
  tokens); GB/s count bytes read plus bytes written, as the reference file does;
- ``eager_tiny_op`` / ``eager_tiny_matmul``: host time per op issued back to back (``us_per_op``);
- ``sdpa`` by backend (flash, cudnn, efficient, math where they exist, and ``default``: torch's
  own choice), T, head dim and causality (FLOPs by FlashAttention's convention: causal = half).

Every row is timed with ``harness.measure`` (CUDA events with the L2 flushed before each call,
median) on random normal data. Out-of-place ops allocate their output as eager PyTorch does, so
on a CPU the rows include the first-touch cost of fresh memory.

``calibrate(device, out)`` writes the rows beside the profile (``NAME.microbench.json``, atomically)
as they are measured, so that a run cut off or a failed fit keeps every row measured (the file says
``"complete": false`` until the last row). It then fits a profile to the rows with
``costmodel.fit.fit_profile`` on the built-in profile of this device (``cpu`` on a CPU, ``h100`` on
an H100, ...) and writes it atomically with ``Hardware.save``, so that ``--hardware NAME.json`` uses
the fitted profile. For the CPU, and for any device without a built-in profile, the base's peaks
are raised to what was measured where it measured more (no datasheet backs a "generic" CPU), so
that every fitted efficiency stays a share of at most 1.
"""

import datetime as _dt
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..costmodel.atomic import write_atomic
from ..costmodel.units import TORCH_DTYPE_NAMES as TORCH_NAMES
from .device import device_name, environment, sdpa_backends_used, sdpa_context, slug, synchronize, torch_dtype
from .harness import do_bench_check, measure

METHOD = ("attncost.profiler.harness.measure: median; CUDA events with the L2 flushed before each call; "
          "random normal inputs; GB/s count bytes read + written")


@dataclass
class Plan:
    """What to measure: shapes, sizes and time budgets."""

    mm: dict  # dtype -> list of (M, K, N)
    bmm: list  # (BH, T, dh)
    bmm_dtype: str
    elems: list  # element-op sizes
    vector_dtype: str
    ops: tuple = ("copy", "exp", "add", "sum", "cumsum")
    softmax: list = field(default_factory=list)
    sdpa: list = field(default_factory=list)  # (B, H, T, dh, causal)
    sdpa_backends: tuple = ()
    sdpa_dtype: str = "bf16"
    tiny_ops: int = 2000
    budget_s: float = 0.3
    warmup: int = 2
    bench_check: bool = False


def plan_for(device: str, quick: bool = False) -> Plan:
    """The default grid for a device; ``quick``: a smaller grid with shorter budgets (a few seconds
    on a CPU, about a minute on a GPU)."""
    if device == "cuda":
        Ms = [1, 16, 64, 256, 1024, 4096, 16384]
        Ks = [64, 256, 1024, 4096]
        Ns = [64, 256, 1024, 4096, 16384]
        if quick:
            Ms, Ks, Ns = [1, 64, 1024, 16384], [64, 1024, 4096], [64, 1024, 16384]
        grid = [(m, k, n) for m in Ms for k in Ks for n in Ns]
        sdpa = [(max(1, 16384 // T), 16, T, dh, causal) for dh in (64, 128)
                for T in ((1024, 4096) if quick else (256, 1024, 4096, 16384)) for causal in (True, False)]
        return Plan(mm={"bf16": grid, "fp16": grid if not quick else [], "fp32": grid}, bmm=[
            (256, 256, 64), (64, 1024, 64), (16, 4096, 64), (16, 16384, 64),
            (256, 256, 128), (64, 1024, 128), (16, 4096, 128), (16, 16384, 128)], bmm_dtype="bf16",
            elems=[4096, 65536, 2**20, 2**24, 2**28] if not quick else [4096, 2**20, 2**24],
            vector_dtype="bf16", softmax=[2**24, 2**26, 2**28] if not quick else [2**24],
            sdpa=sdpa, sdpa_backends=("flash", "cudnn", "efficient", "default"), sdpa_dtype="bf16",
            tiny_ops=5000, budget_s=0.1 if quick else 0.25, bench_check=True)
    if device == "mps":
        Ms = [1, 16, 256, 1024, 4096]
        Ks = [64, 256, 1024, 4096]
        Ns = [64, 256, 1024, 4096]
        if quick:
            Ms, Ks, Ns = [1, 64, 1024], [64, 1024], [64, 1024, 4096]
        grid = [(m, k, n) for m in Ms for k in Ks for n in Ns]
        sdpa = [(max(1, 4096 // T), 8, T, dh, True) for dh in (64, 128) for T in (256, 1024, 4096)]
        return Plan(mm={"fp16": grid, "fp32": grid}, bmm=[(64, 256, 64), (16, 1024, 64), (8, 4096, 64)],
                    bmm_dtype="fp16", elems=[4096, 65536, 2**20, 2**24], vector_dtype="fp16",
                    softmax=[2**20, 2**24], sdpa=sdpa, sdpa_backends=("math", "default"),
                    sdpa_dtype="fp16", tiny_ops=2000, budget_s=0.1 if quick else 0.25)
    # CPU: fp32 everywhere; bf16 matmuls on a reduced grid (fast only with AVX512-BF16 or AMX)
    if quick:  # a few seconds: small shapes (bf16 matmuls are slow on CPUs without AMX / AVX512-BF16)
        grid32 = [(m, k, n) for m in (1, 16, 128) for k in (64, 256) for n in (64, 256)]
        grid16 = [(m, k, n) for m in (16, 128) for k in (64, 256) for n in (64, 256)]
        sdpa = [(1, 2, T, dh, True) for T in (128, 256) for dh in (32, 64)]
        return Plan(mm={"fp32": grid32, "bf16": grid16}, bmm=[(8, 128, 32), (2, 512, 32)], bmm_dtype="fp32",
                    elems=[4096, 65536, 2**20], vector_dtype="fp32", softmax=[2**16], sdpa=sdpa,
                    sdpa_backends=("flash", "math", "default"), sdpa_dtype="fp32",
                    tiny_ops=300, budget_s=0.02, warmup=1)
    grid32 = [(m, k, n) for m in (1, 16, 64, 256, 1024, 4096) for k in (64, 256, 1024, 4096)
              for n in (64, 256, 1024, 4096)]
    grid16 = [(m, k, n) for m in (1, 16, 256, 1024) for k in (64, 256, 1024) for n in (64, 256, 1024)]
    grid_h = [(m, k, n) for m in (16, 64, 256) for k in (64, 256) for n in (64, 256)]
    sdpa = [(max(1, 2048 // T), 4, T, dh, causal) for T in (256, 1024, 2048) for dh in (32, 64)
            for causal in (True, False)]
    return Plan(mm={"fp32": grid32, "bf16": grid16, "fp16": grid_h},
                bmm=[(16, 256, 64), (4, 1024, 64), (1, 4096, 64)], bmm_dtype="fp32",
                elems=[4096, 65536, 2**20, 2**22, 2**24], vector_dtype="fp32", softmax=[2**16, 2**20, 2**22],
                sdpa=sdpa, sdpa_backends=("flash", "math", "default"), sdpa_dtype="fp32",
                tiny_ops=3000, budget_s=0.25)


def measure_rows(device: str, *, quick: bool = False, plan: Optional[Plan] = None,
                 progress: Optional[Callable[[str, int, int], None]] = None,
                 on_row: Optional[Callable[[list], None]] = None) -> list:
    """Measure the microbenchmark rows of ``plan`` (default ``plan_for(device, quick)``).
    ``progress(what, done, total)`` is called after each row; ``on_row(rows)`` with the rows so
    far after each row measured (to save them as they come)."""
    import torch

    plan = plan or plan_for(device, quick)
    steps = _steps(plan, device)
    rows: list = []
    torch.manual_seed(0)
    with torch.no_grad():
        for i, (what, step) in enumerate(steps):
            try:
                row = step()
            except Exception as err:  # noqa: BLE001  (a backend missing here, an OOM: skip the row)
                row = None
                if progress is not None:
                    progress(f"{what}: skipped ({type(err).__name__})", i + 1, len(steps))
            if row is not None:
                rows.append(row)
                if on_row is not None:
                    on_row(rows)
            if progress is not None:
                progress(what, i + 1, len(steps))
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def _steps(plan: Plan, device: str) -> list:
    """(label, thunk) per row, so progress can be shown row by row."""
    steps = []
    kw = dict(budget_s=plan.budget_s, warmup=plan.warmup)
    for dt, grid in plan.mm.items():
        for (M, K, N) in grid:
            steps.append((f"mm {dt} {M}x{K}x{N}", _mm_step(device, dt, M, K, N, kw)))
    for (BH, T, dh) in plan.bmm:
        for op in ("bmm_qk", "bmm_pv"):
            steps.append((f"{op} {BH}x{T}x{dh}", _bmm_step(device, plan.bmm_dtype, op, BH, T, dh, kw)))
    for n in plan.softmax:
        steps.append((f"softmax {n}", _vector_step(device, plan.vector_dtype, "softmax", n, kw)))
    for n in plan.elems:
        for op in plan.ops:
            steps.append((f"{op} {n}", _vector_step(device, plan.vector_dtype, op, n, kw)))
    steps.append(("eager_tiny_op", lambda: _tiny(device, "eager_tiny_op", plan.tiny_ops)))
    steps.append(("eager_tiny_matmul", lambda: _tiny(device, "eager_tiny_matmul", plan.tiny_ops)))
    for (B, H, T, dh, causal) in plan.sdpa:
        for be in plan.sdpa_backends:
            if be == "math" and B * H * T * T > 2**31:  # the math path materialises the scores
                continue
            steps.append((f"sdpa {be} T={T} dh={dh}{' causal' if causal else ''}",
                          _sdpa_step(device, plan.sdpa_dtype, be, B, H, T, dh, causal, kw)))
    if plan.bench_check:
        steps.append(("do_bench check", lambda: do_bench_check(T=4096, head_dim=128, budget_s=plan.budget_s)))
    return steps


def _randn(shape, device, dt):
    import torch

    return torch.randn(*shape, device=device, dtype=torch_dtype(dt))


def _mm_step(device, dt, M, K, N, kw):
    def step():
        a, b = _randn((M, K), device, dt), _randn((K, N), device, dt)
        tm = measure(lambda: a @ b, device, **kw)
        t = tm.median_s
        return {"op": "mm", "dtype": TORCH_NAMES[dt], "M": M, "K": K, "N": N, "ms": t * 1e3,
                "tflops": 2.0 * M * K * N / t / 1e12, "min_ms": tm.min_s * 1e3}
    return step


def _bmm_step(device, dt, op, BH, T, dh, kw):
    def step():
        if op == "bmm_qk":
            a, b = _randn((BH, T, dh), device, dt), _randn((BH, dh, T), device, dt)
        else:
            a, b = _randn((BH, T, T), device, dt), _randn((BH, T, dh), device, dt)
        tm = measure(lambda: a @ b, device, **kw)
        t = tm.median_s
        return {"op": op, "dtype": TORCH_NAMES[dt], "BH": BH, "T": T, "dh": dh, "ms": t * 1e3,
                "tflops": 2.0 * BH * T * T * dh / t / 1e12, "min_ms": tm.min_s * 1e3}
    return step


_BYTES_MOVED = {"copy": 2, "exp": 2, "add": 2, "softmax": 2, "cumsum": 2, "sum": 1}


def _vector_step(device, dt, op, n, kw):
    def step():
        import torch

        if op == "softmax":
            x = _randn((max(1, n // 1024), min(n, 1024)), device, dt)
            fn = lambda: torch.softmax(x, dim=-1)  # noqa: E731
        elif op == "cumsum":
            x = _randn((max(1, n // 256), min(n, 256)), device, dt)
            fn = lambda: torch.cumsum(x, dim=0)  # noqa: E731
        else:
            x = _randn((n,), device, dt)
            fn = {"copy": x.clone, "exp": lambda: torch.exp(x), "add": lambda: x + 1,
                  "sum": lambda: x.sum()}[op]
        tm = measure(fn, device, **kw)
        t = tm.median_s
        itemsize = torch.finfo(x.dtype).bits // 8
        return {"op": op, "dtype": TORCH_NAMES[dt], "elems": x.numel(), "ms": t * 1e3,
                "GBps": _BYTES_MOVED[op] * x.numel() * itemsize / t / 1e9, "min_ms": tm.min_s * 1e3}
    return step


def _tiny(device: str, op: str, n: int) -> dict:
    """Host time per op issued back to back: the median over 5 batches of ``n`` ops."""
    import torch

    x = torch.randn(16, 16, device=device)
    fn = (lambda: x + 1) if op == "eager_tiny_op" else (lambda: x @ x)
    for _ in range(min(n, 200)):
        fn()
    synchronize(device)
    per = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        synchronize(device)
        per.append((time.perf_counter() - t0) / n)
    per.sort()
    return {"op": op, "us_per_op": per[len(per) // 2] * 1e6}


def _sdpa_step(device, dt, backend, B, H, T, dh, causal, kw):
    def step():
        import torch.nn.functional as F

        q, k, v = (_randn((B, H, T, dh), device, dt) for _ in range(3))
        forced = "auto" if backend == "default" else backend

        def fn():
            with sdpa_context(forced):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        used = sdpa_backends_used(fn)  # raises if the forced backend cannot run this shape
        tm = measure(fn, device, **kw)
        t = tm.median_s
        flops = 4.0 * B * H * T * T * dh * (0.5 if causal else 1.0)
        row = {"op": "sdpa", "backend": backend, "dtype": TORCH_NAMES[dt], "B": B, "H": H, "T": T,
               "dh": dh, "causal": causal, "ms": t * 1e3, "tflops": flops / t / 1e12, "min_ms": tm.min_s * 1e3}
        if backend == "default" and used:
            row["ran"] = used
        return row
    return step


# -- the profile ---------------------------------------------------------------------------------
def base_profile(device: str, rows: list, name: Optional[str] = None):
    """The built-in profile to fit, with this machine's name, memory size and, where no datasheet
    backs it (CPU, unknown device), peaks raised to what was measured."""
    from ..costmodel.fit import measured_s, row_dtype
    from ..costmodel.hardware import get_hardware
    from .device import default_hardware

    dev_name = name or device_name(device)
    matched = default_hardware(device, dev_name)
    base = get_hardware(matched or {"cpu": "cpu", "mps": "m2-max"}.get(device, "h100"))
    upd: dict = {}
    published = device != "cpu" and matched is not None
    if not published:
        peak = dict(base.peak_flops)
        vector = base.vector_flops
        for r in rows:
            if r.get("op") not in ("mm", "bmm_qk", "bmm_pv") or not measured_s(r):
                continue
            dt = row_dtype(r)
            rate = r["tflops"] * 1e12
            peak[dt] = max(peak[dt], rate)
            if dt == "fp32":
                vector = max(vector, rate)
        copies = [r["GBps"] * 1e9 for r in rows if r.get("op") in ("copy", "exp", "add") and r.get("GBps")]
        upd.update(peak_flops=peak, vector_flops=vector,
                   mem_bandwidth=max([base.mem_bandwidth] + copies))
    mem = _memory_bytes(device)
    if mem:
        upd["mem_bytes"] = float(mem)
    return base.model_copy(update=upd) if upd else base, matched


def _memory_bytes(device: str) -> Optional[int]:
    try:
        if device == "cuda":
            import torch

            return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def sidecar_path(out) -> Path:
    """Where the raw rows go beside the profile: ``NAME.json`` -> ``NAME.microbench.json``."""
    out = Path(out)
    stem = out.name[:-5] if out.name.endswith(".json") else out.name
    return out.with_name(stem + ".microbench.json")


def write_rows(path, env, rows: list, *, quick: bool, complete: bool) -> None:
    """The raw rows and how they were measured, as JSON at ``path``, written atomically;
    ``complete`` is False while rows are still being measured."""
    write_atomic(Path(path), json.dumps({
        "device": env.device_name, "torch": env.torch, "method": METHOD, "environment": env.model_dump(),
        "quick": quick, "complete": complete, "rows": rows}, indent=1))


def calibrate(device: str, out, *, quick: bool = False, plan: Optional[Plan] = None,
              progress: Optional[Callable[[str, int, int], None]] = None, rows: Optional[list] = None) -> dict:
    """Measure (saving the rows as they come), fit and write. Returns {"hardware", "path",
    "rows_path", "rows", "errors", "base", "seconds"}; ``rows`` given skips the measurement
    (refit of earlier rows)."""
    from ..costmodel.fit import fit_profile, row_errors, summarize

    t0 = time.perf_counter()
    env = environment(device, "mixed")
    out = Path(out)
    rows_path = sidecar_path(out)
    if rows is None:
        def save(so_far: list) -> None:
            write_rows(rows_path, env, so_far, quick=quick, complete=False)

        rows = measure_rows(device, quick=quick, plan=plan, progress=progress, on_row=save)
    write_rows(rows_path, env, rows, quick=quick, complete=True)
    fit_rows = [r for r in rows if r.get("op") != "do_bench_check"]
    base, matched = base_profile(device, fit_rows, env.device_name)
    today = _dt.date.today().isoformat()
    source = (f"attncost calibrate{' --quick' if quick else ''} on {env.device_name} ({device}, torch "
              f"{env.torch}, {today}, {len(fit_rows)} rows, {rows_path.name})")
    hw = fit_profile(base, fit_rows, source=source)
    errs = {k: summarize(v) for k, v in sorted(row_errors(fit_rows, hw).items())}
    notes = list(hw.notes) + [
        f"base profile: {matched or base.name}" + ("" if matched and device != "cpu" else
                                                  " with peaks raised to the best measured rates"),
        "fit errors |pred-meas|/meas, median / p90: " + "; ".join(
            f"{k} {s['median']:.1%} / {s['p90']:.1%} (n={s['n']})" for k, s in errs.items() if s["n"])]
    check = next((r for r in rows if r.get("op") == "do_bench_check"), None)
    if check:
        notes.append(f"attncost's timer vs triton do_bench on SDPA T={check['T']}: {check['rel_diff']:+.1%}")
    hw = hw.model_copy(update={
        "name": "calibrated-" + slug(env.device_name),
        "description": f"{env.device_name} ({device}), calibrated {today}" + (" (quick)" if quick else ""),
        "notes": notes})
    hw.save(out)
    return {"hardware": hw, "path": out, "rows_path": rows_path, "rows": rows, "errors": errs,
            "base": matched or base.name, "seconds": time.perf_counter() - t0}


def summary(rows: list) -> dict:
    """Headline numbers of the rows: best matmul TFLOP/s per dtype, largest copy GB/s, us per op."""
    out: dict = {}
    for r in rows:
        op = r.get("op")
        if op == "mm":
            k = f"matmul {r['dtype']} TFLOP/s (best)"
            out[k] = max(out.get(k, 0.0), r["tflops"])
        elif op in ("copy", "exp", "add", "sum", "softmax", "cumsum"):
            k = f"{op} GB/s (largest, {r['dtype']})"
            if r["elems"] >= out.get("_elems_" + op, 0):
                out["_elems_" + op] = r["elems"]
                out[k] = r["GBps"]
        elif op in ("eager_tiny_op", "eager_tiny_matmul"):
            out[f"{op} us/op"] = r["us_per_op"]
        elif op == "sdpa":
            k = f"sdpa {r['backend']} TFLOP/s (best)"
            out[k] = max(out.get(k, 0.0), r["tflops"])
    return {k: v for k, v in out.items() if not k.startswith("_") and not (isinstance(v, float) and math.isnan(v))}
