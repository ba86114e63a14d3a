"""Predicted time of a layer's kernels on a hardware profile.

Per kernel, on the device (all shares of the profile's published peaks, see ``hardware.py``):

- ``matmul`` (one matmul, batch x (m x k) @ (k x n)):
  ``latency + k_step * min(k, k_cap) + max(flops / (peak[dtype] * eff_mm), bytes / (bw * mem_eff))``,
  ``eff_mm = max_eff * m/(m+mn_half) * n/(n+mn_half) * k/(k+k_half)``; the k term is the latency
  of the serial reduction loop, counted with the fixed latency;
  a matrix-vector product (m = 1, batched or not) where the profile has a law for it:
  ``latency + bytes / (bw * gemv_mem_eff)``, it streams its matrices; any other matmul moving more than
  the law's ``cache_bytes`` takes at least ``bytes / (bw * dram_eff)`` of memory time (a CPU's gemm
  reads a matrix beyond its caches block by block).
- ``attention`` (a fused kernel, FlashAttention / cuDNN / efficient): ``latency + max(flops_mm' /
  (peak * eff_attn), bytes / (bw * mem_eff))``, ``eff_attn = max_eff * dh/(dh+dh_half) *
  keys/(keys+keys_half)`` of the chosen backend (dh no larger than the largest head dim fitted,
  ``dh_cap``: no extrapolation); softmax FLOPs overlap the matmuls and are not
  charged; a masked kernel also computes the tiles its mask boundary crosses (``flops_mm'``); beyond
  the caches its bytes take at least ``bytes / (bw * dram_eff)`` of the backend where fitted. On a
  profile with ``threads`` and ``attention_speedup`` (a CPU), a call of fewer independent items (batch x
  head x query block: ``cpu_query_block``) than threads leaves some idle: its work takes
  ``item_slowdown`` times longer (decode of one sequence over MLA's one latent head: one item). A
  backward kernel (``bwd:``, it recomputes the scores) takes the backend's ``backward`` times as long.
- ``vector`` / ``copy``: ``latency[kind] + max(flops / vector_flops, bytes / (bw * eff[kind]))
  + rows * row_s[kind]`` per op, by its ``fn`` where the profile has a law of that name (``mask``),
  else by its kind (``law_kind``: the ``opkinds`` vocabulary; a kernel of
  several ops takes the slowest kind's latency and bandwidth and every op's row term); matmuls inside
  such a kernel are charged as above. The fixed latency is what makes the effective bandwidth fall
  for small tensors: ``bytes / (latency + bytes / (bw * eff))``. The row term is the fixed work per
  row of a row-wise op (``RowLengths``): softmax and topk per row, a reduction per output; a topk
  also orders the k it keeps, ``rows * k * log2(k + 1) * topk_select_s``. On a profile with
  ``topk_paths`` (a CPU) a topk is priced as PyTorch's CPU kernel runs it instead: its latency, the
  work of the path its k takes per row (``topk_path_s``: a partial sort or a selection), and its
  bytes at the plain copy's rate. A topk writes its values beside its indices: the graph's gather
  of the values by them, in the topk's kernel, takes no law of its own, as ``calibrate``'s topk
  rows time both outputs.
- every kernel that moves more than ``cache_bytes`` streams them no faster than ``dram_eff`` of the
  bandwidth (``dram_parts``; a CPU: beyond its last-level cache);
- a layer whose kernels move more than ``cold_from_bytes`` in one call (a CPU) finds a share of what
  it holds between calls (weights, caches, inputs: ``Kernel.held``) evicted by its own traffic, growing
  linearly to all of it at ``cold_full_bytes`` (``cold_share``): each kernel that reads some adds
  ``share * (cold_latency_s + held * cold_s_per_byte)`` of memory time, fetching them anew (per byte at
  ``cold_access_s_per_byte`` of its access where the profile has one: a matmul of several rows, a
  gather of rows by index, ``cold_rate``);
- every kernel whose output is at least ``fresh_bytes`` also faults that output in page by page,
  ``out_bytes * fresh_s_per_byte`` (``fresh_parts``; a CPU: glibc maps blocks of 32 MiB and more anew
  for each op), counted with the fixed latency.

The layer: ``mode="eager"`` (PyTorch eager, the default) replays the launch queue: the host
spends the host time of the op's class (``opkinds.HOST_CLASS``: ``launch_overhead_s`` for
element-wise kernels, ``matmul_overhead_s``, ``sdpa_overhead_s``, ``index_overhead_s``, and
``view_overhead_s`` for each host-only op) issuing each kernel, the device runs them in order as
soon as they are issued and it is free, and the layer ends when the last kernel does. Small kernels
are then host-bound; a long kernel hides the host time of the kernels queued behind it. On a
profile with ``host_sync`` (a CPU: the host runs each op to its end) nothing overlaps: each op takes
the longer of its host time and its kernel time. In eager mode every op (kernel or view) also costs
the host ``sequence_overhead_s``: what an op takes more in a layer, after ops of other kinds, than in a
loop of its own (``fit.fit_host_time``). ``mode="graph"`` leaves the host out: the device
replays a captured sequence (CUDA graphs, torch.compile's cudagraph mode; a device timer such as
``triton.testing.do_bench`` sees the same).

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

from .analysis import BACKWARD_KERNEL, BACKWARD_PREFIX
from .hardware import AttentionEfficiency, Hardware, HardwareError, MatmulEfficiency
from .opkinds import AUTOGRAD, CALL, GRAPH_KINDS, HOST_CLASS, HOST_ONLY, VIEW
from .tape import choose, is_zero, larger, log2, plus, smaller
from .units import DTYPE_BYTES, DTYPES, INDEX_BYTES

MODES = ("eager", "graph")  # how a layer runs: the host issues each op, or the device replays a captured graph


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
            self._per_kernel = [KernelTime(name, inc, _bound(compute, memory, over), compute, memory, over, kind)
                                for name, inc, compute, memory, over, kind in self._rows]
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


def _bound(compute: float, memory: float, over: float) -> str:
    """What bounds one kernel: its work (compute or memory, the larger) unless its overhead is larger."""
    if compute >= memory:
        return "compute" if compute >= over else "overhead"
    return "memory" if memory >= over else "overhead"


# -- a profile compiled to plain floats ------------------------------------------------------------

def matmul_params(peak: float, bw: float, e: MatmulEfficiency) -> tuple:
    """``e`` on a profile's peak FLOP/s and bandwidth, as ``matmul_parts`` reads it: (rate = peak *
    max_eff, mn_half, k_half, k_step_s, k_serial_cap, bytes/s = bw * mem_eff, latency_s, a matrix-vector
    product's bytes/s = bw * gemv_mem_eff or 0.0: none, the bytes beyond which a matmul slows (inf: never),
    its bytes/s there)."""
    slow = e.cache_bytes is not None and e.dram_eff is not None
    return (peak * e.max_eff, e.mn_half, e.k_half, e.k_step_s, e.k_serial_cap, bw * e.mem_eff, e.latency_s,
            bw * (e.gemv_mem_eff or 0.0), e.cache_bytes if slow else math.inf, bw * (e.dram_eff if slow else 1.0))


def attention_params(peak: float, bw: float, e: AttentionEfficiency) -> tuple:
    """``e`` on a profile's peak FLOP/s and bandwidth, as ``attention_parts`` reads it: (rate = peak *
    max_eff, dh_half, keys_half, causal_tile, bytes/s = bw * mem_eff, latency_s, dh_cap or inf, q_half)."""
    return (peak * e.max_eff, e.dh_half, e.keys_half, e.causal_tile, bw * e.mem_eff, e.latency_s,
            e.dh_cap or math.inf, e.q_half)


class CompiledProfile:
    """A profile's numbers for one dtype and attention backend as plain floats, which the
    predictor's inner loop reads instead of the pydantic fields."""

    __slots__ = ("peak", "vflops", "mm", "at", "vlat", "vbw", "kinds", "select_s", "rowwise", "host", "host_mm",
                 "host_sdpa", "seq", "sync", "isz", "cache_bytes", "dram_bw", "fresh_bytes", "fresh_s", "packs",
                 "backward_call", "cold", "topk", "par", "at_bwd", "at_dram")

    def __init__(self, hw: Hardware, dtype: str, backend: Optional[str]):
        if dtype not in hw.peak_flops:
            raise HardwareError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        peak = hw.tensor_peak(dtype)
        bw = hw.mem_bandwidth
        self.peak, self.vflops = peak, hw.vector_flops
        self.mm = matmul_params(peak, bw, hw.matmul_eff(dtype))
        self.at = attention_params(peak, bw, hw.attention_eff(backend))
        self.packs = hw.attention_eff(backend).packs_groups
        self.at_bwd = hw.attention_eff(backend).backward  # a fused kernel's backward over its law
        at_dram = hw.attention_eff(backend).dram_eff  # its pace beyond the caches (0.0: the profile's)
        self.at_dram = bw * at_dram if at_dram else 0.0
        self.vlat = hw.kernel_latency_s
        self.vbw = bw * hw.mem_efficiency
        # op kind -> (latency, bandwidth, time per row), for the kinds the profile knows apart
        self.kinds = {k: (hw.op_latency(k), bw * hw.op_eff(k), hw.op_row_s(k))
                      for k in {*hw.vector_eff, *hw.vector_latency, *hw.vector_row_s}}
        self.select_s = hw.topk_select_s
        self.topk = hw.topk_paths.params() if hw.topk_paths is not None else None  # PyTorch's CPU topk
        # (threads, their speedup) on a fused attention call's items (a CPU's); None: no such law
        self.par = ((hw.threads, hw.attention_speedup) if hw.threads and hw.threads > 1 and hw.attention_speedup
                    else None)
        self.rowwise = self.select_s > 0 or self.topk is not None or any(law[2] > 0 for law in self.kinds.values())
        self.host_mm, self.host_sdpa = hw.host_matmul_s, hw.host_sdpa_s
        # host class (opkinds.HOST_CLASSES) -> host time of issuing one op of it
        self.backward_call = hw.backward_call_s or 0.0
        self.host = {VIEW: hw.view_overhead_s or 0.0, CALL: hw.module_overhead_s or 0.0,
                     AUTOGRAD: hw.autograd_node_s or 0.0,
                     "elementwise": hw.launch_overhead_s, "matmul": self.host_mm,
                     "sdpa": self.host_sdpa, "index": hw.host_index_s}
        self.seq = hw.sequence_overhead_s
        self.sync = hw.host_sync
        self.isz = DTYPE_BYTES[dtype]
        self.cache_bytes, self.dram_bw = hw.cache_bytes or math.inf, bw * (hw.dram_eff or 1.0)
        self.fresh_bytes, self.fresh_s = hw.fresh_bytes or math.inf, hw.fresh_s_per_byte
        # (from, full, latency, s per byte streamed, by a matmul of several rows, by a gather) of operands
        # evicted between calls; None: the profile has no such law
        per = hw.cold_access_s_per_byte
        self.cold = ((hw.cold_from_bytes, hw.cold_full_bytes or hw.cold_from_bytes, hw.cold_latency_s,
                      hw.cold_s_per_byte, per.get("matmul", hw.cold_s_per_byte),
                      per.get("index", hw.cold_s_per_byte)) if hw.cold_from_bytes else None)


