"""Predicted time of a layer's kernels on a hardware profile, and the fit of a profile to measurements.

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

``fit_profile`` fits the efficiencies of a profile to microbenchmark rows (the format of
``data/h100-microbench-2026-11-22.json``) with a robust (pseudo-Huber) loss on log(time), minimised
by a pattern search in pure Python; ``predict_row`` / ``row_errors`` compare a profile with rows.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Optional

from .hardware import AttentionEfficiency, Hardware, HardwareError, MatmulEfficiency

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


# -- compiled parameters (plain floats, cached on the profile) -------------------------------------

class _C:
    __slots__ = ("peak", "vflops", "mm", "at", "vlat", "vbw", "kinds", "host_op", "host_mm")


def _mm_tuple(peak: float, bw: float, e: MatmulEfficiency) -> tuple:
    return (peak * e.max_eff, e.mn_half, e.k_half, e.k_step_s, e.k_serial_cap, bw * e.mem_eff, e.latency_s)


def _at_tuple(peak: float, bw: float, e: AttentionEfficiency) -> tuple:
    return (peak * e.max_eff, e.dh_half, e.keys_half, e.causal_tile, bw * e.mem_eff, e.latency_s,
            e.dh_cap or math.inf)


def _compile(hw: Hardware, dtype: str, backend: Optional[str]) -> _C:
    key = (dtype, backend)
    try:
        cache = hw.__pydantic_private__["_cache"]  # 50x faster than hw._cache (pydantic's __getattr__)
    except (AttributeError, KeyError, TypeError):
        cache = hw._cache
    c = cache.get(key)
    if c is not None:
        return c
    if dtype not in hw.peak_flops:
        raise HardwareError(f"dtype {dtype!r} is not one of bf16, fp16, fp32")
    c = _C()
    peak = hw.tensor_peak(dtype)
    bw = hw.mem_bandwidth
    c.peak, c.vflops = peak, hw.vector_flops
    c.mm = _mm_tuple(peak, bw, hw.matmul_eff(dtype))
    c.at = _at_tuple(peak, bw, hw.attention_eff(backend))
    c.vlat = hw.kernel_latency_s
    c.vbw = bw * hw.mem_efficiency
    # op kind -> (latency, bandwidth), for the kinds the profile knows apart
    c.kinds = {k: (hw.op_latency(k), bw * hw.op_eff(k)) for k in {*hw.vector_eff, *hw.vector_latency}}
    c.host_op, c.host_mm = hw.launch_overhead_s, hw.host_matmul_s
    cache[key] = c
    return c


# -- per-kernel device time: (latency, compute, memory) ---------------------------------------------

def _mm_parts(p: tuple, b: float, m: float, k: float, n: float, flops: float, nbytes: float) -> tuple:
    rate, mn_half, k_half, k_step, k_cap, mbw, lat = p
    if flops <= 0.0 or k <= 0:
        return lat, 0.0, nbytes / mbw
    eff = (m / (m + mn_half)) * (n / (n + mn_half)) * (k / (k + k_half))
    return lat + k_step * (k if k < k_cap else k_cap), flops / (rate * eff), nbytes / mbw


def _attn_parts(p: tuple, dh: float, keys: float, fraction: float, flops_mm: float, nbytes: float) -> tuple:
    rate, dh_half, keys_half, tile, abw, lat, dh_cap = p
    if fraction < 1.0 and keys > 0:
        dense = flops_mm / fraction
        flops_mm = min(dense, flops_mm + 0.5 * tile / keys * dense)
    if dh > dh_cap:
        dh = dh_cap
    eff = (dh / (dh + dh_half)) * (keys / (keys + keys_half)) if dh > 0 and keys > 0 else 1.0
    return lat, flops_mm / (rate * eff) if flops_mm > 0 else 0.0, nbytes / abw


def _vector_parts(lat: float, vflops: float, bw: float, flops: float, nbytes: float) -> tuple:
    return lat, flops / vflops, nbytes / bw


def _kernel_parts(c: _C, k) -> tuple:
    kind = k.kind
    if kind == "matmul":
        b, m, kk, n = k.ops[0].mm
        return _mm_parts(c.mm, b, m, kk, n, k.flops, k.bytes) + (c.host_mm,)
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
            return _attn_parts(c.at, dh, keys, sc.fraction, k.flops_matmul, k.bytes) + (c.host_mm,)
    # vector / copy (and an attention kernel without a matmul, which should not exist)
    compute = 0.0
    lat, bw = c.vlat, c.vbw
    kinds = c.kinds
    for op in k.ops:
        if op.kind == "matmul" and op.mm is not None:
            b, m, kk, n = op.mm
            ml, mc, _ = _mm_parts(c.mm, b, m, kk, n, op.flops, 0.0)
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
    c = _compile(hw, dtype, backend)
    eager = mode == "eager"
    rate, mn_half, k_half, k_step, k_cap, mbw, mlat = c.mm
    host_mm = c.host_mm
    host = gpu = 0.0
    comp_s = mem_s = over_s = dev_s = 0.0
    rows = []
    append = rows.append
    for k in kernels:
        if k.kind == "matmul":  # inlined _mm_parts: the common case
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


# -- microbenchmark rows ---------------------------------------------------------------------------
# Rows as in /work/shared/data/h100-microbench-*.json (README beside it), timed on the device
# (do_bench: no host time, L2 flushed): "mm" (M, K, N), "bmm_qk" / "bmm_pv" (BH, T, dh), "sdpa"
# (backend, B, H, T, dh, causal), element ops by "elems", "eager_tiny_op" / "eager_tiny_matmul".

TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
                "bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}
ITEMSIZE = {"bf16": 2, "fp16": 2, "fp32": 4}
# element op -> (op kind as in graph.py, tensors moved per element: read + written)
ELEMENT_OPS = {"copy": ("copy", 2), "exp": ("elementwise", 2), "add": ("elementwise", 2),
               "mul": ("elementwise", 2), "relu": ("elementwise", 2), "softmax": ("softmax", 2),
               "sum": ("reduction", 1), "mean": ("reduction", 1), "max": ("reduction", 1),
               "cumsum": ("scan", 2)}
FUSED_BACKENDS = ("cudnn", "flash", "efficient")


def row_dtype(row: dict) -> str:
    return TORCH_DTYPES.get(str(row.get("dtype", "bfloat16")), "bf16")


def row_group(row: dict) -> Optional[str]:
    """Which family a row belongs to: mm, bmm, sdpa, vector, eager (None: not a timing row)."""
    op = row.get("op")
    if op == "mm":
        return "mm"
    if op in ("bmm_qk", "bmm_pv"):
        return "bmm"
    if op == "sdpa":
        return "sdpa"
    if op in ELEMENT_OPS and "elems" in row:
        return "vector"
    if op in ("eager_tiny_op", "eager_tiny_matmul"):
        return "eager"
    return None


def _row_mm(row: dict) -> tuple:
    """(b, m, k, n, flops, bytes) of a matmul row."""
    isz = ITEMSIZE[row_dtype(row)]
    if row["op"] == "mm":
        b, m, k, n = 1, row["M"], row["K"], row["N"]
    elif row["op"] == "bmm_qk":
        b, m, k, n = row["BH"], row["T"], row["dh"], row["T"]
    else:  # bmm_pv
        b, m, k, n = row["BH"], row["T"], row["T"], row["dh"]
    return b, m, k, n, 2.0 * b * m * k * n, b * (m * k + k * n + m * n) * isz


def _row_sdpa(row: dict) -> tuple:
    """(dh, keys, fraction, flops_mm, bytes) of an SDPA row (FlashAttention's convention)."""
    isz = ITEMSIZE[row_dtype(row)]
    B, H, T, dh = row["B"], row["H"], row["T"], row["dh"]
    frac = 0.5 if row.get("causal") else 1.0
    return dh, T, frac, 4.0 * B * H * T * T * dh * frac, 4.0 * B * H * T * dh * isz


def _row_vector(row: dict) -> tuple:
    """(op kind, bytes) of an element-op row."""
    kind, tensors = ELEMENT_OPS[row["op"]]
    return kind, tensors * row["elems"] * ITEMSIZE[row_dtype(row)]


def predict_row(row: dict, hw: Hardware, backend: Optional[str] = None) -> Optional[float]:
    """Predicted seconds of one microbenchmark row, timed as it was (device time; the eager rows:
    host time per op). ``sdpa`` rows use their own backend, ``default`` rows ``hw.attention_backend``."""
    g = row_group(row)
    if g is None:
        return None
    if g == "eager":
        return hw.host_matmul_s if row["op"] == "eager_tiny_matmul" else hw.launch_overhead_s
    c = _compile(hw, row_dtype(row), backend if g != "sdpa" else _row_backend(row, hw, backend))
    if g in ("mm", "bmm"):
        lat, comp, mem = _mm_parts(c.mm, *_row_mm(row))
    elif g == "sdpa":
        lat, comp, mem = _attn_parts(c.at, *_row_sdpa(row))
    else:
        kind, nbytes = _row_vector(row)
        lat, bw = c.kinds.get(kind, (c.vlat, c.vbw))
        lat, comp, mem = _vector_parts(lat, c.vflops, bw, 0.0, nbytes)
    return lat + (comp if comp > mem else mem)


def _row_backend(row: dict, hw: Hardware, backend: Optional[str]) -> Optional[str]:
    b = row.get("backend")
    if b in (None, "default"):
        return backend
    return b


def measured_s(row: dict) -> Optional[float]:
    if "ms" in row:
        return row["ms"] * 1e-3
    if "us_per_op" in row:
        return row["us_per_op"] * 1e-6
    return None


def row_errors(rows: list, hw: Hardware) -> dict:
    """Relative errors (pred - meas) / meas by group: mm:<dtype>, bmm, sdpa:<backend>, vector:<op>,
    eager. Rows whose backend the profile lacks are left out."""
    out: dict = {}
    for r in rows:
        g = row_group(r)
        if g is None:
            continue
        if g == "sdpa" and r.get("backend") not in (None, "default") and r.get("backend") not in hw.attention:
            continue
        p, m = predict_row(r, hw), measured_s(r)
        if p is None or not m:
            continue
        key = {"mm": f"mm:{row_dtype(r)}", "sdpa": f"sdpa:{r.get('backend', 'default')}",
               "vector": f"vector:{r['op']}"}.get(g, g)
        out.setdefault(key, []).append((p - m) / m)
    return out


def summarize(errs: list) -> dict:
    """Median and 90th percentile of |relative error|, and the count."""
    a = sorted(abs(e) for e in errs)
    if not a:
        return {"n": 0, "median": None, "p90": None, "max": None}
    return {"n": len(a), "median": _quantile(a, 0.5), "p90": _quantile(a, 0.9), "max": a[-1]}


def _quantile(a: list, q: float) -> float:
    """Linear-interpolated quantile of a sorted list."""
    x = q * (len(a) - 1)
    i = int(x)
    j = min(i + 1, len(a) - 1)
    return a[i] + (a[j] - a[i]) * (x - i)


# -- fitting ---------------------------------------------------------------------------------------

def _pattern_search(loss, x0: list, lo: list, hi: list, step: float = math.log(2.0),
                    tol: float = 1e-3, max_evals: int = 20000, prior: float = 1e-3) -> list:
    """Minimise ``loss(x) + prior * sum(log(x / x0)^2)`` over positive parameters within [lo, hi]
    by coordinate pattern search in log space (steps grow while they help, halve when nothing
    does). The small pull towards ``x0`` only settles parameters the data cannot tell apart.
    Deterministic; pure Python."""
    x = [min(max(v, a), b) for v, a, b in zip(x0, lo, hi)]
    ref = list(x)

    def f(y):
        return loss(y) + prior * sum(math.log(a / b) ** 2 for a, b in zip(y, ref))

    best = f(x)
    evals = 1
    while step > tol and evals < max_evals:
        improved = False
        for i in range(len(x)):
            for sgn in (1.0, -1.0):
                s = step
                while evals < max_evals:
                    y = list(x)
                    y[i] = min(max(x[i] * math.exp(sgn * s), lo[i]), hi[i])
                    if y[i] == x[i]:
                        break
                    v = f(y)
                    evals += 1
                    if v >= best:
                        break
                    best, x, improved = v, y, True
                    s *= 2.0
        if not improved:
            step /= 2.0
    return x


ROBUST_SCALE = 0.1  # relative error up to which the fit's loss is quadratic, linear beyond


def _robust(d: float) -> float:
    """Pseudo-Huber loss of a log error: ~d^2/2 below ROBUST_SCALE, ~|d| * scale beyond, so one
    odd row (a warm-up, a different kernel path) cannot drag the fit."""
    r = d / ROBUST_SCALE
    return ROBUST_SCALE * ROBUST_SCALE * (math.sqrt(1.0 + r * r) - 1.0)


def _sq_log(pairs: Iterable) -> float:
    s = 0.0
    for p, m in pairs:
        s += _robust(math.log(p / m))
    return s


def fit_profile(base: Hardware, rows: list, *, exclude_ops: Iterable = (), source: str = "") -> Hardware:
    """``base`` with its efficiencies fitted to measured microbenchmark rows; peaks are kept.

    Fits, for what the rows contain: host time per eager op and per eager matmul; the fixed
    latency of non-matmul kernels and the bandwidth share of each element-op kind (copy sets
    ``mem_efficiency``); per dtype, the matmul efficiency (on the ``mm`` rows; ``bmm`` rows are
    left out of the fit to check it); per SDPA backend, the attention efficiency, and the default
    backend as the one that best matches the ``default`` rows. ``exclude_ops`` names element ops
    (e.g. "cumsum") to leave out. Every share is capped at 1 of the published peak.
    """
    exclude = set(exclude_ops)
    rows = [r for r in rows if r.get("op") not in exclude and measured_s(r)]
    upd: dict = {}
    fitted: list = []
    bw = base.mem_bandwidth

    # host time per eager op
    for r in rows:
        if r["op"] == "eager_tiny_op":
            upd["launch_overhead_s"] = r["us_per_op"] * 1e-6
        elif r["op"] == "eager_tiny_matmul":
            upd["matmul_overhead_s"] = r["us_per_op"] * 1e-6
    if "launch_overhead_s" in upd or "matmul_overhead_s" in upd:
        fitted.append("eager host time per op")

    # element ops: a latency and a bandwidth share per op kind; copy's are the defaults
    vec = [(_row_vector(r), measured_s(r)) for r in rows if row_group(r) == "vector"]
    kinds = sorted({k for (k, _), _ in vec}, key=lambda k: (k != "copy", k))
    lat_eff: dict = {}
    for kind in kinds:
        pts = [(nb, m) for (k, nb), m in vec if k == kind]
        floor = lat_eff["copy"][0] if "copy" in lat_eff else 1e-7  # no kernel starts faster than a copy
        x0 = [max(floor, base.op_latency(kind)), base.op_eff(kind)]

        def vloss(x, pts=pts):
            return _sq_log((x[0] + nb / (bw * x[1]), m) for nb, m in pts)

        lat_eff[kind] = tuple(_pattern_search(vloss, x0, [floor, 1e-5], [1e-3, 1.0]))
    if lat_eff:
        dlat, deff = lat_eff.pop("copy", (base.kernel_latency_s, base.mem_efficiency))
        upd["kernel_latency_s"], upd["mem_efficiency"] = dlat, deff
        upd["vector_eff"] = {**base.vector_eff, **{k: e for k, (_, e) in lat_eff.items()}}
        upd["vector_latency"] = {**base.vector_latency, **{k: t for k, (t, _) in lat_eff.items()}}
        fitted.append(f"element ops ({', '.join(sorted({r['op'] for r in rows if row_group(r) == 'vector'}))})")

    # matmuls, per dtype, on the mm rows
    matmul = dict(base.matmul)
    done = []
    for dt in DTYPE_ORDER:
        mm = [(_row_mm(r), measured_s(r)) for r in rows if r["op"] == "mm" and row_dtype(r) == dt]
        if len(mm) < 8:
            continue
        peak = base.tensor_peak(dt)
        b0 = base.matmul_eff(dt)
        kcap = float(max(s[2] for s, _ in mm))
        x0 = [b0.max_eff, max(b0.mn_half, 1.0), max(b0.k_half, 1.0), max(b0.k_step_s, 1e-10), b0.mem_eff,
              max(b0.latency_s, 1e-6)]
        lo = [0.01, 1e-2, 1e-2, 1e-13, 0.05, 1e-6]
        hi = [1.0, 1e5, 1e5, 1e-6, 1.0, 1e-3]

        def mloss(x, mm=mm, peak=peak, kcap=kcap):
            p = (peak * x[0], x[1], x[2], x[3], kcap, bw * x[4], x[5])
            s = 0.0
            for (b, m_, k, n, fl, nb), meas in mm:
                lat, comp, mem = _mm_parts(p, b, m_, k, n, fl, nb)
                s += _robust(math.log((lat + (comp if comp > mem else mem)) / meas))
            return s

        x = _pattern_search(mloss, x0, lo, hi)
        matmul[dt] = MatmulEfficiency(max_eff=x[0], mn_half=x[1], k_half=x[2], k_step_s=x[3],
                                      k_serial_cap=kcap, mem_eff=x[4], latency_s=x[5])
        fitted.append(f"matmul {dt} ({len(mm)} mm rows)")
        done.append(dt)
    for a, b in (("fp16", "bf16"), ("bf16", "fp16")):  # same tensor-core rate: share a fit
        if b in done and a not in done:
            matmul[a] = matmul[b]
    upd["matmul"] = matmul

    # fused attention, per backend
    attention = dict(base.attention)
    sdpa = [r for r in rows if r["op"] == "sdpa"]
    mem_eff = upd.get("mem_efficiency", base.mem_efficiency)
    for be in sorted({r.get("backend") for r in sdpa} - {None, "default", "math"}):
        rs = [(_row_sdpa(r), measured_s(r), row_dtype(r)) for r in sdpa if r.get("backend") == be]
        if len(rs) < 4:
            continue
        a0 = attention.get(be, base.attention_eff() if base.attention else AttentionEfficiency())
        x0 = [a0.max_eff, max(a0.dh_half, 1.0), max(a0.keys_half, 1.0), max(a0.causal_tile, 1.0),
              max(a0.latency_s, 1e-6)]
        lo = [0.01, 1e-2, 1e-2, 1e-2, upd.get("kernel_latency_s", base.kernel_latency_s)]
        hi = [1.0, 1e4, 1e5, 1e5, 1e-3]
        peaks = {dt: base.tensor_peak(dt) for dt in DTYPE_ORDER}
        dh_cap = float(max(spec[0] for spec, _, _ in rs))

        def aloss(x, rs=rs, peaks=peaks, dh_cap=dh_cap):
            s = 0.0
            for spec, meas, dt in rs:
                p = (peaks[dt] * x[0], x[1], x[2], x[3], bw * mem_eff, x[4], dh_cap)
                lat, comp, mem = _attn_parts(p, *spec)
                s += _robust(math.log((lat + (comp if comp > mem else mem)) / meas))
            return s

        x = _pattern_search(aloss, x0, lo, hi)
        attention[be] = AttentionEfficiency(max_eff=x[0], dh_half=x[1], keys_half=x[2], causal_tile=x[3],
                                            dh_cap=dh_cap, mem_eff=mem_eff, latency_s=x[4])
        fitted.append(f"attention {be} ({len(rs)} sdpa rows)")
    upd["attention"] = attention
    if attention:
        default_rows = [r for r in sdpa if r.get("backend") == "default"]
        upd["attention_backend"] = _default_backend(attention, base, default_rows)

    what = "; ".join(fitted) or "nothing (no usable rows)"
    upd["calibration"] = f"fitted to {source or 'measured rows'}: {what}" + (
        f"; left out: {', '.join(sorted(exclude))}" if exclude else "")
    hw = base.model_copy(update=upd)
    return hw


DTYPE_ORDER = ("bf16", "fp16", "fp32")


def _default_backend(attention: dict, base: Hardware, default_rows: list) -> str:
    """The backend whose fit best matches the ``default`` rows; without them, the fastest one at a
    typical shape (head dim 128, 4096 keys, bf16)."""
    names = [b for b in FUSED_BACKENDS if b in attention] + [b for b in attention if b not in FUSED_BACKENDS]
    if default_rows:
        def err(b):
            h = base.model_copy(update={"attention": attention, "attention_backend": b})
            return _sq_log((predict_row(r, h), measured_s(r)) for r in default_rows)
        return min(names, key=err)

    def speed(b):
        e = attention[b]
        return e.max_eff * 128 / (128 + e.dh_half) * 4096 / (4096 + e.keys_half)
    return max(names, key=speed)
