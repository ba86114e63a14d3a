"""Predicted time of a layer's kernels on a hardware profile.

Per kernel, on the device (all shares of the profile's published peaks, see ``hardware.py``):

- ``matmul`` (one matmul, batch x (m x k) @ (k x n)):
  ``latency + k_step * min(k, k_cap) + max(flops / (peak[dtype] * eff_mm), bytes / (bw * mem_eff))``,
  ``eff_mm = max_eff * m/(m+mn_half) * n/(n+mn_half) * k/(k+k_half)``; the k term is the latency
  of the serial reduction loop, counted with the fixed latency.
- ``attention`` (a fused kernel, FlashAttention / cuDNN / efficient): ``latency + max(flops_mm' /
  (peak * eff_attn), bytes / (bw * mem_eff))``, ``eff_attn = max_eff * dh/(dh+dh_half) *
  keys/(keys+keys_half)`` of the chosen backend (dh no larger than the largest head dim fitted,
  ``dh_cap``: no extrapolation); softmax FLOPs overlap the matmuls and are not
  charged; a masked kernel also computes the tiles its mask boundary crosses (``flops_mm'``).
- ``vector`` / ``copy``: ``latency[op kind] + max(flops / vector_flops, bytes / (bw * eff[op kind]))``
  (a kernel of several ops takes the slowest kind's); matmuls inside such a kernel are charged as
  above. The fixed latency is what makes the effective bandwidth fall for small tensors:
  ``bytes / (latency + bytes / (bw * eff))``.

The layer: ``mode="eager"`` (PyTorch eager, the default) replays the launch queue: the host
spends ``launch_overhead_s`` (``matmul_overhead_s`` for matmul and SDPA calls) issuing each kernel,
the device runs them in order as soon as they are issued and it is free, and the layer ends when
the last kernel does. Small kernels are then host-bound; a long kernel hides the host time of the
kernels queued behind it. ``mode="device"`` leaves the host out (CUDA graphs, a device timer such
as ``triton.testing.do_bench``).

Each kernel adds ``time_s`` to the layer (its start waiting for the host, plus its device time); that
is split into ``overhead_s`` (waiting for the host + fixed latencies) and its work, counted as
``compute_s`` when ``flops / rate >= bytes / bandwidth`` and as ``memory_s`` otherwise. The three
sum to ``time_s``; the layer's ``bound`` is the largest of them.

The profile's numbers are compiled once per (dtype, backend) into plain floats
(``compiled``, kept on the profile by ``Hardware.cached``). ``matmul_parts``, ``attention_parts``
and ``vector_parts`` give one kernel's (latency, compute, memory) seconds; ``fit.py`` fits a
profile to microbenchmark rows with the same functions.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Optional

from .hardware import AttentionEfficiency, Hardware, HardwareError, MatmulEfficiency
from .units import DTYPES

MODES = ("eager", "device")


class KernelTime(NamedTuple):
    """One kernel's share of the layer's time."""

    name: str
    time_s: float
    bound: str  # "compute" | "memory" | "overhead"
    compute_s: float
    memory_s: float
    overhead_s: float
    kind: str


class TimeEstimate:
    """Predicted time of a layer. ``compute_s + memory_s + overhead_s == time_s``.

    ``per_kernel``: a ``KernelTime`` per kernel, in launch order (built on first use, so a sweep
    that only reads ``time_s`` does not pay for it).
    """

    __slots__ = ("time_s", "compute_s", "memory_s", "overhead_s", "bound", "host_s", "device_s", "mode",
                 "backend", "_rows", "_per_kernel")

    def __init__(self, time_s: float, compute_s: float, memory_s: float, overhead_s: float, bound: str,
                 rows: list = (), host_s: float = 0.0, device_s: float = 0.0, mode: str = "eager",
                 backend: str = ""):
        self.time_s = time_s
        self.compute_s = compute_s
        self.memory_s = memory_s
        self.overhead_s = overhead_s
        self.bound = bound  # "compute" | "memory" | "overhead": the largest of the three
        self.host_s = host_s  # host time issuing the kernels (eager mode)
        self.device_s = device_s  # sum of the kernels' device times
        self.mode = mode
        self.backend = backend  # fused attention backend assumed
        self._rows = rows
        self._per_kernel = None

    @property
    def per_kernel(self) -> list:
        if self._per_kernel is None:
            self._per_kernel = [KernelTime(*r) for r in self._rows]
        return self._per_kernel

    def as_dict(self) -> dict:
        return {"time_s": self.time_s, "compute_s": self.compute_s, "memory_s": self.memory_s,
                "overhead_s": self.overhead_s, "bound": self.bound, "host_s": self.host_s,
                "device_s": self.device_s, "mode": self.mode, "backend": self.backend,
                "per_kernel": [k._asdict() for k in self.per_kernel]}

    def __repr__(self) -> str:
        return (f"TimeEstimate(time_s={self.time_s:.6g}, compute_s={self.compute_s:.6g}, "
                f"memory_s={self.memory_s:.6g}, overhead_s={self.overhead_s:.6g}, bound={self.bound!r}, "
                f"kernels={len(self._rows)}, mode={self.mode!r}, backend={self.backend!r})")


# -- a profile compiled to plain floats ------------------------------------------------------------

def matmul_params(peak: float, bw: float, e: MatmulEfficiency) -> tuple:
    """``e`` on a profile's peak FLOP/s and bandwidth, as ``matmul_parts`` reads it: (rate = peak *
    max_eff, mn_half, k_half, k_step_s, k_serial_cap, bytes/s = bw * mem_eff, latency_s)."""
    return (peak * e.max_eff, e.mn_half, e.k_half, e.k_step_s, e.k_serial_cap, bw * e.mem_eff, e.latency_s)


def attention_params(peak: float, bw: float, e: AttentionEfficiency) -> tuple:
    """``e`` on a profile's peak FLOP/s and bandwidth, as ``attention_parts`` reads it: (rate = peak *
    max_eff, dh_half, keys_half, causal_tile, bytes/s = bw * mem_eff, latency_s, dh_cap or inf)."""
    return (peak * e.max_eff, e.dh_half, e.keys_half, e.causal_tile, bw * e.mem_eff, e.latency_s,
            e.dh_cap or math.inf)


class CompiledProfile:
    """A profile's numbers for one dtype and attention backend as plain floats, which the
    predictor's inner loop reads instead of the pydantic fields."""

    __slots__ = ("peak", "vflops", "mm", "at", "vlat", "vbw", "kinds", "host_op", "host_mm", "host_view")

    def __init__(self, hw: Hardware, dtype: str, backend: Optional[str]):
        if dtype not in hw.peak_flops:
            raise HardwareError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        peak = hw.tensor_peak(dtype)
        bw = hw.mem_bandwidth
        self.peak, self.vflops = peak, hw.vector_flops
        self.mm = matmul_params(peak, bw, hw.matmul_eff(dtype))
        self.at = attention_params(peak, bw, hw.attention_eff(backend))
        self.vlat = hw.kernel_latency_s
        self.vbw = bw * hw.mem_efficiency
        # op kind -> (latency, bandwidth), for the kinds the profile knows apart
        self.kinds = {k: (hw.op_latency(k), bw * hw.op_eff(k)) for k in {*hw.vector_eff, *hw.vector_latency}}
        self.host_op, self.host_mm = hw.launch_overhead_s, hw.host_matmul_s
        self.host_view = hw.view_overhead_s or 0.0


