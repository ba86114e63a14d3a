"""Timing and peak memory of one callable on one device.

``measure(fn, device)`` times repeated calls of ``fn`` and returns a ``Timing`` (median, p10, p90,
repetitions, and how tight the median is):

- CUDA: one pair of CUDA events around each call. Before each call the L2 cache is flushed by
  zeroing a buffer of max(2 x L2, 256 MiB), and the device is synchronised after the flush, so
  the call starts on an idle GPU with a cold cache: the measured time includes the host's
  per-kernel launch cost wherever the host, not the GPU, is the bottleneck (eager PyTorch on small
  shapes), as it does in a model run layer after layer. (``triton.testing.do_bench`` lets the
  host run ahead during its flush and so hides that cost; ``do_bench_check`` compares the two.)
- MPS: ``torch.mps.synchronize()`` before and after the call, host ``perf_counter`` between.
- CPU: host ``perf_counter`` around the call.

Repetition: ``warmup`` untimed calls (fewer when one call alone eats half the budget), then at
least ``min_reps`` timed calls, going on until the median is stable (the ~95% confidence interval
of the median, from order statistics, is within ``rel_ci`` of it on either side), ``max_reps``
calls have run, or ``budget_s`` seconds have passed. A single call slower than the budget is timed
fewer than ``min_reps`` times: timing stops once 3 x ``budget_s`` has passed. On a host clock (CPU,
MPS) the calls are timed in slices of at least 0.1 s, and a slice during which other processes
took half a core or more (``quiet.CpuWatch``: a descheduled intra-op thread stalls a whole eager
call) is set aside: it counts neither as a sample nor against the budget, and the timing waits up to
``QUIET_WAIT_S`` beyond its hard stop for quiet slices (with none, the disturbed calls are used).

``combine_rounds(timings)`` makes one Timing of a point timed in several rounds interleaved with
other points (``profiler.sweep``): the fastest round's.

Graph mode (``cuda_graph(fn)``): one call of ``fn`` captured in a ``torch.cuda.CUDAGraph``, after
warm-up calls on a side stream (PyTorch's "CUDA Graphs" notes: capture on a non-default stream,
warm up first so that lazy initialisation and the caching allocator settle outside the capture);
``measure`` then times its replay with CUDA events like any call. Each replay is one graph launch,
whose host time the measurement includes once: the device runs the kernels back to back, with no
host time between them.

``op_times(fn, device)`` is where the time goes, by op kind (``costmodel.opkinds``), from
``torch.profiler``: per call, the host's self time in each aten op (the op's own time and that of
the runtime calls it makes, such as kernel launches, not that of the aten ops it calls), and on
CUDA the device time of the kernels each aten op launched. An op of no known kind that calls
other aten ops (a composite such as ``softmax`` or ``scaled_dot_product_attention``) takes the kind
of the first of them that has one. Time outside every aten op (Python between the ops) is in
neither. It also returns the profiled call's own wall time: the profiler's cost per op makes it
longer than the call's unprofiled time (a decode step 1.3-2.3x on 2 EPYC cores, a prefill up to
1.4x), so host self times are only comparable with a measured layer time in proportion to it.

``peak_memory(fn, device)`` is the memory one call needs above what was allocated before it
(its temporaries, outputs and, in training, saved activations and gradients):

- CUDA: the caching allocator's counters (``reset_peak_memory_stats``, then
  ``max_memory_allocated`` minus ``memory_allocated`` before the call).
- CPU and MPS: neither allocator keeps a peak counter that torch exposes, so attncost counts the
  bytes of live tensor storages at the dispatcher (a ``TorchDispatchMode`` that adds each op's
  new output storage and subtracts it when its last tensor dies) and reports their peak. It sees
  every tensor an op returns, including those autograd saves, but not a kernel's internal
  workspace nor the allocator's rounding, so it is a close lower bound of the allocator's peak.
"""

import contextlib
import functools
import gc
import math
import os
import statistics
import sys
import time
import weakref
from typing import Callable, Optional

from ..costmodel.results import Timing
from .device import l2_bytes, sdpa_backends_used, sdpa_context, synchronize, torch_dtype
from .quiet import SLICE_S, CpuWatch

FLUSH_MIN_BYTES = 256 * 2**20
QUIET_WAIT_ENV = "ATTNCOST_QUIET_WAIT_S"  # sets QUIET_WAIT_S (0: never wait for a quiet machine)


