"""Microbenchmarks of the local device, and a hardware profile fitted to them.

``measure_rows(device)`` returns rows in the format of the H100 measurements shipped in
``costmodel/data/h100-microbench-2026-11-22.json``:

- ``mm``: M x K @ K x N over a grid of shapes, per dtype (``ms``, ``tflops``), the K x N matrix a
  transposed view of an N x K one, as ``nn.Linear`` keeps its weight;
- ``bmm_qk`` / ``bmm_pv``: the attention-shaped batched matmuls (BH, T, dh);
- ``bmv_qk`` / ``bmv_pv``: decode's: one query row per (batch, head) against T cached keys, as the
  decode paths run them (the scores against a transposed view of a (BH, T, dh) cache, then the
  weights by the values), the batched matrix-vector products that ``fit`` prices with ``mm``'s m = 1;
- element ops by size (``elems``, ``ms``, ``GBps``, ``bytes``, ``out_bytes``), one or more per op
  kind of ``costmodel.opkinds`` (``_vector_case`` says how each is run): copy (``x.clone()``,
  ``y.copy_(x)`` into a tensor that exists, a head transpose made contiguous, ``cat``), elementwise
  (``exp``, ``x + 1``, ``x * y``, ``masked_fill`` by a broadcast causal mask), reduction (``sum`` of
  all, ``amax`` over rows of 64), scan (``cumsum`` along the second-to-last dim of a (n, 256) view,
  the layout of a prefix sum over tokens), fill (``zeros``), index (``index_select`` of rows,
  ``gather`` of 16 of each 64), scatter (``index_add_`` of rows, ``scatter_add_``); ``softmax`` by
  row length (``row``) and ``topk`` by candidates per row (``row``) and ``k``; the plain copies at
  more sizes (``Plan.fresh``), where a CPU's memory changes pace. Bytes are what the op reads plus
  what it writes, as ``profiler.trace`` counts them (an accumulating scatter reads and writes the
  entries it adds to), ``out_bytes`` the output it allocates (0: in place); GB/s = bytes / time, as
  the reference file does;
- ``eager_tiny_*``: host time per op of each host class (``op``: element-wise, ``matmul``,
  ``view``: view / transpose / expand, ``sdpa``, ``index``, ``module``: a tiny ``nn.Linear`` called
  as a module, whose excess over ``matmul`` is a module call's; ``autograd`` and ``backward``: a chain
  of 16 and of 1 element-wise ops from a leaf and its backward, the autograd engine's time per node and
  per backward call), tiny ops issued back to back (on a CPU,
  the whole op) (``us_per_op``), and ``eager_sequence``: the same tiny ops issued in turn, each feeding the
  next, as a layer issues them (``us_per_op``; ``classes``: ops per class), whose excess over the tiny
  rows is the host time an op costs more in a layer than in a loop of its own (all timed together,
  in rounds, each row its fastest: ``_host_rows``);
- ``pace``: the reference workload of ``profiler.pace``, first and last (``when``), whose median is
  the profile's ``pace_s``;
- ``cold`` (a CPU): matrix-vector products timed right after others read N MB (``profiler.cold``):
  what a layer pays where its own traffic evicts its weights, caches and inputs between calls;
- ``sdpa_items`` (a CPU of several threads): one flash SDPA call over one (batch, head) item and over
  one item per thread, whose ratio is how much faster the threads run a fused attention call than one
  (``Hardware.attention_speedup``: a call of fewer items than threads leaves some idle);
- ``sdpa`` by backend (flash, cudnn, efficient, math where they exist, and ``default``: torch's
  own choice), T, head dim and causality (FLOPs by FlashAttention's convention: causal = half), and
  decode's: one query per head (``Tq``: 1) against T keys;
- ``sdpa_backward`` by fused backend: the backward of one SDPA call alone (the gradients of Q, K and V
  of a kept graph), whose time over the forward law's for 2.5x its FLOPs is ``backward``.

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
from typing import Callable, NamedTuple, Optional

from ..costmodel.atomic import write_atomic
from ..costmodel.fit import (CHAIN, ELEMENT_OPS, HOST_ROWS, ITEMS_ROW, PACE_ROW, SDPA_BACKWARD_ROW, SEQUENCE_ROW, TINY,
                             backward_flops)
from ..costmodel.units import DTYPE_BYTES, INDEX_BYTES
from ..costmodel.units import TORCH_DTYPE_NAMES as TORCH_NAMES
from .device import device_name, environment, sdpa_backends_used, sdpa_context, slug, synchronize, torch_dtype
from .cold import cold_rows
from .harness import do_bench_check, measure
from .pace import pace_s
from .quiet import SLICE_S, CpuWatch

# op, matmul, view, sdpa, index, module, autograd, backward
HOST_CLASSES = tuple(r.removeprefix(TINY) for r in HOST_ROWS)
_FLAT = ("copy", "copy_", "exp", "add", "mul", "sum", "zeros")  # element ops on a flat tensor

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
    ops: tuple = ("copy", "copy_", "copy_t", "cat", "exp", "add", "mul", "masked_fill", "sum", "amax", "cumsum",
                  "zeros", "index_select", "gather", "index_add", "scatter_add")
    softmax: list = field(default_factory=list)  # elems, or (elems, row length) (default rows of 1024)
    topk: list = field(default_factory=list)  # (elems, candidates per row, k)
    fresh: list = field(default_factory=list)  # more sizes of the plain copies: where memory changes pace
    host: tuple = HOST_CLASSES  # eager_tiny_<class> rows ("op": the element-wise class)
    sdpa: list = field(default_factory=list)  # (B, H, T, dh, causal)
    sdpa_decode: list = field(default_factory=list)  # (B, H, T, dh): one query per head against T keys
    sdpa_backward: list = field(default_factory=list)  # (B, H, T, dh, causal): the backward of a fused call
    sdpa_backends: tuple = ()
    sdpa_dtype: str = "bf16"
    tiny_ops: int = 2000
    budget_s: float = 0.3
    warmup: int = 2
    bench_check: bool = False
    bmv: list = field(default_factory=list)  # (BH, T, dh): decode's batched matrix-vector products, in bmm_dtype
    cold: bool = False  # the ``cold`` rows (``profiler.cold``: a CPU's operands evicted by a layer's traffic)
    items: bool = False  # the ``sdpa_items`` rows: a fused attention call of one item and of one per thread


# a CPU's decode attention whose K and V (64 MiB) pass its caches, as far as any calibration places them (16 to
# 47 MB here): it streams them block by block, at 14-18 GB/s on 2 EPYC cores where a copy moves 34
# (``AttentionEfficiency.dram_eff``)
BEYOND = [(1, 8, 16384, 64), (1, 4, 16384, 128)]


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
        softmax = [(2**24, 1024), (2**24, 64), (2**24, 16384)] + ([] if quick else [(2**26, 1024), (2**28, 1024)])
        topk = [(2**16, 64, 8), (2**22, 64, 8), (2**24, 1024, 64), (2**24, 16384, 2048)] + (
            [] if quick else [(2**20, 1024, 64), (2**24, 4096, 512)])
        return Plan(mm={"bf16": grid, "fp16": grid if not quick else [], "fp32": grid}, bmm=[
            (256, 256, 64), (64, 1024, 64), (16, 4096, 64), (16, 16384, 64),
            (256, 256, 128), (64, 1024, 128), (16, 4096, 128), (16, 16384, 128)], bmm_dtype="bf16",
            bmv=[(512, 1024, 64), (128, 4096, 128)] + ([] if quick else [(64, 32768, 128)]),
            elems=[4096, 65536, 2**20, 2**24, 2**28] if not quick else [4096, 2**20, 2**24],
            vector_dtype="bf16", softmax=softmax, topk=topk,
            sdpa=sdpa, sdpa_decode=[(8, 16, T, dh) for T in (4096, 32768) for dh in (64, 128)][:2 if quick else 4],
            sdpa_backward=[(4, 16, 4096, 128, True)] + ([] if quick else [(16, 16, 1024, 64, True)]),
            sdpa_backends=("flash", "cudnn", "efficient", "default"), sdpa_dtype="bf16",
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
                    bmm_dtype="fp16", bmv=[(64, 1024, 64), (32, 4096, 64)],
                    elems=[4096, 65536, 2**20, 2**24], vector_dtype="fp16",
                    softmax=[(2**20, 1024), (2**20, 64), (2**24, 4096)],
                    topk=[(2**16, 64, 8), (2**20, 64, 8), (2**20, 1024, 64), (2**20, 4096, 512)], sdpa=sdpa,
                    sdpa_decode=[(4, 8, T, 64) for T in (1024, 8192)], sdpa_backends=("math", "default"),
                    sdpa_dtype="fp16", tiny_ops=2000, budget_s=0.1 if quick else 0.25)
    # CPU: fp32 everywhere; bf16 matmuls on a reduced grid (fast only with AVX512-BF16 or AMX)
    if quick:  # a few seconds: small shapes (bf16 matmuls are slow on CPUs without AMX / AVX512-BF16)
        grid32 = [(m, k, n) for m in (1, 4, 16, 128) for k in (64, 256) for n in (64, 256)]
        grid16 = [(m, k, n) for m in (16, 128) for k in (64, 256) for n in (64, 256)]
        sdpa = [(1, 2, T, dh, True) for T in (128, 256) for dh in (32, 64)] + [(1, 2, 256, 256, True)]
        return Plan(mm={"fp32": grid32, "bf16": grid16}, bmm=[(8, 128, 32), (2, 512, 32)], bmm_dtype="fp32",
                    bmv=[(8, 256, 32), (16, 1024, 64)],
                    elems=[4096, 65536, 2**20], vector_dtype="fp32",
                    softmax=[(2**12, 256), (2**16, 16), (2**16, 1024), (2**20, 256)],
                    # both paths of PyTorch's CPU topk (partial sort where k * 64 <= row: hardware.TopkPaths)
                    topk=[(2**12, 64, 4), (2**16, 64, 4), (2**16, 1024, 64), (2**16, 4096, 512), (2**16, 1024, 8),
                          (2**16, 4096, 16)],
                    fresh=[2**22, 2**24], sdpa=sdpa,
                    sdpa_decode=[(2, 4, 64, 32), (2, 4, 256, 64), (2, 4, 1024, 64), (2, 4, 4096, 32)] + BEYOND,
                    sdpa_backward=[(1, 2, 256, 64, True)], sdpa_backends=("flash", "math", "default"),
                    sdpa_dtype="fp32",
                    tiny_ops=1000, budget_s=0.05, warmup=1, cold=True, items=True)
    # m = 1 and 4: decode's projections at batch 1 (a matrix-vector product) and at a small batch
    grid32 = [(m, k, n) for m in (1, 4, 16, 64, 256, 1024, 4096) for k in (64, 256, 1024, 4096)
              for n in (64, 256, 1024, 4096)]
    grid32 += [(m, k, 4096) for m in (1, 4, 16) for k in (512, 768)]  # 8 and 12 MiB: where a gemm slows
    grid16 = [(m, k, n) for m in (1, 16, 256, 1024) for k in (64, 256, 1024) for n in (64, 256, 1024)]
    grid_h = [(m, k, n) for m in (16, 64, 256) for k in (64, 256) for n in (64, 256)]
    sdpa = [(max(1, 2048 // T), 4, T, dh, causal) for T in (64, 256, 1024, 2048) for dh in (32, 64)
            for causal in (True, False)]
    # larger head dims: MLA and DSA attend over their latent (rank + rope dims, 288 at rank 256), and a
    # fused call gains throughput with the head dim (on 2 EPYC cores 40 GFLOP/s at 64, 56 at 288)
    sdpa += [(max(1, 2048 // T), 4, T, dh, True) for T in (256, 1024) for dh in (128, 256)]
    return Plan(mm={"fp32": grid32, "bf16": grid16, "fp16": grid_h},
                bmm=[(16, 256, 64), (4, 1024, 64), (1, 4096, 64)], bmm_dtype="fp32",
                bmv=[(8, 256, 64), (32, 1024, 64), (16, 4096, 64), (4, 16384, 32)],
                elems=[4096, 65536, 2**20, 2**22, 2**24], vector_dtype="fp32",
                softmax=[(2**12, 64), (2**12, 1024)] + [(n, row) for n in (2**16, 2**20, 2**22)
                                                        for row in (16, 128, 1024, 8192)],
                topk=[(2**14, 64, 4), (2**14, 4096, 64)] + [(2**18, cand, k) for cand, k in (  # both paths (TopkPaths)
                    (64, 4), (64, 32), (256, 16), (1024, 8), (1024, 128), (1536, 16), (4096, 64), (4096, 1024),
                    (16384, 4), (16384, 256))],
                # 30 and 32 MiB: glibc maps a block anew for each op only above 32 MiB (its dynamic mmap
                # threshold stops there); below, a freed block is reused (topk's 30 MiB gather faults nothing)
                fresh=[15 * 2**19, 2**23],
                # decode from short contexts on: the fit's latency and query terms are told apart there
                sdpa=sdpa, sdpa_decode=[(2, 4, T, dh) for T in (64, 256, 1024, 4096) for dh in (32, 64)] + BEYOND,
                sdpa_backward=[(max(1, 2048 // T), 4, T, dh, True) for T in (256, 1024) for dh in (64, 256)],
                sdpa_backends=("flash", "math", "default"), sdpa_dtype="fp32",
                tiny_ops=3000, budget_s=0.25, cold=True, items=True)


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
            for one in (row if isinstance(row, list) else [row] if row is not None else []):
                rows.append(one)
                if on_row is not None:
                    on_row(rows)
            if progress is not None:
                progress(what, i + 1, len(steps))
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def _steps(plan: Plan, device: str) -> list:
    """(label, thunk) per row (the host-time rows: one thunk, timed together), so progress can be
    shown row by row."""
    kw = dict(budget_s=plan.budget_s, warmup=plan.warmup)
    steps = [("pace: the reference workload, first", _pace_step(device, "first", plan.budget_s))]
    for dt, grid in plan.mm.items():
        for (M, K, N) in grid:
            steps.append((f"mm {dt} {M}x{K}x{N}", _mm_step(device, dt, M, K, N, kw)))
    for (BH, T, dh) in plan.bmm:
        for op in ("bmm_qk", "bmm_pv"):
            steps.append((f"{op} {BH}x{T}x{dh}", _bmm_step(device, plan.bmm_dtype, op, BH, T, dh, kw)))
    for (BH, T, dh) in plan.bmv:
        for op in ("bmv_qk", "bmv_pv"):
            steps.append((f"{op} {BH}x{T}x{dh}", _bmm_step(device, plan.bmm_dtype, op, BH, T, dh, kw)))
    for case in plan.softmax:
        n, row = case if isinstance(case, tuple) else (case, 1024)
        steps.append((f"softmax {n} rows of {row}", _vector_step(device, plan.vector_dtype, "softmax", n, kw, row=row)))
    for n, cand, k in plan.topk:
        steps.append((f"topk {n} {k} of {cand}", _vector_step(device, plan.vector_dtype, "topk", n, kw, row=cand, k=k)))
    for n in plan.elems:
        for op in plan.ops:
            steps.append((f"{op} {n}", _vector_step(device, plan.vector_dtype, op, n, kw)))
    for n in plan.fresh:
        for op in ("copy", "copy_"):
            steps.append((f"{op} {n}", _vector_step(device, plan.vector_dtype, op, n, kw)))
    if plan.host:
        steps.append(("eager host time per op", lambda: _host_rows(device, plan.host, plan.tiny_ops, plan.budget_s)))
    for (B, H, T, dh, causal) in plan.sdpa:
        for be in plan.sdpa_backends:
            if be == "math" and B * H * T * T > 2**31:  # the math path materialises the scores
                continue
            steps.append((f"sdpa {be} T={T} dh={dh}{' causal' if causal else ''}",
                          _sdpa_step(device, plan.sdpa_dtype, be, B, H, T, dh, causal, kw)))
    for (B, H, T, dh) in plan.sdpa_decode:
        for be in plan.sdpa_backends:
            steps.append((f"sdpa {be} 1 query T={T} dh={dh}",
                          _sdpa_step(device, plan.sdpa_dtype, be, B, H, T, dh, False, kw, queries=1)))
    for (B, H, T, dh, causal) in plan.sdpa_backward:
        for be in plan.sdpa_backends:
            if be not in ("math", "default"):
                steps.append((f"sdpa {be} backward T={T} dh={dh}{' causal' if causal else ''}",
                              _sdpa_backward_step(device, plan.sdpa_dtype, be, B, H, T, dh, causal, kw)))
    if plan.items:
        steps.append(("sdpa flash: one item, then one per thread", _items_step(device, plan.sdpa_dtype, kw)))
    if plan.bench_check:
        steps.append(("do_bench check", lambda: do_bench_check(T=4096, head_dim=128, budget_s=plan.budget_s)))
    if plan.cold:
        steps.append(("cold: operands evicted by traffic", cold_rows))
    steps.append(("pace: the reference workload, last", _pace_step(device, "last", plan.budget_s)))
    return steps


def _pace_step(device: str, when: str, budget_s: float) -> Callable[[], dict]:
    """The ``PACE_ROW`` (``profiler.pace``), timed ``when`` ("first" or "last") in the calibration."""
    def step():
        return {"op": PACE_ROW, "when": when, "ms": pace_s(device, budget_s) * 1e3}

    return step


def _randn(shape, device, dt):
    import torch

    return torch.randn(*shape, device=device, dtype=torch_dtype(dt))


def _mm_step(device, dt, M, K, N, kw):
    """An mm row: M x K by a K x N matrix held as nn.Linear holds its weight, N x K, read transposed (the
    layout of a layer's projections: on a 2-core CPU, MKL's matrix-vector product by a 768 x 4,096 weight
    took 540-680 us so and 360 us from a K x N matrix, by a 320 x 320 one 18 us and 12 us)."""
    def step():
        a, b = _randn((M, K), device, dt), _randn((N, K), device, dt).t()
        tm = measure(lambda: a @ b, device, **kw)
        t = tm.median_s
        return {"op": "mm", "dtype": TORCH_NAMES[dt], "M": M, "K": K, "N": N, "ms": t * 1e3,
                "tflops": 2.0 * M * K * N / t / 1e12, "min_ms": tm.min_s * 1e3}
    return step


def _bmm_step(device, dt, op, BH, T, dh, kw):
    def step():
        rows = 1 if op.startswith("bmv") else T  # decode: one query row
        if op == "bmm_qk":
            a, b = _randn((BH, T, dh), device, dt), _randn((BH, dh, T), device, dt)
        elif op == "bmv_qk":  # the keys as decode reads its cache: a transposed view
            a, b = _randn((BH, 1, dh), device, dt), _randn((BH, T, dh), device, dt).transpose(-1, -2)
        else:
            a, b = _randn((BH, rows, T), device, dt), _randn((BH, T, dh), device, dt)
        tm = measure(lambda: a @ b, device, **kw)
        t = tm.median_s
        return {"op": op, "dtype": TORCH_NAMES[dt], "BH": BH, "T": T, "dh": dh, "ms": t * 1e3,
                "tflops": 2.0 * BH * rows * T * dh / t / 1e12, "min_ms": tm.min_s * 1e3}
    return step


class Case(NamedTuple):
    """One element-op measurement: the call, the elements it processes, the bytes it reads plus writes
    (as ``profiler.trace`` counts them), the bytes of the output it allocates (0: in place) and the
    row's extra keys (``row``, ``k``)."""

    fn: Callable[[], object]
    elems: int
    bytes: float
    out_bytes: float
    keys: dict