def compiled(hw: Hardware, dtype: str, backend: Optional[str] = None) -> CompiledProfile:
    """``hw`` compiled for ``dtype`` and ``backend`` (None: its default backend), built on first
    use and kept on the profile by ``Hardware.cached``. HardwareError: unknown dtype or backend."""
    return hw.cached(("timing", dtype, backend), CompiledProfile, hw, dtype, backend)


# -- per-kernel device time: (latency, compute, memory) ---------------------------------------------

def matmul_parts(p: tuple, b: float, m: float, k: float, n: float, flops: float, nbytes: float) -> tuple:
    """(latency, compute, memory) seconds of one matmul kernel (formula: ``MatmulEfficiency``); ``p``:
    ``matmul_params``."""
    rate, mn_half, k_half, k_step, k_cap, mbw, lat, gemv_bw, mm_cache, mm_dram_bw = p
    if gemv_bw > 0.0 and m == 1:  # matrix-vector products: they stream the matrices
        return lat, 0.0, nbytes / gemv_bw
    memory = dram_parts(mm_cache, mm_dram_bw, nbytes, nbytes / mbw)
    if flops <= 0.0 or k <= 0:
        return lat, 0.0, memory
    eff = (m / (m + mn_half)) * (n / (n + mn_half)) * (k / (k + k_half))
    return plus(lat, _serial_s(k_step, k, k_cap)), flops / (rate * eff), memory


