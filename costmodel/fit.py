"""A hardware profile fitted to microbenchmark rows, and how far a profile is from rows.

Rows are in the format of ``data/h100-microbench-2026-11-22.json`` (``profiler/calibrate.py``
writes the same), timed on the device (no host time, L2 flushed): ``mm`` (M, K, N), ``bmm_qk`` /
``bmm_pv`` (BH, T, dh), ``bmv_qk`` / ``bmv_pv`` (decode's: one query row per BH against T keys),
``sdpa`` (backend, B, H, T, dh, causal), element ops by ``elems``
(``ELEMENT_OPS``; where a row has them, ``bytes`` read and written, ``row``: elements per row, and
``k`` kept per row of a topk, ``out_bytes``: the output it allocates), and ``eager_tiny_*`` (host time
per op of each host class, ``us_per_op``: ``HOST_ROWS``; ``SEQUENCE_ROW``: the same ops issued in turn),
``pace`` (the reference workload of ``profiler.pace``, ``ms``: the profile's ``pace_s``) and ``cold`` (a
matrix-vector product right after other traffic, ``profiler.cold``: ``fit_cold``).

``predict_row`` prices one row with the kernel formulas of ``timing.py``; ``row_errors`` and
``summarize`` compare a profile with rows. ``fit_profile`` fits a profile's efficiencies, one kernel
family at a time (``fit_host_time``, ``fit_element_ops``, ``fit_matmul``, ``fit_attention``): a
robust (pseudo-Huber) loss on log(time), minimised by a coordinate pattern search in pure Python.
Peaks are kept; every share is capped at 1 of them. On a CPU (a profile with ``host_sync``) the plain
copies also tell where memory changes pace (``Regimes``: beyond the cache, fresh outputs), which every
later family's fit then counts as known.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Iterable, NamedTuple, Optional

from .hardware import AttentionEfficiency, Hardware, MatmulEfficiency, TopkPaths
from .timing import (attention_call, attention_parts, backward_parts, compiled, dram_parts,
                     fresh_parts, kernel_s, matmul_parts, topk_path_s)
from .units import DTYPE_BYTES, DTYPES, FUSED_BACKENDS, TORCH_DTYPE_NAMES

# -- microbenchmark rows ---------------------------------------------------------------------------

# a row's "dtype": torch's names and aliases, or attncost's own
DTYPE_ALIASES = {**{t: d for d, t in TORCH_DTYPE_NAMES.items()}, "half": "fp16", "float": "fp32",
                 **{d: d for d in DTYPES}}
# element op -> (op kind as in opkinds.KINDS, tensors moved per element, read + written, where the row
# does not say its ``bytes``)
ELEMENT_OPS = {"copy": ("copy", 2), "copy_": ("copy", 2), "copy_t": ("copy", 2), "cat": ("copy", 2),
               "exp": ("elementwise", 2), "add": ("elementwise", 2), "mul": ("elementwise", 2),
               "relu": ("elementwise", 2), "masked_fill": ("elementwise", 2), "softmax": ("softmax", 2),
               "sum": ("reduction", 1), "mean": ("reduction", 1), "max": ("reduction", 1),
               "amax": ("reduction", 1), "cumsum": ("scan", 2), "zeros": ("fill", 1), "topk": ("topk", 1),
               "index_select": ("index", 2), "gather": ("index", 2), "index_add": ("scatter", 3),
               "scatter_add": ("scatter", 3)}
# x.clone() and y.copy_(x): contiguous copies, with and without a fresh output; their law is the
# profile's default (kernel_latency_s, mem_efficiency)
PLAIN_COPIES = ("copy", "copy_")
BMV_OPS = ("bmv_qk", "bmv_pv")  # decode's batched matrix-vector products (profiler/calibrate.py)
MATMUL_OPS = ("mm", "bmm_qk", "bmm_pv") + BMV_OPS
# element ops that may get a law of their own (``fit_element_ops``), under the graph op ``fn`` they
# price (timing looks a law up by fn first): on a CPU an exp or a select by a broadcast mask runs far
# from an add's bandwidth
OWN_LAW = {"exp": "exp", "masked_fill": "mask"}
OWN_LAW_MISFIT = 0.25  # median |relative error| of an op's rows under its kind's law that gives it its own
# host time row -> the profile field it sets (the host classes of opkinds.HOST_CLASSES)
TINY = "eager_tiny_"
HOST_ROWS = {"eager_tiny_op": "launch_overhead_s", "eager_tiny_matmul": "matmul_overhead_s",
             "eager_tiny_view": "view_overhead_s", "eager_tiny_sdpa": "sdpa_overhead_s",
             "eager_tiny_index": "index_overhead_s", "eager_tiny_module": "module_overhead_s",
             "eager_tiny_autograd": "autograd_node_s", "eager_tiny_backward": "backward_call_s"}
# the module row times a tiny nn.Linear called as a module: the module's own host time is what it takes
# beyond the matmul row (F.linear's one mm)
MODULE_ROW, MATMUL_ROW = TINY + "module", TINY + "matmul"
# the autograd rows time a chain of CHAIN element-wise ops (x * c, from a leaf) and its backward, and the
# same of one op (BACKWARD_ROW), per call: the chain's CHAIN - 1 extra nodes, each with its forward and
# backward op, give the time per node; the rest of the one-op call is the backward call's own
AUTOGRAD_ROW, BACKWARD_ROW, OP_ROW, VIEW_ROW = TINY + "autograd", TINY + "backward", TINY + "op", TINY + "view"
CHAIN = 16
_DERIVED_ROWS = (MODULE_ROW, AUTOGRAD_ROW, BACKWARD_ROW)
# the tiny ops of the HOST_ROWS issued in turn, one feeding the next, as a layer issues them: ``classes`` counts
# the ops of each host class per turn, ``us_per_op`` the time per op; what an op takes more there than in its
# own loop is the profile's ``sequence_overhead_s``
SEQUENCE_ROW = "eager_sequence"
# the reference workload (``profiler.pace``), timed at the start and the end of a calibration: the profile's
# ``pace_s`` is their median
PACE_ROW = "pace"
# a matrix-vector product timed right after others read N MB (``profiler.cold``): ``bytes`` (its matrix),
# ``after_bytes`` (N), ``ms``; ``fit_cold`` fits the profile's cold_* fields to them
COLD_ROW = "cold"
ITEMS_ROW = "sdpa_items"  # one fused attention call of 1 item and of one item per thread (fit_attention_speedup)
SDPA_BACKWARD_ROW = "sdpa_backward"  # a fused attention call's backward alone (fit_attention: ``backward``)
ATTENTION_ROWS = ("sdpa", SDPA_BACKWARD_ROW)


def row_dtype(row: dict) -> str:
    return DTYPE_ALIASES.get(str(row.get("dtype", "bfloat16")), "bf16")


def row_group(row: dict) -> Optional[str]:
    """Which family a row belongs to: mm, bmm, bmv, sdpa, sdpa_backward, vector, eager (None: not a timing
    row)."""
    op = row.get("op")
    if op == "mm":
        return "mm"
    if op in ("bmm_qk", "bmm_pv"):
        return "bmm"
    if op in BMV_OPS:
        return "bmv"
    if op in ("sdpa", SDPA_BACKWARD_ROW):
        return op
    if op in ELEMENT_OPS and "elems" in row:
        return "vector"
    if op in HOST_ROWS or op == SEQUENCE_ROW:
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
    op = row["op"]
    if op == "mm":
        b, m, k, n = 1, row["M"], row["K"], row["N"]
    else:
        rows = 1 if op in BMV_OPS else row["T"]  # decode's: one query row
        k, n = (row["dh"], row["T"]) if op.endswith("_qk") else (row["T"], row["dh"])
        b, m = row["BH"], rows
    return b, m, k, n, 2.0 * b * m * k * n, b * (m * k + k * n + m * n) * isz


def _row_sdpa(row: dict) -> tuple:
    """(dh, keys, fraction, flops_mm, bytes, queries) of an SDPA row (FlashAttention's convention) of
    ``Tq`` queries (default ``T``) per head against ``T`` keys."""
    isz = DTYPE_BYTES[row_dtype(row)]
    B, H, T, dh = row["B"], row["H"], row["T"], row["dh"]
    q = row.get("Tq") or T
    frac = 0.5 if row.get("causal") else 1.0
    return dh, T, frac, 4.0 * B * H * q * T * dh * frac, 2.0 * B * H * (q + T) * dh * isz, q


def _row_sdpa_backward(row: dict) -> tuple:
    """``_row_sdpa`` of an SDPA row's backward, as ``analysis.add_backward`` counts a fused kernel's: the
    scores recomputed and four gradient matmuls, 2.5x the forward's matmul FLOPs; it reads Q, K, V, the
    output and its gradient and writes three gradients, twice the forward's bytes."""
    dh, keys, frac, flops, nbytes, q = _row_sdpa(row)
    return dh, keys, frac, 2.5 * flops, 2.0 * nbytes, q


def backward_flops(row: dict) -> float:
    """The matmul FLOPs of an ``SDPA_BACKWARD_ROW`` (``_row_sdpa_backward``)."""
    return _row_sdpa_backward(row)[3]


class Regimes(NamedTuple):
    """Where memory changes pace on a CPU: a kernel moving more than ``cache_bytes`` streams them at
    ``dram_bw`` at most (``timing.dram_parts``); an output of ``fresh_bytes`` or more is faulted in
    at ``fresh_s`` per byte (``timing.fresh_parts``). The defaults: neither."""

    cache_bytes: float = math.inf
    dram_bw: float = math.inf
    fresh_bytes: float = math.inf
    fresh_s: float = 0.0

    def memory_s(self, nbytes: float, memory_s: float) -> float:
        return dram_parts(self.cache_bytes, self.dram_bw, nbytes, memory_s)

    def fresh(self, out_bytes: float) -> float:
        return fresh_parts(self.fresh_bytes, self.fresh_s, out_bytes)

    def kernel_s(self, parts: tuple, nbytes: float, out_bytes: float) -> float:
        """``timing.kernel_s`` of (latency, compute, memory) in these regimes."""
        lat, comp, mem = parts
        return kernel_s((lat, comp, self.memory_s(nbytes, mem))) + self.fresh(out_bytes)


def _regimes(hw: Hardware) -> Regimes:
    return Regimes(hw.cache_bytes or math.inf, hw.mem_bandwidth * (hw.dram_eff or 1.0), hw.fresh_bytes or math.inf,
                   hw.fresh_s_per_byte)


def _row_out(row: dict) -> float:
    """Bytes of the output a row's op allocates (element ops: ``out_bytes``, 0 where not recorded)."""
    isz = DTYPE_BYTES[row_dtype(row)]
    op = row["op"]
    if op in MATMUL_OPS:
        b, m, _, n = _row_mm(row)[:4]
        return b * m * n * isz
    if op == "sdpa":
        return row["B"] * row["H"] * (row.get("Tq") or row["T"]) * row["dh"] * isz
    if op == SDPA_BACKWARD_ROW:  # the gradients of Q, K and V
        return row["B"] * row["H"] * ((row.get("Tq") or row["T"]) + 2 * row["T"]) * row["dh"] * isz
    return row.get("out_bytes") or 0.0


class VectorRow(NamedTuple):
    """An element-op row as a law reads it: ``rows`` of its ``row`` elements (0: no row term), for
    a topk ``selected`` = rows * k * log2(k + 1), and the bytes of its output (``out``)."""

    op: str
    kind: str
    bytes: float
    rows: float
    selected: float
    out: float


def _row_vector(row: dict) -> VectorRow:
    op = row["op"]
    kind, tensors = ELEMENT_OPS[op]
    n = row["elems"]
    nbytes = row.get("bytes") or tensors * n * DTYPE_BYTES[row_dtype(row)]
    length = row.get("row") or 0.0
    if not length:
        return VectorRow(op, kind, nbytes, 0.0, 0.0, _row_out(row))
    rows = n / length
    k = row.get("k") or 0.0
    return VectorRow(op, kind, nbytes, rows, rows * k * math.log2(k + 1.0), _row_out(row))


def _host_s(hw: Hardware, op: str) -> float:
    """The profile's host time per op of an ``eager_tiny_*`` row's class."""
    return {"eager_tiny_op": hw.launch_overhead_s, "eager_tiny_matmul": hw.host_matmul_s,
            "eager_tiny_view": hw.view_overhead_s or 0.0, "eager_tiny_sdpa": hw.host_sdpa_s,
            "eager_tiny_index": hw.host_index_s,
            MODULE_ROW: (hw.module_overhead_s or 0.0) + hw.host_matmul_s,  # the call, then its matmul
            AUTOGRAD_ROW: _chain_s(CHAIN, hw.autograd_node_s or 0.0, hw.backward_call_s or 0.0,
                                   hw.launch_overhead_s, hw.view_overhead_s or 0.0),
            BACKWARD_ROW: _chain_s(1, hw.autograd_node_s or 0.0, hw.backward_call_s or 0.0,
                                   hw.launch_overhead_s, hw.view_overhead_s or 0.0)}[op]


def _chain_s(n: int, node_s: float, call_s: float, op_s: float, view_s: float) -> float:
    """Host time of a chain of ``n`` element-wise ops from a leaf, forward and backward: n + 1 autograd
    nodes (the leaf's AccumulateGrad), an op each way per link, the leaf gradient's one detach, and
    the backward call (``analysis.add_backward`` counts nodes so)."""
    return call_s + (n + 1) * node_s + 2 * n * op_s + view_s


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
        if row["op"] == SEQUENCE_ROW:
            return mean_per_op(row["classes"], lambda op: _host_s(hw, op)) + hw.sequence_overhead_s
        return _host_s(hw, row["op"])
    c = compiled(hw, row_dtype(row), _row_backend(row, backend) if g in ATTENTION_ROWS else backend)
    reg = _regimes(hw)
    if g in ("mm", "bmm", "bmv"):
        spec = _row_mm(row)
        return reg.kernel_s(matmul_parts(c.mm, *spec), spec[-1], _row_out(row))
    if g == "sdpa":
        spec = _row_sdpa(row)
        return reg.kernel_s(attention_call(c, row["B"] * row["H"], *spec), spec[4], _row_out(row))
    if g == SDPA_BACKWARD_ROW:
        spec = _row_sdpa_backward(row)
        return reg.kernel_s(backward_parts(c, attention_call(c, row["B"] * row["H"], *spec)), spec[4], _row_out(row))
    v = _row_vector(row)
    if v.kind == "topk" and c.topk is not None:
        return _paths_s(c.topk, row, c.vbw, reg)
    if v.op in PLAIN_COPIES:
        lat, bw, row_s = c.vlat, c.vbw, 0.0
    else:
        lat, bw, row_s = c.kinds.get(OWN_LAW.get(v.op)) or c.kinds.get(v.kind) or (c.vlat, c.vbw, 0.0)
    return _law_s(ElementLaw(lat, bw, row_s, c.select_s if v.kind == "topk" else 0.0), v, 1.0, reg)


def _paths_s(p: tuple, row: dict, bw: float, reg: Regimes) -> float:
    """Seconds of a topk row on PyTorch's CPU kernel (``TopkPaths.params()``: ``p``), its bytes at the plain
    copy's rate ``bw``, as ``timing`` prices a topk op."""
    v = _row_vector(row)
    n, k = row["row"], row["k"]
    work = topk_path_s(p, row["elems"], row["elems"] / n * k, n)
    return p[0] + work + reg.memory_s(v.bytes, v.bytes / bw) + reg.fresh(v.out)


def _law_s(law: "ElementLaw", v: VectorRow, bw: float, reg: Regimes) -> float:
    """Seconds of one element-op row under ``law`` (its ``eff`` times ``bw``: bytes per second) in the
    memory regimes ``reg``."""
    return (law.latency_s + reg.memory_s(v.bytes, v.bytes / (bw * law.eff)) + v.rows * law.row_s
            + v.selected * law.select_s + reg.fresh(v.out))


def row_errors(rows: list, hw: Hardware) -> dict:
    """Relative errors (pred - meas) / meas by group: mm:<dtype>, bmm, bmv, sdpa:<backend>, vector:<op>,
    eager. Rows whose backend the profile lacks are left out."""
    out: dict = {}
    for r in rows:
        g = row_group(r)
        if g is None:
            continue
        if g in ATTENTION_ROWS and r.get("backend") not in (None, "default") and r.get("backend") not in hw.attention:
            continue
        p, m = predict_row(r, hw), measured_s(r)
        if p is None or not m:
            continue
        key = {"mm": f"mm:{row_dtype(r)}", "sdpa": f"sdpa:{r.get('backend', 'default')}",
               SDPA_BACKWARD_ROW: f"{SDPA_BACKWARD_ROW}:{r.get('backend')}", "vector": f"vector:{r['op']}"}.get(g, g)
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


def mean_per_op(classes: dict, seconds: Callable[[str], float]) -> float:
    """Host time per op of a ``SEQUENCE_ROW`` turn (``classes``: ops per host class) at each class's
    own time in a loop (``seconds(TINY + class)``)."""
    return sum(seconds(TINY + c) * n for c, n in classes.items()) / sum(classes.values())


def fit_host_time(rows: list) -> Fitted:
    """Host time per eager op of each class (element-wise, matmul, view, SDPA, index), from the
    ``eager_tiny_*`` rows as measured (``HOST_ROWS``); of a module call, the ``MODULE_ROW`` above the
    ``MATMUL_ROW``; of the autograd engine, per node and per backward call, from the chains of the
    ``AUTOGRAD_ROW`` and the ``BACKWARD_ROW`` (``_chain_s``); and the sequence overhead per op: the
    time per op of the ``SEQUENCE_ROW`` above the mean of its ops' own rows (none below 0)."""
    tiny = {r["op"]: r["us_per_op"] * 1e-6 for r in rows if r.get("op") in HOST_ROWS}
    if not tiny:
        return Fitted({}, [])
    upd = {HOST_ROWS[op]: t for op, t in tiny.items() if op not in _DERIVED_ROWS}
    if MODULE_ROW in tiny and MATMUL_ROW in tiny:
        upd["module_overhead_s"] = max(0.0, tiny[MODULE_ROW] - tiny[MATMUL_ROW])
    if all(r in tiny for r in (AUTOGRAD_ROW, BACKWARD_ROW, OP_ROW)):
        op, view = tiny[OP_ROW], tiny.get(VIEW_ROW, 0.0)
        node = max(0.0, (tiny[AUTOGRAD_ROW] - tiny[BACKWARD_ROW]) / (CHAIN - 1) - 2.0 * op)
        upd["autograd_node_s"] = node
        upd["backward_call_s"] = max(0.0, tiny[BACKWARD_ROW] - _chain_s(1, node, 0.0, op, view))
    classes = [op.removeprefix(TINY) for op in HOST_ROWS if op in tiny]
    what = [f"eager host time per op ({', '.join(classes)})"]
    seq = next((r for r in rows if r.get("op") == SEQUENCE_ROW), None)
    if seq is not None and all(TINY + c in tiny for c in seq["classes"]):
        upd["sequence_overhead_s"] = max(0.0, seq["us_per_op"] * 1e-6 - mean_per_op(seq["classes"], tiny.get))
        what.append("host time per op in a sequence of mixed ops")
    return Fitted(upd, what)


class ElementLaw(NamedTuple):
    """One op kind's fitted law: ``latency_s + bytes / (bw * eff) + rows * row_s + selected * select_s``."""

    latency_s: float
    eff: float
    row_s: float = 0.0
    select_s: float = 0.0


def fit_element_ops(base: Hardware, rows: list) -> Fitted:
    """A law per element-op kind (``ElementLaw``), fitted on that kind's rows alone: a fixed latency and
    a bandwidth share, a time per row where the rows tell it (rows of several lengths: softmax by row
    length, reductions by outputs) and, for topk, a time per kept element (rows of several k). An op of
    ``OWN_LAW`` whose rows the kind's law misses by more than ``OWN_LAW_MISFIT`` (median) gets a law of
    its own, and the kind's is fitted again without it. The plain copies' (``PLAIN_COPIES``) are the
    profile's defaults (``kernel_latency_s``, ``mem_efficiency``), with, on a CPU (``host_sync``), the
    memory regimes they show (``_fit_regimes``); the copy kind's is fitted on the other copies
    (strided, ``cat``: the copies a layer makes); no kind's latency goes below the plain copies'."""
    vector_rows = [r for r in rows if row_group(r) == "vector"]
    vec = [(_row_vector(r), measured_s(r)) for r in vector_rows]
    if not vec:
        return Fitted({}, [])
    plain = [(v, m) for v, m in vec if v.op in PLAIN_COPIES]
    dlat, deff, floor = base.kernel_latency_s, base.mem_efficiency, 1e-7
    reg = _regimes(base)
    what = []
    if plain:  # no kernel starts faster than a copy
        dlat, deff = _fit_element_kind(base, "copy", plain, floor)[:2]
        if base.host_sync:
            reg, (dlat, deff) = _fit_regimes(base, plain, floor, ElementLaw(dlat, deff))
            what += [f"memory beyond {reg.cache_bytes / 2**20:.3g} MiB"] * (reg.cache_bytes < math.inf) + [
                f"fresh outputs from {reg.fresh_bytes / 2**20:.3g} MiB"] * (reg.fresh_bytes < math.inf)
        floor = dlat
    laws: dict = {}
    others = [(v, m) for v, m in vec if v.op not in PLAIN_COPIES]
    for kind in sorted({v.kind for v, _ in others}):
        pts = [(v, m) for v, m in others if v.kind == kind]
        start = ElementLaw(dlat, deff) if kind == "copy" else None
        laws[kind] = _fit_element_kind(base, kind, pts, floor, start, reg)
        own = _misfits(laws[kind], pts, base.mem_bandwidth, reg)
        for op in own:
            laws[OWN_LAW[op]] = _fit_element_kind(base, kind, [(v, m) for v, m in pts if v.op == op], floor,
                                                  reg=reg)
        rest = [(v, m) for v, m in pts if v.op not in own]
        if own and rest:
            laws[kind] = _fit_element_kind(base, kind, rest, floor, start, reg)
        elif own:
            del laws[kind]
    ops = ", ".join(sorted({v.op for v, _ in vec}))
    upd = {"kernel_latency_s": dlat, "mem_efficiency": deff,
           "vector_eff": {**base.vector_eff, **{k: law.eff for k, law in laws.items()}},
           "vector_latency": {**base.vector_latency, **{k: law.latency_s for k, law in laws.items()}}}
    row_s = {k: law.row_s for k, law in laws.items() if law.row_s}
    if row_s:
        upd["vector_row_s"] = {**base.vector_row_s, **row_s}
    if "topk" in laws and laws["topk"].select_s:
        upd["topk_select_s"] = laws["topk"].select_s
    paths = fit_topk_paths(base, [(r, m) for r, (v, m) in zip(vector_rows, vec) if v.kind == "topk"],
                           base.mem_bandwidth * deff, reg, floor) if base.host_sync else None
    if paths is not None:
        upd["topk_paths"] = paths
        what.append("topk by its path (partial sort or selection)")
    if reg.cache_bytes < math.inf:
        upd.update(cache_bytes=reg.cache_bytes, dram_eff=reg.dram_bw / base.mem_bandwidth)
    if reg.fresh_bytes < math.inf:
        upd.update(fresh_bytes=reg.fresh_bytes, fresh_s_per_byte=reg.fresh_s)
    return Fitted(upd, [f"element ops ({ops})"] + what)


TOPK_PATH_ROWS = 2  # topk rows on each of the CPU kernel's two paths needed to fit ``TopkPaths``


def fit_topk_paths(base: Hardware, pts: list, bw: float, reg: Regimes, floor: float) -> Optional[TopkPaths]:
    """``TopkPaths`` (PyTorch's CPU topk) fitted to [(topk row, measured seconds)], their bytes at the plain
    copy's rate ``bw`` in the memory regimes ``reg``; None unless ``TOPK_PATH_ROWS`` rows or more take
    each path (``k * partial_from <= n`` or not)."""
    ratio = TopkPaths.model_fields["partial_from"].default
    partial = sum(r["k"] * ratio <= r["row"] for r, _ in pts)
    if partial < TOPK_PATH_ROWS or len(pts) - partial < TOPK_PATH_ROWS:
        return None
    start = base.topk_paths or TopkPaths(latency_s=max(floor, base.op_latency("topk")), scan_s=1e-9, heap_s=5e-9,
                                         select_s=5e-9, sort_s=3e-9, partial_from=ratio)
    x0 = list(start.params()[:5])

    def loss(x):
        p = (*x, ratio)
        return _sq_log((_paths_s(p, r, bw, reg), m) for r, m in pts)

    x = _pattern_search(loss, x0, [floor] + [1e-15] * 4, [1e-3] + [1e-5] * 4)
    return TopkPaths(latency_s=x[0], scan_s=x[1], heap_s=x[2], select_s=x[3], sort_s=x[4], partial_from=ratio)


def _knees(sizes: Iterable) -> list:
    """Where a regime may start: the geometric middle of each two consecutive sizes measured."""
    s = sorted({x for x in sizes if x > 0})
    return [math.sqrt(a * b) for a, b in zip(s, s[1:])]


def _fit_regimes(base: Hardware, pts: list, floor: float, law: "ElementLaw") -> tuple:
    """(Regimes, (latency, eff)) of the plain copies' rows (a CPU's), in two steps: the bytes moved
    beyond which a copy streams at a lower rate (its cache), from the copies into a tensor that exists
    (``copy_``: no fresh output); then, with it, the output size from which a copy costs a time per
    byte more (fresh memory faulted in page by page). Each sits at the middle of two sizes measured
    where it fits best, and is kept only where it halves the loss without it (``law``: neither)."""
    bw = base.mem_bandwidth
    lo, hi = [floor, 1e-5, 1e-5, 1e-13], [1e-3, 1.0, 1.0, 1e-6]

    def loss_at(cache, fresh, rows):
        def loss(x):  # x: latency, eff, dram eff, s per byte
            reg = Regimes(cache, bw * x[2], fresh, x[3])
            return _sq_log((x[0] + reg.memory_s(v.bytes, v.bytes / (bw * x[1])) + reg.fresh(v.out), m)
                           for v, m in rows)
        return loss

    def step(knees, at, rows, x0):
        best = (loss_at(*at(math.inf), rows)(x0) / 2, math.inf, x0)  # a knee must halve the loss
        for knee in knees:
            x = _pattern_search(loss_at(*at(knee), rows), x0, lo, hi)
            value = loss_at(*at(knee), rows)(x)
            if value < best[0]:
                best = (value, knee, x)
        return best[1], best[2]

    x = [law.latency_s, law.eff, law.eff / 4, 1e-10]
    kept = [(v, m) for v, m in pts if not v.out]
    cache, x = step(_knees(v.bytes for v, _ in kept), lambda k: (k, math.inf), kept, x)
    fresh, x = step(_knees(v.out for v, _ in pts), lambda k: (cache, k), pts, x)
    if fresh == math.inf and cache < math.inf:  # the cache's rates on every plain copy
        x = _pattern_search(loss_at(cache, math.inf, pts), x, lo, hi)
    reg = Regimes(cache, bw * x[2] if cache < math.inf else math.inf, fresh, x[3] if fresh < math.inf else 0.0)
    return reg, (x[0], x[1])


def _misfits(law: "ElementLaw", pts: list, bw: float, reg: Regimes) -> list:
    """The ops of ``OWN_LAW`` among ``pts`` whose rows ``law`` misses by more than ``OWN_LAW_MISFIT``."""
    out = []
    for op in sorted({v.op for v, _ in pts} & OWN_LAW.keys()):
        errs = [abs(_law_s(law, v, bw, reg) / m - 1.0) for v, m in pts if v.op == op]
        if summarize(errs)["median"] > OWN_LAW_MISFIT:
            out.append(op)
    return out


def _varies(pairs: list) -> bool:
    """Whether a term's amount per byte takes at least two values over the rows (it is then told apart
    from the bandwidth term)."""
    return len({round(a / nb, 12) for a, nb in pairs if nb > 0}) >= 2


def _fit_element_kind(base: Hardware, kind: str, pts: list, floor: float,
                      start: Optional[ElementLaw] = None, reg: Regimes = Regimes()) -> ElementLaw:
    """One op kind's law fitted to its [(VectorRow, measured seconds)] in the memory regimes ``reg``
    (fitted before); the row and select terms only where the rows tell them apart from the bandwidth
    (``_varies``)."""
    bw = base.mem_bandwidth
    pts = [(v, m, reg.fresh(v.out)) for v, m in pts]
    start = start or ElementLaw(base.op_latency(kind), base.op_eff(kind), base.op_row_s(kind),
                                base.topk_select_s if kind == "topk" else 0.0)
    x0, lo, hi = [max(floor, start.latency_s), start.eff], [floor, 1e-5], [1e-3, 1.0]
    use_rows = _varies([(v.rows, v.bytes) for v, _, _ in pts])
    use_sel = kind == "topk" and _varies([(v.selected, v.bytes) for v, _, _ in pts])
    for used, guess in ((use_rows, start.row_s), (use_sel, start.select_s)):
        if used:
            x0.append(guess or 1e-9)
            lo.append(1e-15)
            hi.append(1e-4)

    def law(x) -> ElementLaw:
        extra = iter(x[2:])
        return ElementLaw(x[0], x[1], next(extra) if use_rows else 0.0, next(extra) if use_sel else 0.0)

    if not (use_rows or use_sel):
        def loss(x):
            return _sq_log((x[0] + reg.memory_s(v.bytes, v.bytes / (bw * x[1])) + off, m) for v, m, off in pts)
    else:
        def loss(x):
            e = law(x)
            return _sq_log((_law_s(e, v, bw, reg), m) for v, m, _ in pts)

    return law(_pattern_search(loss, x0, lo, hi))


GEMV_ROWS = 3  # mm rows of m = 1 that may get matrix-vector products a law of their own ...
MIN_MM_ROWS = 8  # ... where this many others fit the matmul law ...
GEMV_GAIN = 0.95  # ... and the two laws leave at most this share of the one law's squared log error
GEMV_FITS = 0.01  # ... unless the one law prices the rows within this (root mean square log error)


def fit_matmul(base: Hardware, rows: list) -> Fitted:
    """``MatmulEfficiency`` per dtype with at least 8 ``mm`` rows, and decode's ``bmv`` rows of that
    dtype (``bmm`` rows are left out, to check the fit); bf16 and fp16 run at the same tensor-core
    rate, so one shares the other's fit."""
    matmul = dict(base.matmul)
    what, done = [], []
    for dt in DTYPES:
        mm = [(_row_mm(r), measured_s(r)) for r in rows if r["op"] == "mm" and row_dtype(r) == dt]
        if len(mm) < 8:
            continue
        bmv = [(_row_mm(r), measured_s(r)) for r in rows if r["op"] in BMV_OPS and row_dtype(r) == dt]
        matmul[dt] = _fit_matmul_dtype(base, dt, mm + bmv)
        what.append(f"matmul {dt} ({len(mm)} mm rows{f', {len(bmv)} bmv' if bmv else ''})")
        done.append(dt)
    for a, b in (("fp16", "bf16"), ("bf16", "fp16")):
        if b in done and a not in done:
            matmul[a] = matmul[b]
    return Fitted({"matmul": matmul}, what)


def _fit_matmul_dtype(base: Hardware, dt: str, mm: list) -> MatmulEfficiency:
    """One dtype's matmul efficiency, fitted to [((b, m, k, n, flops, bytes), measured seconds)];
    the serial k term stops at the largest k measured. Where there are ``GEMV_ROWS`` rows of m = 1
    and ``MIN_MM_ROWS`` others, the law may be fitted to the others and ``gemv_mem_eff`` to the rows of
    m = 1, batched or not (a BLAS library runs them as matrix-vector products, a kernel of its own,
    and a batch of them streams its matrices alike): where the two
    laws price all rows better than one law fitted to all (``GEMV_GAIN``), which misses them
    (``GEMV_FITS``)."""
    peak, bw = base.tensor_peak(dt), base.mem_bandwidth
    b0 = base.matmul_eff(dt)
    kcap = float(max(s[2] for s, _ in mm))
    reg = _regimes(base)
    mm = [(spec, meas, spec[0] * spec[1] * spec[3] * DTYPE_BYTES[dt]) for spec, meas in mm]

    # x: max_eff, mn_half, k_half, k_step_s, mem_eff, latency_s; slow: (cache_bytes, dram_eff) of the law
    def loss_at(x: list, gemv_eff: float, rows: list, slow: tuple = (math.inf, 1.0)) -> float:
        p = (peak * x[0], x[1], x[2], x[3], kcap, bw * x[4], x[5], bw * gemv_eff, slow[0], bw * slow[1])
        return _sq_log((reg.kernel_s(matmul_parts(p, *spec), spec[-1], out), meas) for spec, meas, out in rows)

    def law(rows: list, slow: tuple = (math.inf, 1.0), x0: Optional[list] = None) -> list:
        x0 = x0 or [b0.max_eff, max(b0.mn_half, 1.0), max(b0.k_half, 1.0), max(b0.k_step_s, 1e-10), b0.mem_eff,
                    max(b0.latency_s, 1e-6)]
        return _pattern_search(lambda x: loss_at(x, 0.0, rows, slow), x0, [0.01, 1e-2, 1e-2, 1e-13, 0.05, 1e-6],
                               [1.0, 1e5, 1e5, 1e-6, 1.0, 1e-3])

    x, y = law(mm), None
    gemv = [row for row in mm if row[0][1] == 1]
    if len(gemv) >= GEMV_ROWS and len(mm) - len(gemv) >= MIN_MM_ROWS:
        apart = law([row for row in mm if row not in gemv])
        g = _pattern_search(lambda g: loss_at(apart, g[0], gemv), [b0.gemv_mem_eff or apart[4]], [0.01], [1.0])[0]
        one = loss_at(x, 0.0, mm)
        if one > len(mm) * GEMV_FITS**2 and loss_at(apart, g, mm) < GEMV_GAIN * one:
            x, y = apart, g
    if reg.cache_bytes == math.inf:  # no cache law (a GPU): no slow regime either
        return _efficiency(x, kcap, y)
    law_rows = [row for row in mm if y is None or row[0][1] != 1]  # the rows the matmul law prices
    slow = _slow_regime(lambda slow: loss_at(x, 0.0, law_rows, slow), [row[0][-1] for row in law_rows])
    if slow is None:
        return _efficiency(x, kcap, y)
    return _efficiency(law(law_rows, slow, x), kcap, y, slow)


SLOW_GAIN = 0.9  # a matmul's slow regime is kept where it leaves at most this share of the loss without it
SLOW_FROM = 2.0**20  # ... at a knee of at least this many bytes


def _slow_regime(loss: Callable[[tuple], float], sizes: list) -> Optional[tuple]:
    """(cache_bytes, dram_eff) of a matmul's slow regime beyond the caches (``MatmulEfficiency``): at the
    middle of two sizes measured (from ``SLOW_FROM``), with the share of the bandwidth that fits best,
    where it leaves at most ``SLOW_GAIN`` of the loss without it; else None."""
    without = loss((math.inf, 1.0))
    best = (without, None)
    for knee in (k for k in _knees(sizes) if k >= SLOW_FROM):
        share = _pattern_search(lambda e: loss((knee, e[0])), [0.1], [1e-3], [1.0])[0]
        value = loss((knee, share))
        if value < best[0]:
            best = (value, (knee, share))
    return best[1] if best[0] <= SLOW_GAIN * without else None


def _efficiency(x: list, kcap: float, gemv_eff: Optional[float], slow: Optional[tuple] = None) -> MatmulEfficiency:
    """The ``MatmulEfficiency`` of fitted values (max_eff, mn_half, k_half, k_step_s, mem_eff, latency_s),
    with a matrix-vector law and a slow regime (cache_bytes, dram_eff) where fitted."""
    cache, dram = slow or (None, None)
    return MatmulEfficiency(max_eff=x[0], mn_half=x[1], k_half=x[2], k_step_s=x[3], k_serial_cap=kcap,
                            mem_eff=x[4], latency_s=x[5], gemv_mem_eff=gemv_eff, cache_bytes=cache, dram_eff=dram)


def fit_attention(base: Hardware, rows: list, *, mem_eff: float, min_latency_s: float) -> Fitted:
    """``AttentionEfficiency`` per SDPA backend with at least 4 rows (``math`` is not fused), at
    bandwidth share ``mem_eff`` and a latency of at least ``min_latency_s`` (a plain kernel's); the
    default backend is the one that best matches the ``default`` rows."""
    attention = dict(base.attention)
    sdpa = [r for r in rows if r["op"] == "sdpa"]
    what = []
    for be in sorted({r.get("backend") for r in sdpa} - {None, "default", "math"}):
        rs = [(_row_sdpa(r), measured_s(r), row_dtype(r), _row_out(r)) for r in sdpa if r.get("backend") == be]
        if len(rs) < 4:
            continue
        a0 = attention.get(be, base.attention_eff() if base.attention else AttentionEfficiency())
        law, lost = _fit_backend(base, a0, rs, mem_eff, min_latency_s)
        beyond = sum(r[0][4] > (base.cache_bytes or math.inf) for r in rs)
        if beyond >= DRAM_ROWS:  # a pace of its own beyond the caches, where it prices the rows better
            slow, lost_slow = _fit_backend(base, a0, rs, mem_eff, min_latency_s, dram=True)
            law = slow if lost_slow <= SLOW_GAIN * lost else law
        attention[be] = law
        what.append(f"attention {be} ({len(rs)} sdpa rows{'; beyond the caches at its own pace' * bool(law.dram_eff)})")
        back = [r for r in rows if r["op"] == SDPA_BACKWARD_ROW and r.get("backend") == be]
        if back:
            attention[be] = attention[be].model_copy(update={"backward": _fit_backward(base, be, attention[be], back)})
            what.append(f"its backward ({len(back)} rows)")
    upd: dict = {"attention": attention}
    if attention:
        upd["attention_backend"] = _default_backend(attention, base, [r for r in sdpa if r.get("backend") == "default"])
    return Fitted(upd, what)


def _fit_backend(base: Hardware, a0: AttentionEfficiency, rs: list, mem_eff: float, min_latency_s: float,
                 dram: bool = False) -> tuple:
    """(one backend's efficiency, its loss), fitted from ``a0`` to [(sdpa spec, measured seconds, dtype, output
    bytes)]; head dims above the largest measured get its efficiency (no extrapolation); ``q_half``
    where rows of fewer queries than keys (decode) tell it; ``dram``: with its own pace beyond the
    caches (``dram_eff``), fitted together with the rest."""
    bw = base.mem_bandwidth
    x0 = [a0.max_eff, max(a0.dh_half, 1.0), max(a0.keys_half, 1.0), max(a0.causal_tile, 1.0),
          max(a0.latency_s, 1e-6)]
    lo = [0.01, 1e-2, 1e-2, 1e-2, min_latency_s]
    hi = [1.0, 1e4, 1e5, 1e5, 1e-3]
    decode = any(spec[5] < spec[1] for spec, _, _, _ in rs)
    if decode:  # from above: below the point where decode turns memory-bound the loss is flat
        x0, lo, hi = x0 + [max(a0.q_half, 100.0)], lo + [1e-2], hi + [1e5]
    if dram:
        x0, lo, hi = x0 + [0.3], lo + [1e-3], hi + [1.0]
    peaks = {dt: base.tensor_peak(dt) for dt in DTYPES}
    dh_cap = float(max(spec[0] for spec, _, _, _ in rs))
    reg, cache = _regimes(base), base.cache_bytes or math.inf

    def seconds(p: tuple, spec: tuple, out: float, dram_bw: float) -> float:
        lat, comp, mem = attention_parts(p, *spec)
        return reg.kernel_s((lat, comp, dram_parts(cache, dram_bw, spec[4], mem) if dram_bw else mem), spec[4], out)

    def loss(x):  # x: max_eff, dh_half, keys_half, causal_tile, latency_s[, q_half][, dram_eff]
        q_half = x[5] if decode else a0.q_half
        params = {dt: (peak * x[0], x[1], x[2], x[3], bw * mem_eff, x[4], dh_cap, q_half)  # timing.attention_params
                  for dt, peak in peaks.items()}
        return _sq_log((seconds(params[dt], spec, out, bw * x[-1] if dram else 0.0), meas)
                       for spec, meas, dt, out in rs)

    x = _pattern_search(loss, x0, lo, hi)
    return AttentionEfficiency(max_eff=x[0], dh_half=x[1], keys_half=x[2], causal_tile=x[3], dh_cap=dh_cap,
                               mem_eff=mem_eff, latency_s=x[4], q_half=x[5] if decode else a0.q_half,
                               dram_eff=x[-1] if dram else None, packs_groups=a0.packs_groups), loss(x)


DRAM_ROWS = 2  # sdpa rows beyond the caches needed to fit a fused kernel's pace there
BACKWARD_RANGE = (0.25, 8.0)  # a backward factor beyond these is a failed row, not a kernel


def _fit_backward(base: Hardware, backend: str, law: AttentionEfficiency, rows: list) -> float:
    """``AttentionEfficiency.backward`` of ``backend``: the median over its ``SDPA_BACKWARD_ROW`` rows of
    the measured time beyond the law's latency (and the gradients' fresh memory) over the law's work for
    the backward's FLOPs and bytes (``_row_sdpa_backward``), within ``BACKWARD_RANGE``."""
    hw = base.model_copy(update={"attention": {**base.attention, backend: law}})
    reg = _regimes(base)
    ratios = []
    for r in rows:
        spec = _row_sdpa_backward(r)
        lat, comp, mem = attention_call(compiled(hw, row_dtype(r), backend), r["B"] * r["H"], *spec)
        work = reg.kernel_s((0.0, comp, mem), spec[4], 0.0)
        if work > 0:
            ratios.append((measured_s(r) - lat - reg.fresh(_row_out(r))) / work)
    low, high = BACKWARD_RANGE
    return min(max(statistics.median(ratios), low), high) if ratios else 1.0


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

def fit_attention_speedup(rows: list) -> dict:
    """``Hardware.threads`` and ``attention_speedup`` from ``ITEMS_ROW`` rows: the same fused attention
    call of one (batch, head) item and of ``threads`` items (``B``), ``threads x t(1) / t(threads)``
    (between 1 and ``threads``); {} without both, or on one thread."""
    by = {r["B"]: measured_s(r) for r in rows if measured_s(r)}
    threads = max((r["threads"] for r in rows), default=1)
    if threads < 2 or 1 not in by or threads not in by:
        return {}
    return {"threads": threads, "attention_speedup": min(max(threads * by[1] / by[threads], 1.0), float(threads))}


def fit_cold(rows: list) -> dict:
    """``Hardware.cold_*`` fitted to ``COLD_ROW`` rows, or {} where they do not show an eviction.

    The small product's extra time after N bytes, over its extra after the most, is the share evicted:
    ``cold_from_bytes`` and ``cold_full_bytes`` are the two sizes (among those measured and their
    geometric middles) whose linear ramp, 0 up to the first and 1 from the second, fits those shares
    best in least squares. The whole extra of the small and the large product, after the most, gives a
    line in the bytes of the matrix: ``cold_latency_s + bytes * cold_s_per_byte`` (each at least 0).
    A row with an ``access`` (``profiler.cold``) gives that access its own time per byte: its extra
    after the most, beyond ``cold_latency_s``, per byte held (``cold_access_s_per_byte``, at least 0)."""
    by: dict = {}  # matrix bytes -> {after bytes: seconds}
    access: dict = {}  # access -> {after bytes: (seconds, bytes held)}
    for r in rows:
        s = r["ms"] * 1e-3
        if r.get("access"):
            access.setdefault(r["access"], {})[r["after_bytes"]] = (s, r["bytes"])
        else:
            by.setdefault(r["bytes"], {})[r["after_bytes"]] = s
    if len(by) < 2:
        return {}
    small, large = sorted(by)[0], sorted(by)[-1]
    s, l_ = by[small], by[large]
    most = max(s)
    if 0 not in s or most not in l_ or 0 not in l_:
        return {}
    whole = s[most] - s[0]
    if whole <= 0.1 * s[0]:  # no eviction worth a law
        return {}
    shares = [(n, (t - s[0]) / whole) for n, t in sorted(s.items())]
    sizes = sorted({n for n, _ in shares if n > 0} | set(_knees(n for n, _ in shares)))

    def ramp_loss(start: float, full: float) -> float:
        return sum((min(1.0, max(0.0, (n - start) / (full - start))) - x) ** 2 for n, x in shares)

    start, full = min(((a, b) for a in sizes for b in sizes if b > a), key=lambda ab: ramp_loss(*ab))
    per_byte = max(0.0, ((l_[most] - l_[0]) - whole) / (large - small))
    latency = max(0.0, whole - per_byte * small)
    per_access = {a: max(0.0, (t[most][0] - t[0][0] - latency) / t[most][1])
                  for a, t in sorted(access.items()) if most in t and 0 in t}
    return {"cold_from_bytes": start, "cold_full_bytes": full, "cold_s_per_byte": per_byte,
            "cold_latency_s": latency, **({"cold_access_s_per_byte": per_access} if per_access else {})}


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
    for part in (fit_host_time(rows), fit_element_ops(base, rows)):
        upd.update(part.update)
        what += part.what
    fitted = base.model_copy(update=upd)  # matmuls and SDPA: their outputs' fresh memory counted as fitted
    part = fit_matmul(fitted, rows)
    upd.update(part.update)
    what += part.what
    attention = fit_attention(fitted, rows, mem_eff=upd.get("mem_efficiency", base.mem_efficiency),
                              min_latency_s=upd.get("kernel_latency_s", base.kernel_latency_s))
    upd.update(attention.update)
    what += attention.what
    speedup = fit_attention_speedup([r for r in rows if r.get("op") == ITEMS_ROW])
    if speedup:
        upd.update(speedup)
        what.append(f"fused attention on {speedup['threads']} threads {speedup['attention_speedup']:.2f}x one")
    cold = fit_cold([r for r in rows if r.get("op") == COLD_ROW])
    if cold:
        upd.update(cold)
        what.append(f"operands evicted from {cold['cold_from_bytes'] / 2**20:.3g} MiB moved per call")
    pace = [measured_s(r) for r in rows if r.get("op") == PACE_ROW]
    if pace:
        upd["pace_s"] = statistics.median(pace)
        what.append("the reference workload's time (pace)")
    upd["calibration"] = f"fitted to {source or 'measured rows'}: {'; '.join(what) or 'nothing (no usable rows)'}" + (
        f"; left out: {', '.join(sorted(exclude))}" if exclude else "")
    return base.model_copy(update=upd)