def _quiet_wait_s(default: float = 3.0) -> float:
    """How much longer than its hard stop a CPU timing may wait for a quiet machine: ``QUIET_WAIT_ENV``
    where it holds a number of seconds >= 0, else ``default``."""
    try:
        value = float(os.environ.get(QUIET_WAIT_ENV, default))
    except ValueError:
        return default
    return value if 0.0 <= value < math.inf else default


QUIET_WAIT_S = _quiet_wait_s()
_flush_buffers: dict = {}


def measure(fn: Callable[[], object], device: str, *, min_reps: int = 5, max_reps: int = 1000,
            budget_s: float = 2.0, warmup: int = 3, rel_ci: float = 0.02,
            flush_l2: bool = True) -> Timing:
    """Time ``fn()`` on ``device`` ("cuda", "mps" or "cpu"); see the module docstring."""
    if min_reps < 1 or max_reps < min_reps:
        raise ValueError(f"need 1 <= min_reps <= max_reps, got min_reps={min_reps}, max_reps={max_reps}")
    cuda = device == "cuda"
    flush = _flusher(device) if (cuda and flush_l2) else None
    if cuda:
        import torch

        make_event = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731

    start = time.perf_counter()
    for i in range(max(0, warmup)):
        t0 = time.perf_counter()
        if flush is not None:
            flush()
        fn()
        synchronize(device)
        if time.perf_counter() - t0 > budget_s / 2:
            break  # one slow call is warm-up enough
    hard_stop = start + 3 * budget_s
    if not cuda:
        samples, stable = _cpu_samples(fn, device, min_reps, max_reps, budget_s, rel_ci, hard_stop)
    else:
        samples, stable = _cuda_samples(fn, flush, make_event, min_reps, max_reps, budget_s, rel_ci, hard_stop)
    s = sorted(samples)
    ci = _ci_rel(s)
    return Timing(median_s=_percentile(s, 50), p10_s=_percentile(s, 10), p90_s=_percentile(s, 90),
                  repetitions=len(s), min_s=s[0], ci_rel=ci if math.isfinite(ci) else None, stable=stable)


def combine_rounds(rounds: list, rel_ci: float = 0.02) -> Timing:
    """One Timing of the ``Timing`` of each round of a point: median, p10 and p90 those of the fastest
    round (the least median: the machine at its own pace, which the slow spells of a shared machine
    only ever lengthen), min the least, repetitions summed; ``ci_rel`` the half-range of the rounds'
    medians relative to their median (with one round, its own), stable when that is within ``rel_ci``."""
    if len(rounds) == 1:
        return rounds[0]
    med = [t.median_s for t in rounds]
    mid = statistics.median(med)
    best = min(rounds, key=lambda t: t.median_s)
    spread = (max(med) - min(med)) / (2 * mid) if mid > 0 else None
    return Timing(median_s=best.median_s, p10_s=best.p10_s, p90_s=best.p90_s,
                  repetitions=sum(t.repetitions for t in rounds),
                  min_s=min(t.min_s if t.min_s is not None else t.median_s for t in rounds), ci_rel=spread,
                  stable=spread is not None and spread <= rel_ci)