def _serial_s(k_step: float, k: float, k_cap: float) -> float:
    """The latency of a matmul's serial reduction loop, ``k_step * min(k, k_cap)`` (a plain 0.0, and no
    step for ``tape`` to record, where the profile has none)."""
    return 0.0 if k_step == 0.0 else k_step * smaller(k, k_cap)


def attention_parts(p: tuple, dh: float, keys: float, fraction: float, flops_mm: float,
                    nbytes: float, queries: float) -> tuple:
    """(latency, compute, memory) seconds of one fused attention kernel (formula:
    ``AttentionEfficiency``); ``p``: ``attention_params``; ``fraction`` < 1: a masked kernel's share
    of the dense work; ``queries``: its query rows per (batch, key head)."""
    rate, dh_half, keys_half, tile, abw, lat, dh_cap, q_half = p
    if fraction < 1.0 and keys > 0:
        dense = flops_mm / fraction
        tiles = flops_mm + 0.5 * tile / keys * dense
        flops_mm = smaller(tiles, dense)
    if dh > dh_cap:
        dh = dh_cap
    eff = (dh / (dh + dh_half)) * (keys / (keys + keys_half)) if dh > 0 and keys > 0 else 1.0
    if q_half > 0.0 and queries > 0.0:
        eff *= queries / (queries + q_half)
    return lat, flops_mm / (rate * eff) if flops_mm > 0 else 0.0, nbytes / abw