def compiled(hw: Hardware, dtype: str, backend: Optional[str] = None) -> CompiledProfile:
    """``hw`` compiled for ``dtype`` and ``backend`` (None: its default backend), built on first
    use and kept on the profile by ``Hardware.cached``. HardwareError: unknown dtype or backend."""
    return hw.cached(("timing", dtype, backend), CompiledProfile, hw, dtype, backend)


# -- per-kernel device time: (latency, compute, memory) ---------------------------------------------

def matmul_parts(p: tuple, b: float, m: float, k: float, n: float, flops: float, nbytes: float) -> tuple:
    """(latency, compute, memory) seconds of one matmul kernel (formula: ``MatmulEfficiency``); ``p``:
    ``matmul_params``."""
    rate, mn_half, k_half, k_step, k_cap, mbw, lat = p
    if flops <= 0.0 or k <= 0:
        return lat, 0.0, nbytes / mbw
    eff = (m / (m + mn_half)) * (n / (n + mn_half)) * (k / (k + k_half))
    return lat + k_step * (k if k < k_cap else k_cap), flops / (rate * eff), nbytes / mbw


def attention_parts(p: tuple, dh: float, keys: float, fraction: float, flops_mm: float,
                    nbytes: float) -> tuple:
    """(latency, compute, memory) seconds of one fused attention kernel (formula:
    ``AttentionEfficiency``); ``p``: ``attention_params``; ``fraction`` < 1: a masked kernel's share
    of the dense work."""
    rate, dh_half, keys_half, tile, abw, lat, dh_cap = p
    if fraction < 1.0 and keys > 0:
        dense = flops_mm / fraction
        flops_mm = min(dense, flops_mm + 0.5 * tile / keys * dense)
    if dh > dh_cap:
        dh = dh_cap
    eff = (dh / (dh + dh_half)) * (keys / (keys + keys_half)) if dh > 0 and keys > 0 else 1.0
    return lat, flops_mm / (rate * eff) if flops_mm > 0 else 0.0, nbytes / abw