def _cuda_samples(fn, flush, make_event, min_reps: int, max_reps: int, budget_s: float, rel_ci: float,
                  hard_stop: float) -> tuple:
    """(seconds per call, stable): CUDA events around each call, in batches until the median is
    stable, ``max_reps`` calls or the budget (see the module docstring)."""
    samples: list = []
    t_begin = time.perf_counter()
    stable = False
    while True:
        n = len(samples)
        elapsed = time.perf_counter() - t_begin
        per_rep = elapsed / n if n else 0.0
        if n < min_reps:
            batch = min_reps - n
            if n and time.perf_counter() + per_rep > hard_stop:
                break
        else:
            remaining = budget_s - elapsed
            if remaining <= 0 or n >= max_reps:
                break
            batch = min(max_reps - n, max(1, n // 4), max(1, int(remaining / per_rep)) if per_rep else n)
        pairs = []
        for _ in range(batch):
            if flush is not None:
                flush()
                synchronize("cuda")
            a, b = make_event(), make_event()
            a.record()
            fn()
            b.record()
            pairs.append((a, b))
            if n == 0 and len(pairs) == 1:
                # the first call decides whether more fit in the budget
                break
        synchronize("cuda")
        samples.extend(a.elapsed_time(b) / 1e3 for a, b in pairs)
        if time.perf_counter() > hard_stop:
            break
        if len(samples) >= min_reps and _ci_rel(sorted(samples)) <= rel_ci:
            stable = True
            break
    return samples, stable


def _cpu_samples(fn, device: str, min_reps: int, max_reps: int, budget_s: float, rel_ci: float,
                 hard_stop: float) -> tuple:
    """(seconds per call, stable) on a host clock, in slices of at least ``quiet.SLICE_S`` (or the
    budget): a slice during which other processes used ``quiet.BUSY_CORES`` or more is set aside
    and does not count against the budget; timing goes on until the median of the quiet calls is
    stable, ``max_reps`` quiet calls, the budget spent on quiet slices, or the hard stop, which
    waits up to ``QUIET_WAIT_S`` longer for a quiet machine. Without a quiet slice by then, the
    disturbed calls are all there is (and the timing is not stable)."""
    watch = CpuWatch()
    quiet: list = []
    disturbed: list = []
    begin = time.perf_counter()
    waited = 0.0
    slice_s = min(SLICE_S, budget_s)
    stable = False
    while True:
        watch.start()
        slice_start = time.perf_counter()
        calls: list = []
        while True:
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            calls.append(time.perf_counter() - t0)
            n = len(quiet) + len(calls)
            if n >= min_reps and _pow2(len(calls)) and _ci_rel(sorted(quiet + calls)) <= rel_ci \
                    and not watch.disturbed():  # stable already (a disturbed machine rarely is)
                return quiet + calls, True
            if time.perf_counter() - slice_start >= slice_s or n >= max_reps:
                break
        if watch.disturbed():
            disturbed.extend(calls)
            waited += time.perf_counter() - slice_start
        else:
            quiet.extend(calls)
        now = time.perf_counter()
        n = len(quiet)
        if n >= min_reps and _ci_rel(sorted(quiet)) <= rel_ci:
            stable = True
            break
        if n >= max_reps:
            break
        if n >= min_reps and now - begin - waited >= budget_s:
            break
        per_call = (now - begin) / (n + len(disturbed))
        if now + per_call > hard_stop + min(waited, QUIET_WAIT_S):
            break
    return (quiet or disturbed), stable


def _pow2(n: int) -> bool:
    return n >= 4 and not n & (n - 1)


def _percentile(s: list, q: float) -> float:
    """Linear interpolation between order statistics of the sorted list ``s``."""
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _ci_rel(s: list) -> float:
    """Half-width of the ~95% distribution-free confidence interval of the median, relative to
    it: order statistics n/2 -+ 0.98 sqrt(n) of the sorted samples ``s``."""
    n = len(s)
    if n < 2:
        return math.inf
    med = _percentile(s, 50)
    if med <= 0:
        return math.inf
    lo = max(0, int(math.floor(n / 2 - 0.98 * math.sqrt(n))) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + 0.98 * math.sqrt(n))) - 1)
    return (s[hi] - s[lo]) / (2 * med)