def topk_path_s(p: tuple, elems: float, out_elems: float, row: float) -> float:
    """Seconds of a topk's ordering work on PyTorch's CPU kernel (``Hardware.topk_paths``; ``p``: its
    ``params()``) over ``elems`` candidates in rows of ``row``, keeping ``out_elems`` in all: per row,
    a partial sort where ``k * partial_from <= row``, else a selection and a sort of the k kept. 0 where
    the row is unknown. Example: 7,680 rows of 1,536 keeping 16 take the partial sort, 7,680 x (1,536
    x scan_s + 16 x log2(96) x log2(17) x heap_s)."""
    if row <= 0.0 or elems <= 0.0 or out_elems <= 0.0:
        return 0.0
    rows = elems / row
    k = out_elems / rows
    kept = k * log2(k + 1.0)
    partial = row * p[1] + kept * log2(row / k) * p[2]
    selection = row * p[3] + kept * p[4]
    return rows * choose(k * p[5] <= row, partial, selection)


def cpu_query_block(queries: float) -> float:
    """Query rows per block of PyTorch's CPU flash attention (ATen's ``FlashAttentionKernel.cpp``): 32,
    64 from 192 rows, 256 from 768; each block of each (batch, head) is one item of its parallel loop."""
    return choose(queries < 192, 32.0, choose(queries < 768, 64.0, 256.0))


