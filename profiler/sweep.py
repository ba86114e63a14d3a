"""Measure a grid of (variant, params, shape) points on one device, each beside its prediction.

``run_sweep`` builds each variant's module (``profiler.modules.build_module``), times it
(``harness.measure``: the forward pass for prefill and decode, forward + backward for train),
measures its peak memory (``harness.peak_memory``), counts its FLOPs (``profiler.counting.count``,
optional) and evaluates the analytic model for the local hardware
(``costmodel.estimate.estimate``). Every point ends with a status:

- ``ok``: measured;
- ``n/a``: the variant does not apply at this shape (e.g. no decode path), nothing was built;
- ``oom-predicted``: not built, because its predicted memory (``predicted_memory``) exceeds the
  device's free memory (``profiler.runner.predicted_oom``, the rule whole-model runs use too);
- ``oom``: the device ran out of memory; memory is released and the sweep goes on (a FLOP
  counter that runs out of memory after the point was measured leaves it ``ok``, with a message);
- ``error``: anything else went wrong in this point (one-line message); the sweep goes on, unless
  the error is a sticky CUDA error, which stops it (``profiler.runner.DeviceFailed``).

The prediction is priced as what ran (``costmodel.as_run``): in the run's execution mode, with the
efficiency of the SDPA backend that torch chose (where the hardware profile has one); where that
backend is math, as torch's math path (``math_path_time``: unfused, dense scores, in fp32 where
torch upcast, recorded as ``Point.compute_dtype``); a sliding window that ran a dense masked kernel
(no flex_attention: ``profiler.modules.flex``) as that dense kernel. The prediction in the other
execution mode is kept beside it (``Point.predicted_time_other_s``).

Execution modes (``exec_mode``, ``costmodel.timing.MODES``): "eager" times each call as PyTorch
eager runs it, the host issuing every op; "graph" (CUDA only) captures the call once in a CUDA graph
and times its replay (``harness.cuda_graph``). ``ops=True`` also records where the time goes, by op
kind (``harness.op_times``: ``Point.op_times``, and on CUDA ``Point.op_device_times``), from eager
calls in either mode (a replayed graph's kernels are those of the eager call).

Timing in rounds (``rounds``, by default ``CPU_ROUNDS`` on a CPU, where the machine's pace drifts
over seconds: another process, the intra-op threads' wake-ups): the points of one shape (one row of
the shape-major grid) are all built and warmed up first, then each round times every one of them for
its share of the budget (``harness.measure``), and a point's timing combines its rounds
(``harness.combine_rounds``: the fastest round's). A slow spell then lands on every variant of the
shape alike instead of on whichever ran during it, and a point is kept at the pace of its best round.
Each round also times the reference workload (``profiler.pace``) for a round's share: the shape's
points record its fastest round as ``Point.pace_s``, the machine's pace while they ran (a point timed
alone: the workload timed after it, for at most ``PACE_BUDGET_S``).
Only as many points as fit in ``HOLD_SHARE`` of the machine's memory (by their predicted memory) are
built at once; the others of the shape follow in a group of their own, or alone.
On an accelerator (one round) each point is built, timed and freed before the next, as its memory
may need.

``profiler.runner`` writes the whole ``Run`` atomically after every point, so an interrupted
sweep (Ctrl-C, a killed job) leaves a valid file, and ``resume=True`` loads it and skips every
point whose ``Point.key`` is already there. Points are keyed by their *resolved* parameters, so
``--param gqa.kv_heads=4`` and the default that resolves to 4 are the same point.

For tests, ``FAULT_HOOK`` (or the ``fault_hook`` argument) is called with (variant, params, shape)
before each point is built; raising ``torch.OutOfMemoryError`` there simulates an OOM.
"""

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..costmodel.as_run import FLEX, math_path_time, other_mode, time_as_run
from ..costmodel.results import Point, Run
from ..costmodel.shape import Shape
from ..costmodel.timing import MODES
from .device import math_upcasts, sdpa_backends_used, sdpa_context, torch_dtype
from .harness import combine_rounds, cuda_graph, fault_bytes, is_oom, measure, op_times, peak_memory
from .pace import workload
from .runner import OnBegin, OnPoint, guarded, one_line, open_run, predicted_oom, run_points

