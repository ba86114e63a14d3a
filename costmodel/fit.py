"""A hardware profile fitted to microbenchmark rows, and how far a profile is from rows.

Rows are in the format of ``data/h100-microbench-2026-11-22.json`` (``profiler/calibrate.py``
writes the same), timed on the device (no host time, L2 flushed): ``mm`` (M, K, N), ``bmm_qk`` /
``bmm_pv`` (BH, T, dh), ``sdpa`` (backend, B, H, T, dh, causal), element ops by ``elems``, and
``eager_tiny_op`` / ``eager_tiny_matmul`` (host time per op, ``us_per_op``).

``predict_row`` prices one row with the kernel formulas of ``timing.py``; ``row_errors`` and
``summarize`` compare a profile with rows. ``fit_profile`` fits a profile's efficiencies, one kernel
family at a time (``fit_host_time``, ``fit_element_ops``, ``fit_matmul``, ``fit_attention``): a
robust (pseudo-Huber) loss on log(time), minimised by a coordinate pattern search in pure Python.
Peaks are kept; every share is capped at 1 of them.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Optional

from .hardware import AttentionEfficiency, Hardware, MatmulEfficiency
from .timing import attention_parts, compiled, kernel_s, matmul_parts, vector_parts
from .units import DTYPE_BYTES, DTYPES, FUSED_BACKENDS, TORCH_DTYPE_NAMES

# -- microbenchmark rows ---------------------------------------------------------------------------

# a row's "dtype": torch's names and aliases, or attncost's own
DTYPE_ALIASES = {**{t: d for d, t in TORCH_DTYPE_NAMES.items()}, "half": "fp16", "float": "fp32",
                 **{d: d for d in DTYPES}}
# element op -> (op kind as in graph.py, tensors moved per element: read + written)
ELEMENT_OPS = {"copy": ("copy", 2), "exp": ("elementwise", 2), "add": ("elementwise", 2),
               "mul": ("elementwise", 2), "relu": ("elementwise", 2), "softmax": ("softmax", 2),
               "sum": ("reduction", 1), "mean": ("reduction", 1), "max": ("reduction", 1),
               "cumsum": ("scan", 2)}


def row_dtype(row: dict) -> str:
    return DTYPE_ALIASES.get(str(row.get("dtype", "bfloat16")), "bf16")


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


def measured_s(row: dict) -> Optional[float]:
    """The row's measured seconds (``ms`` or ``us_per_op``); None if it has neither."""
    if "ms" in row:
        return row["ms"] * 1e-3
    if "us_per_op" in row:
        return row["us_per_op"] * 1e-6
    return None


def _row_mm(row: dict) -> tuple:
    """(b, m, k, n, flops, bytes) of a matmul row."""
    isz = DTYPE_BYTES[row_dtype(row)]
    if row["op"] == "mm":
        b, m, k, n = 1, row["M"], row["K"], row["N"]
    elif row["op"] == "bmm_qk":
        b, m, k, n = row["BH"], row["T"], row["dh"], row["T"]
    else:  # bmm_pv
        b, m, k, n = row["BH"], row["T"], row["T"], row["dh"]
    return b, m, k, n, 2.0 * b * m * k * n, b * (m * k + k * n + m * n) * isz


def _row_sdpa(row: dict) -> tuple:
    """(dh, keys, fraction, flops_mm, bytes) of an SDPA row (FlashAttention's convention)."""
    isz = DTYPE_BYTES[row_dtype(row)]
    B, H, T, dh = row["B"], row["H"], row["T"], row["dh"]
    frac = 0.5 if row.get("causal") else 1.0
    return dh, T, frac, 4.0 * B * H * T * T * dh * frac, 4.0 * B * H * T * dh * isz


def _row_vector(row: dict) -> tuple:
    """(op kind, bytes) of an element-op row."""
    kind, tensors = ELEMENT_OPS[row["op"]]
    return kind, tensors * row["elems"] * DTYPE_BYTES[row_dtype(row)]


def _row_backend(row: dict, backend: Optional[str]) -> Optional[str]:
    b = row.get("backend")
    return backend if b in (None, "default") else b


def predict_row(row: dict, hw: Hardware, backend: Optional[str] = None) -> Optional[float]:
    """Predicted seconds of one microbenchmark row, timed as it was (device time; the eager rows:
    host time per op). ``sdpa`` rows use their own backend, ``default`` rows ``hw.attention_backend``."""
    g = row_group(row)
    if g is None:
        return None
    if g == "eager":
        return hw.host_matmul_s if row["op"] == "eager_tiny_matmul" else hw.launch_overhead_s
    c = compiled(hw, row_dtype(row), backend if g != "sdpa" else _row_backend(row, backend))
    if g in ("mm", "bmm"):
        return kernel_s(matmul_parts(c.mm, *_row_mm(row)))
    if g == "sdpa":
        return kernel_s(attention_parts(c.at, *_row_sdpa(row)))
    kind, nbytes = _row_vector(row)
    lat, bw = c.kinds.get(kind, (c.vlat, c.vbw))
    return kernel_s(vector_parts(lat, c.vflops, bw, 0.0, nbytes))


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