def vector_parts(lat: float, vflops: float, bw: float, flops: float, nbytes: float) -> tuple:
    """(latency, compute, memory) seconds of one non-matmul kernel reaching bandwidth ``bw``."""
    return lat, flops / vflops, nbytes / bw


def kernel_s(parts: tuple) -> float:
    """A kernel's device time from its (latency, compute, memory): the work overlaps, the latency adds."""
    lat, comp, mem = parts
    return lat + (comp if comp > mem else mem)


def _kernel_parts(c: CompiledProfile, k) -> tuple:
    kind = k.kind
    if kind == "view":  # host-only ops: no device time, the host issues each of them
        return 0.0, 0.0, 0.0, c.host_view * k.ops[0].elems
    if kind == "matmul":
        b, m, kk, n = k.ops[0].mm
        return matmul_parts(c.mm, b, m, kk, n, k.flops, k.bytes) + (c.host_mm,)
    if kind == "attention":
        sc = None
        for op in k.ops:
            if op.mm is not None and op.kind == "matmul":
                if "scores" in op.name:
                    sc = op
                    break
                if sc is None:
                    sc = op
        if sc is not None:
            _, _, dh, keys = sc.mm
            return attention_parts(c.at, dh, keys, sc.fraction, k.flops_matmul, k.bytes) + (c.host_mm,)
    # vector / copy (and an attention kernel without a matmul, which should not exist)
    compute = 0.0
    lat, bw = c.vlat, c.vbw
    kinds = c.kinds
    for op in k.ops:
        if op.kind == "matmul" and op.mm is not None:
            b, m, kk, n = op.mm
            ml, mc, _ = matmul_parts(c.mm, b, m, kk, n, op.flops, 0.0)
            compute += mc
            if ml > lat:
                lat = ml
        else:
            compute += op.flops / c.vflops
            if kinds:
                lb = kinds.get(op.kind)
                if lb is not None:
                    if lb[0] > lat:
                        lat = lb[0]
                    if lb[1] < bw:
                        bw = lb[1]
    return lat, compute, k.bytes / bw, c.host_op


def predict(kernels: Iterable, hw: Hardware, dtype: str = "bf16", *, backend: Optional[str] = None,
            mode: str = "eager") -> TimeEstimate:
    """Predicted time of ``kernels`` (``analysis.kernels``, in launch order) on ``hw`` in ``dtype``.

    ``backend``: the fused-attention backend (default ``hw.attention_backend``); ``mode``: "eager"
    (host issues each kernel) or "device" (device time only). See the module docstring.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    c = compiled(hw, dtype, backend)
    eager = mode == "eager"
    rate, mn_half, k_half, k_step, k_cap, mbw, mlat = c.mm
    host_mm = c.host_mm
    host = gpu = 0.0
    comp_s = mem_s = over_s = dev_s = 0.0
    rows = []
    append = rows.append
    for k in kernels:
        if k.kind == "matmul":  # matmul_parts, inlined: the common case
            op = k.ops[0]
            _, m, kk, n = op.mm
            flops = k.flops
            memory = k.bytes / mbw
            if flops > 0.0 and kk > 0:
                lat = mlat + k_step * (kk if kk < k_cap else k_cap)
                compute = flops / (rate * (m / (m + mn_half)) * (n / (n + mn_half)) * (kk / (kk + k_half)))
            else:
                lat, compute = mlat, 0.0
            h = host_mm
        else:
            lat, compute, memory, h = _kernel_parts(c, k)
        if eager:
            host += h
            wait = host - gpu if host > gpu else 0.0
            over = wait + lat
        else:
            over = lat
        if compute >= memory:
            work = compute
            comp_s += work
            wb = "compute" if work >= over else "overhead"
        else:
            work = memory
            mem_s += work
            wb = "memory" if work >= over else "overhead"
        over_s += over
        dev_s += lat + work
        inc = over + work
        gpu += inc
        append((k.name, inc, wb, compute, memory, over, k.kind))
    bound = "compute" if comp_s >= mem_s and comp_s >= over_s else "memory" if mem_s >= over_s else "overhead"
    return TimeEstimate(gpu, comp_s, mem_s, over_s, bound, rows, host if eager else 0.0, dev_s, mode,
                        backend or hw.attention_backend)