__all__ = ["make_grid", "point_params", "grid_points", "run_sweep", "graph_unmeasurable", "predicted_memory",
           "math_path_time"]

FAULT_HOOK: Optional[Callable[[str, dict, Shape], None]] = None
CPU_ROUNDS = 4  # interleaved timing rounds per shape on a CPU


def make_grid(variants: Iterable[str], shapes: Iterable[Shape], params: Optional[dict] = None) -> list:
    """Every variant at every shape (shape-major, so a sweep over T fills in row by row)."""
    params = params or {}
    return [(v, dict(params.get(v) or {}), s) for s in shapes for v in variants]


def point_params(variant: str, shape: Shape, params: Optional[dict]) -> dict:
    """The variant's parameters as the model resolves them at this shape (the given ones when
    they cannot be resolved: unknown variant, out-of-range values)."""
    from ..costmodel.estimate import resolve_params

    try:
        return resolve_params(variant, shape, params).model_dump()
    except ValueError:  # VariantError, pydantic's ValidationError
        return dict(params or {})


def grid_points(grid: list, exec_mode: str = "eager") -> list:
    """The unmeasured Point of each (variant, params, shape), keyed by its resolved parameters and
    the execution mode it is measured in."""
    return [Point(variant=v, params=point_params(v, s, p), shape=s, exec_mode=exec_mode) for v, p, s in grid]


def graph_unmeasurable(device: str) -> Optional[str]:
    """Why graph mode cannot be measured on ``device`` (one sentence), or None on CUDA."""
    if device == "cuda":
        return None
    return (f"graph mode cannot be measured on {'the CPU' if device == 'cpu' else device.upper()}: it replays "
            f"a captured CUDA graph, which needs a CUDA GPU (`attncost predict --exec graph` predicts it)")


def run_sweep(run_path, grid: list, device: str, dtype: str, backend: str = "auto",
              resume: bool = False, on_point: Optional[OnPoint] = None, *,
              count: bool = True, hardware=None, env=None, command: str = "", name: str = "",
              on_begin: Optional[OnBegin] = None, measure_kwargs: Optional[dict] = None,
              build_module: Optional[Callable] = None, count_fn: Optional[Callable] = None,
              fault_hook: Optional[Callable] = None, exec_mode: str = "eager", ops: bool = False,
              rounds: Optional[int] = None) -> Run:
    """Measure every point of ``grid`` (a list of (variant, params, shape)) on ``device`` in
    ``dtype`` ("bf16" | "fp16" | "fp32"; each shape is evaluated in it), saving the Run to
    ``run_path`` after every point; see the module docstring.

    ``backend``: the SDPA backend to force ("auto" leaves torch's choice). ``hardware``: the
    ``Hardware`` profile for the predictions (None: no predicted time). ``env``: the Run's
    ``Environment`` (default: ``device.environment(device, dtype)``). ``measure_kwargs`` go to
    ``harness.measure``. ``build_module`` / ``count_fn`` replace ``profiler.modules.build_module``
    and ``profiler.counting.count`` (tests use small stand-ins). ``on_begin(point, index, total)``
    is called before a point is measured; ``on_point(point, index, total, skipped)`` after each
    point is saved (and for each point skipped on resume); an exception it raises,
    KeyboardInterrupt included, stops the sweep with the file valid. ``exec_mode``: "eager" or
    "graph" (CUDA only, else ValueError: ``graph_unmeasurable``); ``ops``: record the time by op kind.
    ``rounds``: how many interleaved rounds time the points of one shape (default ``CPU_ROUNDS`` on
    a CPU, 1 elsewhere; see the module docstring).
    """
    if exec_mode not in MODES:
        raise ValueError(f"exec_mode must be one of {', '.join(MODES)}, not {exec_mode!r}")
    why = graph_unmeasurable(device) if exec_mode == "graph" else None
    if why:
        raise ValueError(why)
    from .modules.flex import with_window_kernel

    path = Path(run_path)
    grid = [(v, with_window_kernel(v, p, device), s if s.dtype == dtype else s.with_(dtype=dtype)) for v, p, s in grid]
    run = open_run(path, resume, device, dtype, env=env, command=command, name=name, hardware=hardware)
    requested = (backend or "auto").lower()
    run.environment.sdpa_backend_requested = requested
    if count and count_fn is None:
        count_fn = _default_count
    rounds = rounds or (CPU_ROUNDS if device == "cpu" else 1)
    layer = _LayerPoint(device, requested, hardware, build_module or _default_build, count_fn if count else None,
                        fault_hook if fault_hook is not None else FAULT_HOOK, measure_kwargs or {}, ops, rounds)
    probes = grid_points(grid, exec_mode)
    ahead: dict = {}  # index -> a point measured with the first of its shape, not saved yet

    def measure_point(i: int) -> Point:
        if i not in ahead:
            held = {p.key for p in run.points}
            group = [j for j in _same_shape(probes, i) if probes[j].key not in held] if rounds > 1 else [i]
            group = _held_together(group, probes, grid)
            ahead.update(zip(group, layer.run([(probes[j], grid[j][1]) for j in group])))
        return ahead.pop(i)

    with sdpa_context(requested):  # entered once: the timed calls do not pay it
        return run_points(path, run, probes, measure_point, on_begin=on_begin, on_point=on_point,
                          after_point=_note_backends)