# -- the loss and its minimiser --------------------------------------------------------------------

ROBUST_SCALE = 0.1  # relative error up to which the fit's loss is quadratic, linear beyond


def _robust(d: float) -> float:
    """Pseudo-Huber loss of a log error: ~d^2/2 below ROBUST_SCALE, ~|d| * scale beyond, so one
    odd row (a warm-up, a different kernel path) cannot drag the fit."""
    r = d / ROBUST_SCALE
    return ROBUST_SCALE * ROBUST_SCALE * (math.sqrt(1.0 + r * r) - 1.0)


def _sq_log(pairs: Iterable) -> float:
    """The robust loss summed over (predicted, measured) pairs."""
    s = 0.0
    for p, m in pairs:
        s += _robust(math.log(p / m))
    return s


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


# -- one fit per kernel family ---------------------------------------------------------------------

class Fitted(NamedTuple):
    """What one kernel family's fit sets on the profile, and a phrase per thing it fitted."""

    update: dict
    what: list


def fit_host_time(rows: list) -> Fitted:
    """Host time per eager op and per eager matmul, from the ``eager_tiny_*`` rows as measured."""
    upd: dict = {}
    for r in rows:
        if r["op"] == "eager_tiny_op":
            upd["launch_overhead_s"] = r["us_per_op"] * 1e-6
        elif r["op"] == "eager_tiny_matmul":
            upd["matmul_overhead_s"] = r["us_per_op"] * 1e-6
    return Fitted(upd, ["eager host time per op"] if upd else [])


def fit_element_ops(base: Hardware, rows: list) -> Fitted:
    """A fixed latency and a bandwidth share per element-op kind: ``latency + bytes / (bw * eff)``.
    Copy's are the profile's defaults (``kernel_latency_s``, ``mem_efficiency``), and no kind's
    latency goes below copy's."""
    vec = [(_row_vector(r), measured_s(r)) for r in rows if row_group(r) == "vector"]
    kinds = sorted({k for (k, _), _ in vec}, key=lambda k: (k != "copy", k))
    lat_eff: dict = {}
    for kind in kinds:
        floor = lat_eff["copy"][0] if "copy" in lat_eff else 1e-7  # no kernel starts faster than a copy
        pts = [(nb, m) for (k, nb), m in vec if k == kind]
        lat_eff[kind] = _fit_element_kind(base, kind, pts, floor)
    if not lat_eff:
        return Fitted({}, [])
    dlat, deff = lat_eff.pop("copy", (base.kernel_latency_s, base.mem_efficiency))
    ops = ", ".join(sorted({r["op"] for r in rows if row_group(r) == "vector"}))
    return Fitted({"kernel_latency_s": dlat, "mem_efficiency": deff,
                   "vector_eff": {**base.vector_eff, **{k: e for k, (_, e) in lat_eff.items()}},
                   "vector_latency": {**base.vector_latency, **{k: t for k, (t, _) in lat_eff.items()}}},
                  [f"element ops ({ops})"])


def _fit_element_kind(base: Hardware, kind: str, pts: list, floor: float) -> tuple:
    """(latency, bandwidth share) of one op kind, fitted to its (bytes, measured seconds)."""
    bw = base.mem_bandwidth
    x0 = [max(floor, base.op_latency(kind)), base.op_eff(kind)]

    def loss(x):
        return _sq_log((x[0] + nb / (bw * x[1]), m) for nb, m in pts)

    return tuple(_pattern_search(loss, x0, [floor, 1e-5], [1e-3, 1.0]))


def fit_matmul(base: Hardware, rows: list) -> Fitted:
    """``MatmulEfficiency`` per dtype with at least 8 ``mm`` rows (``bmm`` rows are left out, to
    check the fit); bf16 and fp16 run at the same tensor-core rate, so one shares the other's fit."""
    matmul = dict(base.matmul)
    what, done = [], []
    for dt in DTYPES:
        mm = [(_row_mm(r), measured_s(r)) for r in rows if r["op"] == "mm" and row_dtype(r) == dt]
        if len(mm) < 8:
            continue
        matmul[dt] = _fit_matmul_dtype(base, dt, mm)
        what.append(f"matmul {dt} ({len(mm)} mm rows)")
        done.append(dt)
    for a, b in (("fp16", "bf16"), ("bf16", "fp16")):
        if b in done and a not in done:
            matmul[a] = matmul[b]
    return Fitted({"matmul": matmul}, what)