def item_slowdown(par: tuple, items: float) -> float:
    """How much longer a fused attention call of ``items`` independent items takes than the law fitted on
    calls of many (``par``: (threads, their speedup over one thread)): 1 from ``threads`` items on; one
    item runs on one thread, ``speedup`` times slower; between, the speedup grows linearly with the
    threads at work. Example: 2 threads at 1.4x: one item 1.4x, two 1.0x."""
    threads, speedup = par
    busy = smaller(items, float(threads))
    return speedup / (1.0 + (speedup - 1.0) * (busy - 1.0) / (threads - 1.0))


def attention_call(c: "CompiledProfile", items: float, dh: float, keys: float, fraction: float, flops_mm: float,
                   nbytes: float, queries: float) -> tuple:
    """``attention_parts`` of one fused attention call over ``items`` (batch, head) pairs of ``queries``
    rows each, its memory time no shorter than its bytes at the backend's pace beyond the caches
    (``AttentionEfficiency.dram_eff``) where the profile has one, its work slowed by ``item_slowdown``
    where the profile says a call of fewer items than threads leaves some idle."""
    lat, comp, mem = attention_parts(c.at, dh, keys, fraction, flops_mm, nbytes, queries)
    if c.at_dram > 0.0:
        mem = dram_parts(c.cache_bytes, c.at_dram, nbytes, mem)
    if c.par is not None:
        slow = item_slowdown(c.par, items * math.ceil(queries / cpu_query_block(queries)))
        comp, mem = comp * slow, mem * slow
    return lat, comp, mem


def vector_parts(lat: float, vflops: float, bw: float, flops: float, nbytes: float) -> tuple:
    """(latency, compute, memory) seconds of one non-matmul kernel reaching bandwidth ``bw``."""
    return lat, flops / vflops, nbytes / bw


def row_parts(row_s: float, select_s: float, elems: float, out_elems: float, row: float) -> float:
    """Seconds of the row term of one op over ``max(elems, out_elems)`` elements in rows of ``row``:
    ``rows * row_s``, and for a topk (``select_s`` > 0) keeping ``k = out_elems / rows`` per row,
    ``rows * k * log2(k + 1) * select_s``. 0 where the row is unknown (``row`` <= 0)."""
    if row <= 0.0:
        return 0.0
    rows = larger(out_elems, elems) / row
    t = rows * row_s
    if select_s > 0.0 and rows > 0.0:
        t += out_elems * log2(out_elems / rows + 1.0) * select_s
    return t


def dram_parts(cache_bytes: float, dram_bw: float, nbytes: float, memory_s: float) -> float:
    """The memory time of a kernel moving ``nbytes``: beyond ``cache_bytes`` (``Hardware.cache_bytes``)
    no shorter than streaming them at ``dram_bw``."""
    if cache_bytes == math.inf:  # a profile without the law: no step for ``tape`` to record
        return memory_s
    dram = nbytes / dram_bw
    return choose(nbytes > cache_bytes, larger(dram, memory_s), memory_s)


def fresh_parts(fresh_bytes: float, s_per_byte: float, out_bytes: float) -> float:
    """Seconds of faulting in an output of ``out_bytes`` page by page: 0 below ``fresh_bytes``
    (``Hardware.fresh_bytes``: the allocator's cached memory), else ``out_bytes * s_per_byte``."""
    if fresh_bytes == math.inf:  # a profile without the law (an output is never infinite): no step to record
        return 0.0
    return choose(out_bytes >= fresh_bytes, out_bytes * s_per_byte, 0.0)


def cold_share(law: tuple, kernels: list) -> float:
    """The share of a layer's weights, caches and inputs that its own traffic evicts between two calls
    (``Hardware.cold_from_bytes``, ``cold_full_bytes``): 0 up to ``from`` bytes moved by its kernels in
    one call, growing linearly to 1 at ``full``. Measured by ``calibrate`` on a CPU: a matrix-vector
    product timed right after others read N MB (``profiler.cold``)."""
    start, full = law[0], law[1]
    moved = 0.0
    for k in kernels:
        if k.kind not in HOST_ONLY:
            moved = plus(moved, k.bytes)
    if full <= start:
        return choose(moved > start, 1.0, 0.0)
    return smaller(larger((moved - start) / (full - start), 0.0), 1.0)