PACE_BUDGET_S = 0.05  # the most a point timed alone spends on the reference workload after it (a GPU sweep's)
HOLD_SHARE = 0.25  # the points timed in rounds together hold at most this share of the machine's memory


def _held_together(group: list, probes: list, grid: list) -> list:
    """The first points of ``group`` that may be built at once: their predicted memory together
    (``predicted_memory``: weights, KV cache, activation peak) within ``HOLD_SHARE`` of the
    machine's physical memory, at least the first. A CPU that runs out of memory kills the process
    instead of raising an error the sweep could record."""
    from ..costmodel.estimate import estimate
    from ..costmodel.variants import VariantError

    limit = HOLD_SHARE * _physical_memory()
    total, out = 0.0, []
    for j in group:
        try:
            total += predicted_memory(estimate(probes[j].variant, probes[j].shape, grid[j][1]))
        except (VariantError, ValueError):  # priced as n/a or refused when run: holds nothing
            pass
        if out and total > limit:
            break
        out.append(j)
    return out


def _physical_memory() -> float:
    """Bytes of physical memory (inf where the system does not say)."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return math.inf


def _same_shape(probes: list, i: int) -> list:
    """``i`` and the indexes right after it whose points have its shape (the grid is shape-major)."""
    j = i + 1
    while j < len(probes) and probes[j].shape == probes[i].shape:
        j += 1
    return list(range(i, j))


# -- one point ---------------------------------------------------------------------------------
@dataclass
class _LayerPoint:
    """How the points of one sweep are measured."""

    device: str
    backend: str  # the forced SDPA backend, or "auto"
    hardware: object  # Hardware | None
    build_module: Callable
    count_fn: Optional[Callable]
    hook: Optional[Callable]
    measure_kwargs: dict
    ops: bool = False
    rounds: int = 1
    hw_by_backend: dict = field(default_factory=dict)
    pace_fn: Optional[Callable] = None  # the reference workload, made on first use

    def run(self, items: list) -> list:
        """Predict, then (where the variant applies) measure each (probe, params) of ``items`` (points
        of one shape; ``params`` as given, unresolved): every point is built and warmed up, then timed
        in ``rounds`` interleaved rounds (``_time``), then its memory, op times and counts are taken.
        With one round or one point, each point is built, timed, measured and freed in turn."""
        if self.rounds == 1 or len(items) == 1:
            return [self._alone(probe, params) for probe, params in items]
        points, ready = [], []
        for probe, params in items:
            point, measurable = self._begin(probe, params)
            points.append(point)
            if measurable:
                call: dict = {}
                guarded(point, self.device, lambda p: call.update(self.prepare(p, params)))
                if call:
                    ready.append((point, call))
        self._time(ready)
        for point, call in ready:
            if point.status == "ok":
                guarded(point, self.device, lambda p: self.finish(p, call))
            call.clear()  # the module and its inputs go before the next point is built
        del ready
        for point, (_, params) in zip(points, items):
            self._price(point, params)  # once, as it ran: the backend recorded, else the forced or default one
        return points

    def _alone(self, probe: Point, params: dict) -> Point:
        """One point predicted, measured (built, timed with the whole budget, memory, op times, counts:
        one guarded step; then the reference workload) and priced."""
        point, measurable = self._begin(probe, params)
        if measurable:
            guarded(point, self.device, lambda p: self._measure(p, params))
            if point.status == "ok":
                how = self._how({"first_s": 0.0}, 0, whole=True)
                how["budget_s"] = min(how["budget_s"], PACE_BUDGET_S)
                point.pace_s = self._pace([self._pace_round(how)])
        self._price(point, params)
        return point

    def _measure(self, point: Point, params: dict) -> None:
        call = self.prepare(point, params)
        point.timing = measure(call["timed"], self.device, **self._how(call, 0, whole=True))
        self.finish(point, call)

    def _how(self, call: dict, r: int, whole: bool) -> dict:
        """``harness.measure``'s arguments in round ``r`` (a round's share of the budget, or the whole
        budget): the warm-up calls as asked, none (one on CUDA) where the first call took more than
        half the budget, at most one in a later round (to warm the caches after the other points)."""
        kw = dict(self.measure_kwargs)
        budget = kw.pop("budget_s", 2.0)
        warmup = kw.pop("warmup", 3)
        if call["first_s"] > budget / 2:  # the first call was warm-up enough
            warmup = min(warmup, 1 if self.device == "cuda" else 0)
        return dict(kw, budget_s=budget if whole else budget / self.rounds, warmup=warmup if r == 0 else min(warmup, 1))

    def _begin(self, probe: Point, params: dict) -> tuple:
        """(point, whether to measure it): the point predicted; n/a where the variant does not apply,
        oom-predicted where it would not fit."""
        forced = None if self.backend == "auto" else self.backend
        point = probe.model_copy(update={"backend": forced})
        est = _predict(point, params, self._hardware_for(forced))
        if est is not None and est.status != "ok":
            point.status, point.message = "n/a", est.reason
            return point, False
        oom = est is not None and predicted_oom(point, predicted_memory(est), self.device,
                                                f"{point.variant} at T={point.shape.T:,} (weights + KV cache + "
                                                f"activations, predicted)")
        return point, not oom

    def _price(self, point: Point, params: dict) -> None:
        """Predict the point as it runs (``costmodel.as_run``), in its execution mode and the other.
        Where torch's math backend runs, note where it computes in fp32 (``math_upcasts``; MPS has
        its own math kernel, left unmarked)."""
        if point.backend == "math" and self.device != "mps" and math_upcasts(point.shape.dtype):
            point.compute_dtype = "fp32"
        if self.hardware is None:
            return
        how = dict(backend=point.backend, compute_dtype=point.compute_dtype)
        try:
            now = time_as_run(point.variant, point.shape, params, self.hardware, mode=point.exec_mode, **how)
            other = time_as_run(point.variant, point.shape, params, self.hardware,
                                mode=other_mode(point.exec_mode), **how)
        except ValueError:  # VariantError, HardwareError: ``_predict`` has said why
            return
        point.predicted_time_s, point.predicted_time_other_s = now, other
        if now is None and not point.message:
            point.message = (f"no predicted time: the cost model does not price {point.variant} "
                             f"{point.shape.phase} on the {point.backend} backend")

    def prepare(self, point: Point, params: dict) -> dict:
        """Build the point's module and run it once (its first warm-up call, which also tells the
        kernel that ran); the call to time, as a dict that holds the module and its inputs."""
        import torch

        shape, device, backend = point.shape, self.device, self.backend
        if self.hook is not None:
            self.hook(point.variant, dict(params), shape)
        torch.manual_seed(0)
        module, inputs = self.build_module(point.variant, shape, dict(params), device, torch_dtype(shape.dtype),
                                           backend=backend)
        fn, clear_grads = _step(module, inputs, shape.phase == "train")
        t0 = time.perf_counter()
        used = _kernel_used(module, fn)  # also the first warm-up call
        first_s = time.perf_counter() - t0
        if used is not None:
            point.backend = used
        timed = cuda_graph(fn) if point.exec_mode == "graph" else fn
        return dict(module=module, inputs=inputs, fn=fn, clear_grads=clear_grads, timed=timed, first_s=first_s)

    def _time(self, ready: list) -> None:
        """Time each prepared (point, call) of ``ready``: in ``rounds`` rounds, each of which times
        every point for its share of the budget, the point's timing combining its rounds
        (``harness.combine_rounds``), so that a slow spell of the machine lands on every point of the
        shape alike, not on the one that happens to run then. A point whose one call takes more than
        a round's share is timed once, in the first round, with the whole budget; an error in any
        round becomes the point's status."""
        share = self.measure_kwargs.get("budget_s", 2.0) / self.rounds
        rounds: dict = {id(call): [] for _, call in ready}
        pace: list = []
        for r in range(self.rounds):
            pace.append(self._pace_round(self._how({"first_s": 0.0}, r, whole=False)))
            for point, call in ready:
                whole = call["first_s"] > share / 2  # one call eats a round's share
                if point.status != "ok" or (whole and r > 0):
                    continue
                how = self._how(call, r, whole)
                guarded(point, self.device,
                        lambda p: rounds[id(call)].append(measure(call["timed"], self.device, **how)))
        pace_s = self._pace(pace)
        for point, call in ready:
            if point.status == "ok" and rounds[id(call)]:
                point.timing = combine_rounds(rounds[id(call)], self.measure_kwargs.get("rel_ci", 0.02))
                point.pace_s = pace_s

    def _pace_round(self, how: dict):
        """One timing of the reference workload (``profiler.pace``), as a point is timed (``how``); None
        where it failed (the points' timings stand without it)."""
        try:
            if self.pace_fn is None:
                self.pace_fn = workload(self.device)
            return measure(self.pace_fn, self.device, **how)
        except RuntimeError:
            return None

    def _pace(self, rounds: list) -> Optional[float]:
        """The machine's pace over ``rounds`` of the reference workload: the fastest round's median, as
        a point's (``harness.combine_rounds``); None where none was timed."""
        timed = [t for t in rounds if t is not None]
        return combine_rounds(timed).median_s if timed else None

    def finish(self, point: Point, call: dict) -> None:
        """Peak memory, op times and counts of a timed point; fills ``point`` as it goes (so a failure
        late in the point keeps what was measured before it)."""
        device, fn, clear_grads = self.device, call["fn"], call["clear_grads"]
        del call["timed"]  # a captured graph's memory goes back before the peak is measured
        clear_grads()
        point.peak_memory_bytes = peak_memory(fn, device)
        clear_grads()
        if self.ops:
            slow = call["first_s"] > self.measure_kwargs.get("budget_s", 2.0) / 2
            try:
                point.op_times, point.op_device_times, point.op_call_s = op_times(fn, device, calls=3 if slow else 5)
            except RuntimeError as err:  # the profiler failed; the point's measurement stands
                point.message = f"op times failed: {one_line(err)}"
            if device == "cpu":
                point.fault_bytes = fault_bytes(fn, calls=1 if slow else 3)
            clear_grads()
        if self.count_fn is not None:
            try:
                point.counts = self.count_fn(call["module"], call["inputs"])
            except Exception as err:  # noqa: BLE001  (counting is a second opinion, not the measurement)
                what = "counting ran out of memory" if is_oom(err) else "counting failed"
                point.message = f"{what}: {one_line(err)}"

    def _hardware_for(self, backend: Optional[str]):
        """The profile predicting with ``backend``'s fused-attention efficiency, where it has one."""
        hardware = self.hardware
        if hardware is None or backend is None:
            return hardware
        attention = getattr(hardware, "attention", None) or {}
        if backend not in attention or getattr(hardware, "attention_backend", None) == backend:
            return hardware
        if backend not in self.hw_by_backend:
            self.hw_by_backend[backend] = hardware.model_copy(update={"attention_backend": backend})
        return self.hw_by_backend[backend]