def _fit_matmul_dtype(base: Hardware, dt: str, mm: list) -> MatmulEfficiency:
    """One dtype's matmul efficiency, fitted to [((b, m, k, n, flops, bytes), measured seconds)];
    the serial k term stops at the largest k measured."""
    peak, bw = base.tensor_peak(dt), base.mem_bandwidth
    b0 = base.matmul_eff(dt)
    kcap = float(max(s[2] for s, _ in mm))
    x0 = [b0.max_eff, max(b0.mn_half, 1.0), max(b0.k_half, 1.0), max(b0.k_step_s, 1e-10), b0.mem_eff,
          max(b0.latency_s, 1e-6)]
    lo = [0.01, 1e-2, 1e-2, 1e-13, 0.05, 1e-6]
    hi = [1.0, 1e5, 1e5, 1e-6, 1.0, 1e-3]

    def loss(x):  # x: max_eff, mn_half, k_half, k_step_s, mem_eff, latency_s
        p = (peak * x[0], x[1], x[2], x[3], kcap, bw * x[4], x[5])  # timing.matmul_params
        return _sq_log((kernel_s(matmul_parts(p, *spec)), meas) for spec, meas in mm)

    x = _pattern_search(loss, x0, lo, hi)
    return MatmulEfficiency(max_eff=x[0], mn_half=x[1], k_half=x[2], k_step_s=x[3], k_serial_cap=kcap,
                            mem_eff=x[4], latency_s=x[5])


def fit_attention(base: Hardware, rows: list, *, mem_eff: float, min_latency_s: float) -> Fitted:
    """``AttentionEfficiency`` per SDPA backend with at least 4 rows (``math`` is not fused), at
    bandwidth share ``mem_eff`` and a latency of at least ``min_latency_s`` (a plain kernel's); the
    default backend is the one that best matches the ``default`` rows."""
    attention = dict(base.attention)
    sdpa = [r for r in rows if r["op"] == "sdpa"]
    what = []
    for be in sorted({r.get("backend") for r in sdpa} - {None, "default", "math"}):
        rs = [(_row_sdpa(r), measured_s(r), row_dtype(r)) for r in sdpa if r.get("backend") == be]
        if len(rs) < 4:
            continue
        a0 = attention.get(be, base.attention_eff() if base.attention else AttentionEfficiency())
        attention[be] = _fit_backend(base, a0, rs, mem_eff, min_latency_s)
        what.append(f"attention {be} ({len(rs)} sdpa rows)")
    upd: dict = {"attention": attention}
    if attention:
        upd["attention_backend"] = _default_backend(attention, base, [r for r in sdpa if r.get("backend") == "default"])
    return Fitted(upd, what)


def _fit_backend(base: Hardware, a0: AttentionEfficiency, rs: list, mem_eff: float,
                 min_latency_s: float) -> AttentionEfficiency:
    """One backend's efficiency, fitted from ``a0`` to [(sdpa spec, measured seconds, dtype)]; head
    dims above the largest measured get its efficiency (no extrapolation)."""
    bw = base.mem_bandwidth
    x0 = [a0.max_eff, max(a0.dh_half, 1.0), max(a0.keys_half, 1.0), max(a0.causal_tile, 1.0),
          max(a0.latency_s, 1e-6)]
    lo = [0.01, 1e-2, 1e-2, 1e-2, min_latency_s]
    hi = [1.0, 1e4, 1e5, 1e5, 1e-3]
    peaks = {dt: base.tensor_peak(dt) for dt in DTYPES}
    dh_cap = float(max(spec[0] for spec, _, _ in rs))

    def loss(x):  # x: max_eff, dh_half, keys_half, causal_tile, latency_s
        params = {dt: (peak * x[0], x[1], x[2], x[3], bw * mem_eff, x[4], dh_cap)  # timing.attention_params
                  for dt, peak in peaks.items()}
        return _sq_log((kernel_s(attention_parts(params[dt], *spec)), meas) for spec, meas, dt in rs)

    x = _pattern_search(loss, x0, lo, hi)
    return AttentionEfficiency(max_eff=x[0], dh_half=x[1], keys_half=x[2], causal_tile=x[3], dh_cap=dh_cap,
                               mem_eff=mem_eff, latency_s=x[4])


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


# -- the whole profile -----------------------------------------------------------------------------

def fit_profile(base: Hardware, rows: list, *, exclude_ops: Iterable = (), source: str = "") -> Hardware:
    """``base`` with its efficiencies fitted to measured microbenchmark rows; peaks are kept.

    Fits what the rows contain, family by family: eager host time, element ops, matmuls per dtype,
    fused attention per SDPA backend (which takes its bandwidth share and least latency from the
    element-op fit). ``exclude_ops`` names element ops (e.g. "cumsum") to leave out.
    """
    exclude = set(exclude_ops)
    rows = [r for r in rows if r.get("op") not in exclude and measured_s(r)]
    upd: dict = {}
    what: list = []
    for part in (fit_host_time(rows), fit_element_ops(base, rows), fit_matmul(base, rows)):
        upd.update(part.update)
        what += part.what
    attention = fit_attention(base, rows, mem_eff=upd.get("mem_efficiency", base.mem_efficiency),
                              min_latency_s=upd.get("kernel_latency_s", base.kernel_latency_s))
    upd.update(attention.update)
    what += attention.what
    upd["calibration"] = f"fitted to {source or 'measured rows'}: {'; '.join(what) or 'nothing (no usable rows)'}" + (
        f"; left out: {', '.join(sorted(exclude))}" if exclude else "")
    return base.model_copy(update=upd)