def cold_rate(law: tuple, k) -> float:
    """Seconds per byte a kernel pays for operands fetched anew (``CompiledProfile.cold``): a matmul of
    more than one row at the ``matmul`` rate, a kernel that gathers by index at the ``index`` rate, any
    other (a matrix-vector product, a copy, an attention kernel) as a stream."""
    if k.kind == "matmul":
        return law[3] if k.ops[0].mm[1] == 1 else law[4]
    if k.kind == "vector" and any(law_kind(op) == "index" for op in k.ops):
        return law[5]
    return law[3]


def kernel_s(parts: tuple) -> float:
    """A kernel's device time from its (latency, compute, memory): the work overlaps, the latency adds."""
    lat, comp, mem = parts
    return lat + larger(comp, mem)


def law_kind(op) -> str:
    """The kind whose fitted law prices a graph op (``opkinds`` vocabulary): a gather is ``index``, and
    its gradient (``analysis.add_backward`` names every gradient op ``grad_...``) a ``scatter``."""
    kind = GRAPH_KINDS.get(op.kind, op.kind)
    if kind == "index" and op.name.startswith(BACKWARD_PREFIX):
        return "scatter"
    return kind


class RowLengths:
    """Elements per row of the ops of a layer's kernels: ``Op.row`` where set; a reduction's elements
    per output; else the row of the tensor the op reads, which is the ``n`` of the matmul that wrote it,
    the ``k`` of the topk that wrote it, or, through an op that keeps its input's size (scale, mask, a
    gather by a topk's indices), the row of that input. 0: unknown (no row term is charged)."""

    __slots__ = ("_producer", "_tensor")

    def __init__(self, kernels: Iterable):
        self._producer = {op.out: op for k in kernels for op in k.ops}
        self._tensor: dict = {}

    def of_op(self, op) -> float:
        if op.row > 0.0:
            return op.row
        if op.kind == "reduction" and 0.0 < op.out_elems < op.elems:
            return op.elems / op.out_elems
        return self.of_tensor(op.reads[0]) if op.reads else 0.0

    def of_tensor(self, name: str) -> float:
        row = self._tensor.get(name)
        if row is None:
            row = self._tensor[name] = self._written(self._producer.get(name))
        return row

    def _written(self, p) -> float:
        """The row of the tensor ``p`` writes (see the class docstring)."""
        if p is None or p.kind == "reduction":
            return 0.0
        if p.kind == "matmul" and p.mm is not None:
            return p.mm[3] * 1.0  # float(n), which a traced n stays
        if p.kind == "topk":
            row = self.of_op(p)
            return p.out_elems * row / p.elems if row > 0.0 and p.elems > 0.0 else 0.0
        for r in p.reads:
            q = self._producer.get(r)
            if q is not None and q.out_elems == p.out_elems:
                return self.of_tensor(r)
        return 0.0


def host_only_s(c: CompiledProfile, k) -> float:
    """The host time of a host-only kernel: its class's time per op times its count (views, module
    calls; the autograd engine: per node, plus the backward call once)."""
    s = c.host[k.kind] * k.ops[0].elems
    return s + c.backward_call if k.kind == AUTOGRAD else s


def backward_parts(c: CompiledProfile, parts: tuple) -> tuple:
    """A fused attention kernel's (latency, compute, memory) for its backward: the work terms times the
    backend's ``backward`` (``AttentionEfficiency``)."""
    lat, comp, mem = parts
    return (lat, comp, mem) if c.at_bwd == 1.0 else (lat, comp * c.at_bwd, mem * c.at_bwd)