def _step(module, inputs, train: bool):
    """(fn, clear_grads): one timed call of the module (train: forward + backward with a fixed
    random output gradient), and what resets the gradients between measurements. The SDPA backend
    is the one ``run_sweep`` forces around the whole sweep."""
    import torch

    if hasattr(module, "train"):
        module.train(train)
    if not train:
        def fn():
            with torch.no_grad():
                return _call(module, inputs)

        return fn, lambda: None
    inputs = _with_grad(inputs)
    grad_out = {}

    def clear_grads():
        if hasattr(module, "zero_grad"):
            module.zero_grad(set_to_none=True)
        for t in _tensors(inputs):
            if t.requires_grad:
                t.grad = None

    def fn():
        clear_grads()
        out = _first_tensor(_call(module, inputs))
        g = grad_out.get("g")
        if g is None:
            g = grad_out["g"] = torch.randn_like(out)
        out.backward(g)

    return fn, clear_grads


def _predict(point: Point, params, hardware):
    """Fill the point's predicted fields; the Estimate, or None when the model could not run."""
    from ..costmodel.estimate import estimate

    try:
        est = estimate(point.variant, point.shape, dict(params) or None, hardware)
    except ValueError as err:  # VariantError, HardwareError, pydantic's ValidationError
        est = None
        if hardware is not None:  # e.g. a profile that lacks what this variant needs
            try:
                est = estimate(point.variant, point.shape, dict(params) or None, None)
            except ValueError:
                pass
        if est is None:
            point.message = "no prediction: " + one_line(err)
            return None
    if est.status == "ok":
        point.predicted_flops = est.flops
        point.predicted_activation_bytes = est.activation_bytes_fused
        point.predicted_time_s = est.time_s
    return est


