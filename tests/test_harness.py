"""profiler.harness and profiler.device on the CPU: timing statistics, peak memory, OOM detection,
SDPA backend detection, device resolution."""

import time
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from attncost.profiler import harness  # noqa: E402
from attncost.profiler.device import (DeviceError, check_backend, environment, resolve_device,  # noqa: E402
                                      sdpa_backends_used, sdpa_context, slug, torch_dtype)
from attncost.profiler.harness import is_oom, measure, peak_memory  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


class FakeClock:
    """The harness's clock, advanced only by the calls it times: their durations are exact, however
    busy the machine is. ``call`` takes the next duration of ``durations`` (cycling)."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 1000.0, list(durations), 0

    def perf_counter(self) -> float:
        return self.now

    def call(self) -> None:
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


class FakeWatch:
    """``quiet.CpuWatch`` on a machine whose other processes take the CPU during the slices numbered in
    ``busy`` (counted from 0 by ``start``)."""

    busy: set = set()

    def __init__(self) -> None:
        self.slice = -1

    def start(self) -> None:
        self.slice += 1

    def disturbed(self) -> bool:
        return self.slice in self.busy


@pytest.fixture
def clock(monkeypatch):
    def install(*durations, busy=()):
        c = FakeClock(durations)
        monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=c.perf_counter))
        monkeypatch.setattr(harness, "CpuWatch", type("Watch", (FakeWatch,), {"busy": set(busy)}))
        return c
    return install


def test_measure_sets_aside_slices_when_others_take_the_cpu(clock):
    c = clock(0.01, 0.012, busy={0, 1})  # slices of 0.1 s: 10 calls each; the first two disturbed
    t = measure(c.call, "cpu", budget_s=0.2, warmup=0, rel_ci=0.0)
    assert c.calls == 40  # 2 disturbed slices, then 2 quiet ones: the budget counts the quiet ones only
    assert t.repetitions == 20 and t.median_s == pytest.approx(0.011)


def test_measure_uses_the_disturbed_calls_when_no_slice_is_quiet(clock):
    c = clock(0.01, busy=set(range(1000)))
    t = measure(c.call, "cpu", budget_s=0.2, warmup=0, rel_ci=0.0)
    assert not t.stable and t.repetitions == c.calls
    assert 0.6 + harness.QUIET_WAIT_S - 0.1 <= c.calls * 0.01 <= 0.6 + harness.QUIET_WAIT_S + 0.1  # waited, not forever


def test_cpu_watch_counts_what_other_processes_took(monkeypatch):
    from attncost.profiler import quiet

    busy = iter([100.0, 100.5])  # the machine's busy seconds at start and at the reading
    ticks = iter([0.0, 1.0, 0.0, 1.0])
    monkeypatch.setattr(quiet, "time", SimpleNamespace(process_time=lambda: 0.0, perf_counter=lambda: next(ticks)))
    watch = quiet.CpuWatch(read=lambda: next(busy))  # starts
    assert watch.others_cores() == pytest.approx(0.5) and quiet.BUSY_CORES <= 0.5
    assert quiet.CpuWatch(read=lambda: None).others_cores() is None
    assert quiet.machine_busy_s("/nonexistent/stat") is None


def test_measure_times_the_call_and_nothing_else(clock):
    c = clock(0.002, 0.003, 0.002, 0.004, 0.002)
    t = measure(c.call, "cpu", budget_s=0.5, warmup=0)
    assert t.repetitions == c.calls >= 5
    # the statistics are those of the calls' own durations: no loop overhead, no scheduling noise
    assert t.min_s == pytest.approx(0.002) and t.median_s == pytest.approx(0.002)
    assert t.p90_s <= 0.004 + 1e-12 and t.p10_s == pytest.approx(0.002)
    assert t.ci_rel is not None and t.ci_rel >= 0


def test_measure_sleep_gives_ordered_stats():
    t = measure(lambda: time.sleep(0.002), "cpu", budget_s=0.5)
    assert t.repetitions >= 5
    assert 0.002 <= t.min_s <= t.p10_s <= t.median_s <= t.p90_s  # a sleep lasts at least what it asks
    assert t.ci_rel is not None and t.ci_rel >= 0


def test_measure_stops_when_stable_or_at_max_reps():
    t = measure(lambda: None, "cpu", min_reps=5, max_reps=7, budget_s=5.0)
    assert 5 <= t.repetitions <= 7
    x = torch.randn(64, 64)
    t = measure(lambda: x @ x, "cpu", budget_s=1.0, rel_ci=0.5)  # loose target: stops early
    assert t.stable and t.repetitions < 1000


def test_measure_keeps_to_the_budget_for_slow_calls(clock):
    c = clock(0.07)
    start = c.now
    t = measure(c.call, "cpu", budget_s=0.1, warmup=3)
    assert c.calls == 1 + t.repetitions  # one warm-up call: it alone takes more than half the budget
    assert 1 <= t.repetitions < 5  # fewer than min_reps: one call alone eats most of the budget
    # timing stops once 3 x budget_s has passed: at most one call more
    assert c.now - start <= 3 * 0.1 + 0.07 + 1e-9
    assert not t.stable


def test_measure_rejects_bad_repetition_counts():
    with pytest.raises(ValueError):
        measure(lambda: None, "cpu", min_reps=0)
    with pytest.raises(ValueError):
        measure(lambda: None, "cpu", min_reps=10, max_reps=5)


def test_percentiles_and_confidence_interval():
    s = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert harness._percentile(s, 50) == 3.0
    assert harness._percentile(s, 10) == pytest.approx(1.4)
    assert harness._percentile([7.0], 90) == 7.0
    assert harness._ci_rel([1.0] * 50) == 0.0
    assert harness._ci_rel([1.0]) == float("inf")
    wide = harness._ci_rel(sorted([1.0, 2.0] * 10))
    assert wide > 0.1


def test_peak_memory_on_cpu_counts_live_tensor_bytes():
    a = torch.randn(256, 256)
    nbytes = 256 * 256 * 4
    # a @ a is alive while softmax writes its own output: two tensors at the peak
    assert peak_memory(lambda: (a @ a).softmax(-1), "cpu") == 2 * nbytes
    # views of the inputs and in-place writes allocate nothing
    assert peak_memory(lambda: a.t(), "cpu") == 0
    b = torch.randn(256, 256)
    assert peak_memory(lambda: b.mul_(1.0), "cpu") == 0


def test_peak_memory_counts_what_autograd_saves():
    w = torch.randn(128, 128, requires_grad=True)
    x = torch.randn(64, 128)

    def step():
        w.grad = None
        y = (x @ w).relu()  # relu saves its output for the backward
        y.sum().backward()

    peak = peak_memory(step, "cpu")
    assert peak >= 64 * 128 * 4 + 128 * 128 * 4  # the activation and the weight's gradient


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("MPS backend out of memory"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))  # only the allocators' error types


def test_sdpa_backend_detection():
    import torch.nn.functional as F

    q = torch.randn(1, 2, 32, 16)
    assert sdpa_backends_used(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True)) == "flash"
    with sdpa_context("math"):
        assert sdpa_backends_used(lambda: F.scaled_dot_product_attention(q, q, q)) == "math"
    assert sdpa_backends_used(lambda: q @ q.transpose(-1, -2)) is None


def test_device_resolution_and_checks():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cuda", "mps", "cpu")
    with pytest.raises(DeviceError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(DeviceError, match="needs a CUDA device"):
            check_backend("cudnn", "cpu")
    check_backend("math", "cpu")
    assert torch_dtype("bf16") is torch.bfloat16 and torch_dtype("fp32") is torch.float32
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_environment_describes_the_cpu():
    env = environment("cpu", "fp32")
    assert env.device == "cpu" and env.device_name and env.torch == torch.__version__
    extra = env.model_dump()
    assert extra["dtype"] == "fp32" and extra["threads"] >= 1
    assert "peak_memory_method" in extra and "timing_method" in extra


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the check really runs")
def test_do_bench_check_needs_cuda():
    assert harness.do_bench_check() is None


class _FakeEvent:
    """Stands in for torch.cuda.Event on a machine without CUDA: records ``clock``."""

    clock = staticmethod(time.perf_counter)

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = self.clock()

    def elapsed_time(self, other):  # milliseconds, as CUDA events report
        return (other.t - self.t) * 1e3


def test_measure_cuda_path_flushes_and_uses_events(monkeypatch):
    """The CUDA branch's control flow, with fake events: a flush before every call, one event
    pair per timed call, the same statistics."""
    flushes, syncs = [], []
    c = FakeClock([0.001])
    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=c.perf_counter))
    monkeypatch.setattr(_FakeEvent, "clock", staticmethod(c.perf_counter))
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(harness, "synchronize", lambda device: syncs.append(device))
    monkeypatch.setattr(harness, "_flusher", lambda device: lambda: flushes.append(1))
    calls = []
    t = measure(lambda: (calls.append(1), c.call()), "cuda", budget_s=0.2, warmup=2)
    assert t.repetitions >= 5 and t.median_s == pytest.approx(0.001)  # the events' time, in seconds
    assert len(calls) == t.repetitions + 2  # warm-up calls are not timed
    assert len(flushes) == len(calls)  # the L2 is flushed before every call, warm-up included
    assert set(syncs) == {"cuda"}


def test_peak_memory_cuda_path_uses_allocator_counters(monkeypatch):
    state = {"allocated": 1000, "peak": 0}

    def reset():
        state["peak"] = state["allocated"]

    def alloc():
        state["peak"] = max(state["peak"], state["allocated"] + 5000)
        state["allocated"] += 200  # the output stays

    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda: state["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: state["peak"])
    monkeypatch.setattr(harness, "synchronize", lambda device: None)
    assert peak_memory(alloc, "cuda") == 5000