def output_bytes(k, isz: int) -> float:
    """The bytes of the output a kernel allocates: what its last op writes (topk: its int64 indices)."""
    last = k.ops[-1]
    return last.out_elems * (INDEX_BYTES if last.kind == "topk" else isz)


def fresh_output_bytes(kernels: Iterable, hw: Hardware, dtype: str) -> float:
    """The bytes of the outputs the model faults in page by page (``fresh_parts``: each of
    ``hw.fresh_bytes`` or more), summed over ``kernels``; 0 on a profile without the law."""
    if not hw.fresh_bytes:
        return 0.0
    isz = DTYPE_BYTES[dtype]
    return sum(b for b in (output_bytes(k, isz) for k in kernels if k.kind not in HOST_ONLY) if b >= hw.fresh_bytes)


def _kernel_parts(c: CompiledProfile, k, rows: Optional[RowLengths]) -> tuple:
    kind = k.kind
    if kind in HOST_ONLY:  # views, module calls, the autograd engine: no device time
        return 0.0, 0.0, 0.0, host_only_s(c, k)
    fresh = fresh_parts(c.fresh_bytes, c.fresh_s, output_bytes(k, c.isz))
    if kind == "matmul":
        b, m, kk, n = k.ops[0].mm
        lat, comp, mem = matmul_parts(c.mm, b, m, kk, n, k.flops, k.bytes)
        return plus(lat, fresh), comp, dram_parts(c.cache_bytes, c.dram_bw, k.bytes, mem), c.host_mm
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
            items, queries, dh, keys = sc.mm
            if not c.packs:  # each query head's rows apart
                queries = queries / sc.group
                items = items * sc.group
            lat, comp, mem = attention_call(c, items, dh, keys, sc.fraction, k.flops_matmul, k.bytes, queries)
            if k.name.startswith(BACKWARD_KERNEL):
                lat, comp, mem = backward_parts(c, (lat, comp, mem))
            return plus(lat, fresh), comp, dram_parts(c.cache_bytes, c.dram_bw, k.bytes, mem), c.host_sdpa
    # vector / copy (and an attention kernel without a matmul, which should not exist)
    compute = per_row = 0.0
    lat, bw = c.vlat, c.vbw
    kinds = c.kinds
    host = None  # the host class of the kernel's first op that is not element-wise
    topk = k.ops[0].kind == "topk"  # its values, a gather by its indices in the graph, are written by the topk
    for op in k.ops:
        if op.kind == "matmul" and op.mm is not None:
            b, m, kk, n = op.mm
            ml, mc, _ = matmul_parts(c.mm, b, m, kk, n, op.flops, 0.0)
            compute += mc
            lat = larger(ml, lat)
            continue
        compute += op.flops / c.vflops
        opk = law_kind(op)
        if topk and opk == "index":
            continue
        if host is None and opk != "elementwise":
            host = HOST_CLASS.get(opk, "elementwise")
        if opk == "topk" and c.topk is not None:  # PyTorch's CPU kernel: the work of its path, bytes as a copy
            lat = larger(c.topk[0], lat)
            if rows is not None:
                per_row = plus(per_row, topk_path_s(c.topk, op.elems, op.out_elems, rows.of_op(op)))
            continue
        law = (kinds.get(op.fn) or kinds.get(opk)) if kinds else None  # a law of the op's own (fit.OWN_LAW)
        if law is not None:
            lat = larger(law[0], lat)
            if law[1] < bw:
                bw = law[1]
        if rows is not None:
            select_s = c.select_s if opk == "topk" else 0.0
            row_s = law[2] if law is not None else 0.0
            if row_s > 0.0 or select_s > 0.0:
                per_row += row_parts(row_s, select_s, op.elems, op.out_elems, rows.of_op(op))
    memory = dram_parts(c.cache_bytes, c.dram_bw, k.bytes, k.bytes / bw)
    return plus(plus(lat, per_row), fresh), compute, memory, c.host[host or "elementwise"]