def _flusher(device: str) -> Optional[Callable[[], None]]:
    """A function that evicts the GPU's L2 cache by writing a buffer of at least twice its size."""
    buf = _flush_buffers.get(device)
    if buf is None:
        import torch

        size = max(FLUSH_MIN_BYTES, 2 * (l2_bytes(device) or 0))
        try:
            buf = torch.empty(size // 4, dtype=torch.int32, device=device)
        except RuntimeError:  # no room for it: time without flushing
            return None
        _flush_buffers[device] = buf
    return buf.zero_


def release_flush_buffer(device: str = "cuda") -> None:
    """Free the L2-flush buffer (it is kept between calls of ``measure``)."""
    _flush_buffers.pop(device, None)


# -- graph mode ----------------------------------------------------------------------------
def cuda_graph(fn: Callable[[], object], warmup: int = 3, cuda=None) -> Callable[[], object]:
    """The replay of one call of ``fn`` captured in a CUDA graph (see the module docstring): a
    function that replays it and returns what the captured call returned (its tensors are rewritten
    by each replay). ``cuda``: torch.cuda, or a stand-in with its Stream, current_stream, stream,
    CUDAGraph and graph (tests)."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    side = cuda.Stream()
    side.wait_stream(cuda.current_stream())
    with cuda.stream(side):
        for _ in range(max(1, warmup)):
            fn()
    cuda.current_stream().wait_stream(side)
    graph = cuda.CUDAGraph()
    with cuda.graph(graph):
        out = fn()

    def replay():
        graph.replay()
        return out

    return replay


# -- time by op kind --------------------------------------------------------------------------
def op_times(fn: Callable[[], object], device: str, calls: int = 5) -> tuple:
    """(host, device, call_s): seconds per call of ``fn`` by op kind, from ``torch.profiler`` over
    ``calls`` calls after one untimed call, each kind's median over the calls, and the median wall
    time of a profiled call (see the module docstring); ``device`` is None but on CUDA."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn()
    synchronize(device)
    prof = profile(activities=activities)
    with _quiet_stderr():
        prof.start()
    try:
        for i in range(calls):
            with record_function(f"{CALL}{i}"):
                fn()
            synchronize(device)
    finally:
        with _quiet_stderr():
            prof.stop()
    host = [dict() for _ in range(calls)]
    dev = [dict() for _ in range(calls)]
    call_s = []
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CPU or e.is_async:
            continue
        if e.name.startswith(CALL):
            call_s.append(e.cpu_time_total / 1e6)
        owner, call = e, e
        while owner is not None and not owner.name.startswith(ATEN):
            owner = owner.cpu_parent
        while call is not None and not call.name.startswith(CALL):
            call = call.cpu_parent
        if owner is None or call is None:
            continue
        i, kind = int(call.name[len(CALL):]), _event_kind(owner)
        host[i][kind] = host[i].get(kind, 0.0) + e.self_cpu_time_total / 1e6
        if cuda and owner is e:
            dev[i][kind] = dev[i].get(kind, 0.0) + _self_device_us(e) / 1e6
    return _medians(host), _medians(dev) if cuda else None, _percentile(sorted(call_s), 50) if call_s else None


def fault_bytes(fn: Callable[[], object], calls: int = 5) -> Optional[float]:
    """Bytes of memory the process faulted in per call of ``fn`` (minor page faults, as ``getrusage``
    counts them, times the page size), over ``calls`` calls after one untimed call; None where the OS
    does not count them. On a CPU it is the memory a call touches first, each time anew: what glibc
    mapped for it, or gave back to the system after the call before. (Where transparent huge pages
    are always on, one fault may map 2 MiB: the count then understates it.)"""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults * resource.getpagesize() / calls


ATEN, CALL = "aten::", "attncost call "


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to the null device: the profiler's library prints a line on each start and
    stop, which would break into the progress bar."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _medians(per_call: list) -> dict:
    """kind -> the median over the calls of its seconds (0 in a call where it did not run)."""
    kinds = dict.fromkeys(k for times in per_call for k in times)
    return {k: _percentile(sorted(times.get(k, 0.0) for times in per_call), 50) for k in kinds}


def _self_device_us(event) -> float:
    """Microseconds of the kernels the event launched itself (torch 2.4 renamed the field)."""
    value = getattr(event, "self_device_time_total", None)
    return getattr(event, "self_cuda_time_total", 0.0) if value is None else value


def _event_kind(event) -> str:
    """The op kind of a profiler event of an aten op; a composite of no known kind takes its first
    aten child's."""
    from ..costmodel.opkinds import OTHER

    kind = aten_op_kind(event.name[len(ATEN):])
    if kind != OTHER:
        return kind
    for child in event.cpu_children:
        if child.name.startswith(ATEN):
            inner = _event_kind(child)
            if inner != OTHER:
                return inner
    return kind


@functools.lru_cache(maxsize=None)
def aten_op_kind(name: str) -> str:
    """The kind of the aten op ``name`` (its overload packet: "mm", "add_"), from its schema where
    torch has it (``profiler.trace.classify``: views, pointwise ops), else from the table alone."""
    import torch

    from ..costmodel.opkinds import aten_kind
    from .trace import classify

    try:
        packet = getattr(torch.ops.aten, name)
        overloads = packet.overloads()
    except (AttributeError, RuntimeError):  # not an aten op this torch has
        return aten_kind(name)
    if not overloads:
        return aten_kind(name)
    return classify(getattr(packet, "default" if "default" in overloads else overloads[0])).kind


# -- peak memory ---------------------------------------------------------------------------
def peak_memory(fn: Callable[[], object], device: str) -> Optional[int]:
    """Bytes one call of ``fn`` needs above what was allocated before it; see the module docstring."""
    import torch

    if device == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated()
        del out
        return max(0, int(peak - before))
    counter = _live_bytes_mode()
    with counter:
        out = fn()
        synchronize(device)
    del out
    return int(counter.peak)


def _live_bytes_mode():
    import torch
    from .dispatch import Recorder
    from torch.utils._pytree import tree_flatten

    class LiveBytes(Recorder):
        """Peak of the bytes held by tensor storages that ops create while the mode is on."""

        def __init__(self) -> None:
            super().__init__()
            self.live: dict = {}  # storage data_ptr -> [nbytes, live tensors]
            self.current = 0
            self.peak = 0

        def _drop(self, key: int) -> None:
            entry = self.live.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                self.current -= entry[0]
                del self.live[key]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = None
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                    continue
                try:
                    storage = t.untyped_storage()
                    key = storage.data_ptr()
                except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, nested, wrappers)
                    continue
                if key == 0:
                    continue
                entry = self.live.get(key)
                if entry is None:
                    if inputs is None:
                        inputs = {a.untyped_storage().data_ptr()
                                  for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)
                                  and a.device.type != "meta"}
                    if key in inputs:  # a view of, or in-place write to, memory from before
                        continue
                    entry = self.live[key] = [storage.nbytes(), 0]
                    self.current += entry[0]
                    self.peak = max(self.peak, self.current)
                entry[1] += 1
                weakref.finalize(t, self._drop, key)
            return out

    return LiveBytes()