def predicted_memory(est) -> float:
    """Bytes a layer point needs on the device, from its Estimate: weights (twice in train: their
    gradients) + KV cache + the fused activation peak (which holds the layer's input)."""
    weights = est.weights_bytes * (2 if est.shape.phase == "train" else 1)
    return weights + est.kv_cache_bytes + est.activation_bytes_fused


# -- helpers -----------------------------------------------------------------------------------
def _kernel_used(module, fn: Callable) -> Optional[str]:
    """Run ``fn`` once; the attention kernel it ran: ``FLEX`` where the module holds a flex_attention
    call (``modules.flex``, run without the SDPA recorder, which torch.compile would trace) and
    made it, else the SDPA backend(s) (``device.sdpa_backends_used``), or None."""
    if getattr(module, "flex", None) is None:
        return sdpa_backends_used(fn)
    from .modules.flex import recording

    with recording() as calls:
        fn()
    return FLEX if calls else None


def _note_backends(run: Run) -> None:
    used = sorted({p.backend for p in run.points if p.backend})
    run.environment.sdpa_backend = "+".join(used) if used else None


def _default_build(variant, shape, params, device, dtype, backend="auto"):
    from .modules import build_module

    return build_module(variant, shape, params, device, dtype, backend=backend)


def _default_count(module, inputs):
    from .counting import count

    return count(module, inputs)


def _call(module, inputs):
    if isinstance(inputs, dict):
        return module(**inputs)
    if isinstance(inputs, (tuple, list)):
        return module(*inputs)
    return module(inputs)


def _tensors(inputs) -> list:
    import torch

    items = inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, (tuple, list)) else [inputs]
    return [t for t in items if isinstance(t, torch.Tensor)]


def _with_grad(inputs):
    """Training: floating-point leaf inputs need gradients, as a layer's input does in a model."""
    for t in _tensors(inputs):
        if t.is_floating_point() and t.is_leaf and not t.requires_grad:
            t.requires_grad_(True)
    return inputs


def _first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    for o in out:
        if isinstance(o, torch.Tensor):
            return o
    raise TypeError("the module returned no tensor to differentiate")