def predict(kernels: Iterable, hw: Hardware, dtype: str = "bf16", *, backend: Optional[str] = None,
            mode: str = "eager") -> TimeEstimate:
    """Predicted time of ``kernels`` (``analysis.kernels``, in launch order) on ``hw`` in ``dtype``.

    ``backend``: the fused-attention backend (default ``hw.attention_backend``); ``mode``: "eager"
    (host issues each kernel) or "graph" (device time only). See the module docstring.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    c = compiled(hw, dtype, backend)
    eager = mode == "eager"
    sync = eager and c.sync
    seq = c.seq if eager else 0.0
    rate, mn_half, k_half, k_step, k_cap, mbw, mlat, gemv_bw, mm_cache, mm_dram_bw = c.mm
    host_mm, fresh_bytes, isz, cache_bytes = c.host_mm, c.fresh_bytes, c.isz, c.cache_bytes
    host = gpu = 0.0  # the time the host has issued up to; the time the device has run up to
    comp_s = work_s = dev_s = 0.0
    if c.rowwise or c.cold is not None:  # both read the whole layer before its first kernel is priced
        kernels = list(kernels)
    row_lengths = RowLengths(kernels) if c.rowwise else None
    cold = cold_share(c.cold, kernels) if c.cold is not None else None
    rows = []
    append = rows.append
    for k in kernels:
        if k.kind == "matmul":  # matmul_parts, inlined: the common case
            op = k.ops[0]
            bb, m, kk, n = op.mm
            flops = k.flops
            gemv = gemv_bw > 0.0 and m == 1  # matrix-vector products: they stream the matrices
            memory = dram_parts(cache_bytes, c.dram_bw, k.bytes, k.bytes / (gemv_bw if gemv else mbw))
            if not gemv:
                memory = dram_parts(mm_cache, mm_dram_bw, k.bytes, memory)
            if flops > 0.0 and kk > 0 and not gemv:
                lat = plus(mlat, _serial_s(k_step, kk, k_cap))
                compute = flops / (rate * (m / (m + mn_half)) * (n / (n + mn_half)) * (kk / (kk + k_half)))
            else:
                lat, compute = mlat, 0.0
            lat = plus(lat, fresh_parts(fresh_bytes, c.fresh_s, op.out_elems * isz))
            h = host_mm
        else:
            lat, compute, memory, h = _kernel_parts(c, k, row_lengths)
        computing = compute >= memory
        work = choose(computing, compute, memory)
        comp_s = plus(comp_s, choose(computing, work, 0.0))
        if cold is not None and not is_zero(k.held):  # its operands fetched anew: memory time, added
            refetch = cold * (c.cold[2] + k.held * cold_rate(c.cold, k))
            memory, work = memory + refetch, work + refetch
        busy = lat + work  # the kernel's device time
        was = gpu
        if sync:  # the host runs the op to its end: the longer of its host and kernel time
            host += h + seq
            gpu = plus(gpu, choose(h > busy, h - work, lat) + seq + work)
        elif eager:  # the kernel starts once the host has issued it and the device is free
            issue = h + seq
            if not is_zero(issue):  # (else the host is where it was, never past the device)
                host += issue
                gpu = larger(host, gpu)
            gpu = plus(gpu, busy)
        else:
            gpu = plus(gpu, busy)
        work_s = plus(work_s, work)
        dev_s = plus(dev_s, busy)
        append((k.name, gpu - was, compute, memory, gpu - was - work, k.kind))
    # each kernel adds its work and its overhead (waiting for the host, and its latency) to the layer:
    # the overhead is what the layer took beyond the work (fewer steps per kernel for ``tape`` to replay)
    mem_s, over_s = work_s - comp_s, gpu - work_s
    other = choose(mem_s >= over_s, "memory", "overhead")
    bound = choose(comp_s >= mem_s, choose(comp_s >= over_s, "compute", other), other)
    return TimeEstimate(gpu, comp_s, mem_s, over_s, bound, rows, host if eager else 0.0, dev_s, mode,
                        backend or hw.attention_backend)