def is_oom(err: BaseException) -> bool:
    """True for the out-of-memory errors of torch's allocators (CUDA, MPS, CPU)."""
    try:
        import torch

        oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                      getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    except ImportError:
        oom_types = ()
    if oom_types and isinstance(err, oom_types):
        return True
    if isinstance(err, (RuntimeError, MemoryError)):
        text = str(err).lower()
        return isinstance(err, MemoryError) or any(m in text for m in (
            "out of memory", "can't allocate memory", "not enough memory"))
    return False


def release_memory(device: str) -> None:
    """Give freed memory back after a failure: collect garbage and empty the allocator's cache."""
    gc.collect()
    try:
        import torch

        if device == "cuda":
            torch.cuda.empty_cache()
        elif device == "mps":
            torch.mps.empty_cache()
    except (ImportError, AttributeError, RuntimeError):  # no torch, no such backend, a device in error
        pass


# -- a second opinion on the GPU -------------------------------------------------------------
def do_bench_check(*, batch: int = 4, heads: int = 16, T: int = 4096, head_dim: int = 128,
                   dtype: str = "bf16", causal: bool = True, backend: str = "auto",
                   budget_s: float = 2.0) -> Optional[dict]:
    """Time one SDPA call with ``measure`` and with ``triton.testing.do_bench`` (median, L2
    flushed): the two should agree within a few percent for a kernel this large. None without
    CUDA or Triton."""
    try:
        import torch
        import triton.testing
    except ImportError:  # no Triton in this install
        return None
    if not torch.cuda.is_available():
        return None
    import torch.nn.functional as F

    dt = torch_dtype(dtype)
    q, k, v = (torch.randn(batch, heads, T, head_dim, device="cuda", dtype=dt) for _ in range(3))

    def fn():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    with sdpa_context(backend):  # entered once, as calibrate's rows force theirs: no timed call pays it
        used = sdpa_backends_used(fn)
        ours = measure(fn, "cuda", budget_s=budget_s)
        theirs_ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    flops = 4 * batch * heads * T * T * head_dim * (0.5 if causal else 1.0)
    return {"op": "do_bench_check", "backend": used or backend, "B": batch, "H": heads, "T": T,
            "dh": head_dim, "causal": causal, "dtype": dtype, "ours_ms": ours.median_s * 1e3,
            "do_bench_ms": theirs_ms, "rel_diff": ours.median_s * 1e3 / theirs_ms - 1.0,
            "tflops": flops / (ours.median_s * 1e12), "repetitions": ours.repetitions}