def _rows_of(n: int, row: int) -> tuple:
    return (max(1, n // row), min(n, row))


def _vector_case(op: str, n: int, device: str, dt: str, row: int = 0, k: int = 0) -> Case:
    """How each element op runs on about ``n`` elements (``row``, ``k``: of a softmax or topk)."""
    import torch

    isz = DTYPE_BYTES[dt]
    if op in ("softmax", "topk"):
        x = _randn(_rows_of(n, row), device, dt)
        m = x.numel()
        if op == "softmax":
            return Case(lambda: torch.softmax(x, dim=-1), m, 2 * m * isz, m * isz, {"row": x.shape[1]})
        kept = x.shape[0] * k * (isz + INDEX_BYTES)  # values and int64 indices
        return Case(lambda: torch.topk(x, k, dim=-1), m, m * isz + kept, kept, {"row": x.shape[1], "k": k})
    if op in _FLAT:
        x = _randn((n,), device, dt)
        if op in ("mul", "copy_"):
            y = _randn((n,), device, dt)
            if op == "copy_":  # into a tensor that exists: no fresh output
                return Case(lambda: y.copy_(x), n, 2 * n * isz, 0, {})
            return Case(lambda: x * y, n, 3 * n * isz, n * isz, {})
        fn = {"copy": x.clone, "exp": lambda: torch.exp(x), "add": lambda: x + 1, "sum": x.sum,
              "zeros": lambda: torch.zeros(n, device=device, dtype=x.dtype)}[op]
        moved = {"sum": 1, "zeros": 1}.get(op, 2)
        return Case(fn, n, moved * n * isz, (op != "sum") * n * isz, {})
    return _shaped_case(op, n, device, dt, isz)


def _shaped_case(op: str, n: int, device: str, dt: str, isz: int) -> Case:
    """The element ops that need a shape, an index or a mask."""
    import torch

    if op == "copy_t":  # (T, heads, head_dim) -> (heads, T, head_dim), made contiguous
        x = _randn((max(1, n // 512), 8, 64), device, dt)
        m = x.numel()
        return Case(lambda: x.transpose(0, 1).contiguous(), m, 2 * m * isz, m * isz, {})
    if op == "cat":
        a, b = _randn((max(1, n // 2),), device, dt), _randn((max(1, n // 2),), device, dt)
        return Case(lambda: torch.cat((a, b)), 2 * a.numel(), 4 * a.numel() * isz, 2 * a.numel() * isz, {})
    if op == "cumsum":
        x = _randn(_rows_of(n, 256), device, dt)
        return Case(lambda: torch.cumsum(x, dim=0), x.numel(), 2 * x.numel() * isz, x.numel() * isz, {})
    if op == "amax":
        x = _randn(_rows_of(n, 64), device, dt)
        return Case(lambda: x.amax(dim=-1), x.numel(), (x.numel() + x.shape[0]) * isz, x.shape[0] * isz,
                    {"row": x.shape[1]})
    if op == "masked_fill":  # a causal mask of L x L broadcast over the leading dim, as attention scores
        L = 64 if n >= 4096 else 16
        x = _randn((max(1, n // (L * L)), L, L), device, dt)
        mask = torch.ones(L, L, dtype=torch.bool, device=device).triu(1)
        return Case(lambda: x.masked_fill(mask, float("-inf")), x.numel(), 2 * x.numel() * isz + L * L,
                    x.numel() * isz, {})
    x = _randn(_rows_of(n, 64), device, dt)
    rows, m = x.shape[0], x.numel()
    if op == "index_select":
        idx = torch.randint(rows, (rows,), device=device)
        return Case(lambda: x.index_select(0, idx), m, 2 * m * isz + rows * INDEX_BYTES, m * isz, {})
    if op == "gather":  # 16 of each row of 64
        idx = torch.randint(64, (rows, 16), device=device)
        return Case(lambda: torch.gather(x, 1, idx), m, m * isz + idx.numel() * (INDEX_BYTES + isz),
                    idx.numel() * isz, {})
    src = _randn(x.shape, device, dt)
    if op == "index_add":
        idx = torch.randint(rows, (rows,), device=device)
        return Case(lambda: x.index_add_(0, idx, src), m, 3 * m * isz + rows * INDEX_BYTES, 0, {})
    idx = torch.randint(64, x.shape, device=device)  # scatter_add
    return Case(lambda: x.scatter_add_(1, idx, src), m, 3 * m * isz + m * INDEX_BYTES, 0, {})


def _vector_step(device, dt, op, n, kw, row: int = 0, k: int = 0):
    def step():
        case = _vector_case(op, n, device, dt, row, k)
        tm = measure(case.fn, device, **kw)
        t = tm.median_s
        return {"op": op, "dtype": TORCH_NAMES[dt], "elems": case.elems, **case.keys, "ms": t * 1e3,
                "GBps": case.bytes / t / 1e9, "bytes": case.bytes, "out_bytes": case.out_bytes,
                "min_ms": tm.min_s * 1e3}
    return step


_VIEWS_PER_CALL = 3


def _tiny_call(device: str, host: str) -> tuple:
    """(a call of tiny ops of one host class, ops per call)."""
    import torch

    x = torch.randn(16, 16, device=device)
    if host == "view":
        return (lambda: (x.view(256), x.t(), x.expand(2, 16, 16))), _VIEWS_PER_CALL
    if host == "sdpa":
        import torch.nn.functional as F

        q = x.view(1, 1, 16, 16)
        return (lambda: F.scaled_dot_product_attention(q, q, q)), 1
    if host == "index":
        idx = torch.tensor([0, 3, 5], device=device)
        return (lambda: x.index_select(0, idx)), 1
    if host == "module":  # nn.Linear called as a module: the module's own time is the excess over the matmul row
        linear = torch.nn.Linear(16, 16, bias=False, device=device)
        return (lambda: linear(x)), 1
    if host in ("autograd", "backward"):  # a chain of x * c from a leaf, then its backward (fit.CHAIN)
        return _chain_call(x, CHAIN if host == "autograd" else 1), 1
    return ((lambda: x @ x) if host == "matmul" else (lambda: x + 1)), 1


def _chain_call(x, n: int) -> Callable[[], None]:
    """A call of ``n`` element-wise ops from a leaf, forward and backward (autograd on, under the
    calibration's no_grad), its gradient cleared first as a training step does."""
    import torch

    leaf, seed = x.clone().requires_grad_(True), torch.ones_like(x)

    def chain() -> None:
        leaf.grad = None
        with torch.enable_grad():
            y = leaf
            for _ in range(n):
                y = y * 1.5
            y.backward(seed)

    return chain


HOST_ROUNDS = 7  # rounds of the host-time rows: each times every tiny call once


def _host_rows(device: str, classes: tuple, n: int, budget_s: float) -> list:
    """The ``TINY`` row of each host class of ``classes`` (``op`` (element-wise), ``matmul``, ``view``,
    ``sdpa``, ``index``: tiny ops issued back to back) and, with every class, the ``SEQUENCE_ROW``
    (their ops in turn, each feeding the next, as a layer issues them), microseconds per op. The calls
    are timed together, in ``HOST_ROUNDS`` rounds that each time every call for a batch of at least
    ``n`` calls and ``quiet.SLICE_S`` seconds (or ``budget_s``, if shorter); a row is its fastest
    batch of those during which other processes left the CPU alone (``quiet.CpuWatch``; of all, if
    none did), so that every row, and the sequence's excess over them, is taken at the same pace of
    the machine."""
    calls = {TINY + c: _tiny_call(device, c) for c in classes}
    if set(classes) == set(HOST_CLASSES):
        calls[SEQUENCE_ROW] = _sequence_call(device)
    sizes = {op: _batch_size(fn, n, min(SLICE_S, budget_s), device) for op, (fn, _) in calls.items()}
    quiet: dict = {op: [] for op in calls}
    disturbed: dict = {op: [] for op in calls}
    watch = CpuWatch()
    for _ in range(HOST_ROUNDS):
        for op, (fn, per_call) in calls.items():
            watch.start()
            for _ in range(sizes[op]):
                fn()
            synchronize(device)
            (disturbed if watch.disturbed() else quiet)[op].append(watch.elapsed() / (sizes[op] * per_call))
    rows = [{"op": op, "us_per_op": min(quiet[op] or disturbed[op]) * 1e6} for op in calls]
    if SEQUENCE_ROW in calls:
        rows[-1]["classes"] = dict(SEQUENCE_CLASSES)
    return rows


def _batch_size(fn: Callable[[], object], n: int, seconds: float, device: str) -> int:
    """How many calls of ``fn`` (warmed up here) take at least ``seconds``, and at least ``n``."""
    for _ in range(min(n, 200)):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return max(n, math.ceil(n * seconds / max(time.perf_counter() - t0, 1e-9)))


SEQUENCE_CLASSES = {"matmul": 1, "op": 1, "view": 4, "sdpa": 1, "index": 1}  # ops per turn of ``_sequence_call``


def _sequence_call(device: str) -> tuple:
    """(a turn of the tiny op of each host class, each feeding the next: a matmul, an element-wise op,
    views, SDPA, an index op; ops per turn)."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(16, 16, device=device)
    idx = torch.tensor([0, 3, 5], device=device)

    def turn():
        y = x @ x
        z = y + 1
        q = z.view(256).view(1, 1, 16, 16)
        a = F.scaled_dot_product_attention(q, q, q).view(16, 16).t()
        return a.index_select(0, idx)

    return turn, sum(SEQUENCE_CLASSES.values())


def _sdpa_step(device, dt, backend, B, H, T, dh, causal, kw, queries: int = 0):
    """An SDPA row; ``queries`` > 0: that many queries per head against T keys (decode: 1), not causal."""
    def step():
        import torch.nn.functional as F

        q = _randn((B, H, queries or T, dh), device, dt)
        k, v = (_randn((B, H, T, dh), device, dt) for _ in range(2))
        forced = "auto" if backend == "default" else backend

        def fn():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        with sdpa_context(forced):  # entered once: the calls do not pay it, as a layer's do not
            used = sdpa_backends_used(fn)  # raises if the forced backend cannot run this shape
            tm = measure(fn, device, **kw)
        t = tm.median_s
        flops = 4.0 * B * H * (queries or T) * T * dh * (0.5 if causal else 1.0)
        row = {"op": "sdpa", "backend": backend, "dtype": TORCH_NAMES[dt], "B": B, "H": H, "T": T,
               **({"Tq": queries} if queries else {}), "dh": dh, "causal": causal, "ms": t * 1e3,
               "tflops": flops / t / 1e12, "min_ms": tm.min_s * 1e3}
        if backend == "default" and used:
            row["ran"] = used
        return row
    return step


def _sdpa_backward_step(device, dt, backend, B, H, T, dh, causal, kw):
    """An ``SDPA_BACKWARD_ROW``: the backward of one fused SDPA call alone (its forward run once, its graph
    kept, the gradients of Q, K and V taken again and again); FLOPs as the fit counts them
    (``fit.backward_flops``: 2.5x the forward's)."""
    def step():
        import torch
        import torch.nn.functional as F

        with torch.enable_grad(), sdpa_context(backend):
            q, k, v = (_randn((B, H, T, dh), device, dt).requires_grad_() for _ in range(3))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            grad = torch.randn_like(out)
            tm = measure(lambda: torch.autograd.grad(out, (q, k, v), grad, retain_graph=True), device, **kw)
        t = tm.median_s
        row = {"op": SDPA_BACKWARD_ROW, "backend": backend, "dtype": TORCH_NAMES[dt], "B": B, "H": H, "T": T,
               "dh": dh, "causal": causal, "ms": t * 1e3, "min_ms": tm.min_s * 1e3}
        return {**row, "tflops": backward_flops(row) / t / 1e12}
    return step


ITEM_SHAPE = (8, 1024, 64)  # query rows, keys, head dim of one item of the ``sdpa_items`` rows


def _items_step(device, dt, kw):
    """The ``sdpa_items`` rows (``fit.fit_attention_speedup``): one flash SDPA call over one (batch, head)
    item of ``ITEM_SHAPE``, and over ``torch.get_num_threads()`` of them (as many batches), each timed in
    two rounds, in turn, keeping its faster (the first timing of a call here runs slow); none on one thread."""
    def step():
        import torch
        import torch.nn.functional as F

        threads = torch.get_num_threads()
        if threads < 2:
            return []
        rows_q, keys, dh = ITEM_SHAPE
        calls = {}
        for B in (threads, 1):
            q, kv = _randn((B, 1, rows_q, dh), device, dt), _randn((B, 1, keys, dh), device, dt)
            calls[B] = lambda q=q, kv=kv: F.scaled_dot_product_attention(q, kv, kv)
        timed: dict = {}
        with sdpa_context("flash"):
            for _ in range(2):
                for B, fn in calls.items():
                    timed.setdefault(B, []).append(measure(fn, device, **kw))
        return [{"op": ITEMS_ROW, "backend": "flash", "dtype": TORCH_NAMES[dt], "B": B, "H": 1, "Tq": rows_q,
                 "T": keys, "dh": dh, "threads": threads, "ms": min(t.median_s for t in ts) * 1e3,
                 "min_ms": min(t.min_s for t in ts) * 1e3} for B, ts in sorted(timed.items())]
    return step


# -- the profile ---------------------------------------------------------------------------------
def base_profile(device: str, rows: list, name: Optional[str] = None):
    """The built-in profile to fit, with this machine's name, memory size and, where no datasheet
    backs it (CPU, unknown device), peaks raised to what was measured; on a CPU, ``host_sync``."""
    from ..costmodel.fit import MATMUL_OPS, measured_s, row_dtype
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
            if r.get("op") not in MATMUL_OPS or not measured_s(r):
                continue
            dt = row_dtype(r)
            rate = r["tflops"] * 1e12
            peak[dt] = max(peak[dt], rate)
            if dt == "fp32":
                vector = max(vector, rate)
        copies = [r["GBps"] * 1e9 for r in rows if r.get("op") in ("copy", "exp", "add") and r.get("GBps")]
        upd.update(peak_flops=peak, vector_flops=vector,
                   mem_bandwidth=max([base.mem_bandwidth] + copies))
    if device == "cpu":  # eager ops run to their end on the calling thread: host and kernel do not overlap
        upd["host_sync"] = True
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
        elif op in ELEMENT_OPS and r.get("GBps"):
            k = f"{op} GB/s (largest, {r['dtype']})"
            if r["elems"] >= out.get("_elems_" + op, 0):
                out["_elems_" + op] = r["elems"]
                out[k] = r["GBps"]
        elif op in HOST_ROWS or op == SEQUENCE_ROW:
            out[f"{op} us/op"] = r["us_per_op"]
        elif op in ("sdpa", SDPA_BACKWARD_ROW):
            k = f"{op} {r['backend']} TFLOP/s (best)"
            out[k] = max(out.get(k, 0.0), r["tflops"])
    return {k: v for k, v in out.items() if not k.startswith("_") and not (isinstance(v, float) and math.isnan(v))}
