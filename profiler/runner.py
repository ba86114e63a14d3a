"""The resumable loop every profiling run shares (layer sweeps, whole models).

``open_run`` starts a ``Run``, or with ``resume`` loads the results file (same device and dtype).
``run_points`` measures each point of a grid whose ``Point.key`` the Run does not hold yet and
writes the whole Run atomically (temp file + rename) after every point, so an interrupted run
(Ctrl-C, a killed job) leaves a valid file that ``resume`` completes. A run holds a lock on its file
from ``open_run`` to the end of ``run_points`` (``filelock``: the hidden ``.NAME.lock`` beside it, left
in place, empty, and free once the process ends, even killed): a second run on the same file, from
another process or this one, stops at once (``RunBusy``) instead of losing the points of the first;
``check_free`` tells before anything starts. ``guarded`` measures one
point: an OOM or error becomes its status ("oom" / "error", one line), the device is synchronised
and memory is released after it, KeyboardInterrupt passes through. A sticky CUDA error (an illegal
memory access, a device-side assert: every later kernel of the process would fail too) stops the
run after the point is saved (``DeviceFailed``). ``predicted_oom`` skips, before anything is
built, a point whose predicted memory exceeds the device's free memory ("oom-predicted").
"""

import datetime as _dt
import threading
import weakref
from pathlib import Path
from typing import Callable, Optional, Sequence

from filelock import FileLock, Timeout

from ..costmodel.atomic import beside
from ..costmodel.jsonfile import load_document
from ..costmodel.results import Environment, Point, Run, RunFile
from ..costmodel.units import GIB
from .device import free_memory, sticky_error, synchronize
from .harness import is_oom, release_memory

OnBegin = Callable[[Point, int, int], None]  # (the point about to be measured, index, total)
OnPoint = Callable[[Point, int, int, bool], None]  # (point, index, total, skipped)
MEMORY_HEADROOM = 0.9  # a point may use at most this share of the device's free memory


class RunError(ValueError):
    """A run cannot start (one plain sentence), e.g. --resume on a file from another device."""


class RunBusy(RunError):
    """Another run, of this process or another, is writing the same results file now."""


class DeviceFailed(RunError):
    """The device is in an error state that every later point would inherit (one plain sentence);
    the results file holds every point measured before, the failing one included."""


def one_line(err: BaseException) -> str:
    """``"TypeName: message"`` on one line, at most 300 characters."""
    text = " ".join(str(err).split())
    msg = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


def open_run(path: Path, resume: bool, device: str, dtype: str, *, env: Optional[Environment] = None,
             command: str = "", name: str = "", hardware=None) -> Run:
    """A new Run, or with ``resume`` the one at ``path`` (same device and dtype, else RunError).
    ``env``: default ``profiler.device.environment(device, dtype)``. ``hardware``: the profile the
    predictions use, embedded in the Run (a resumed Run keeps the one it holds). Takes the lock
    of ``path`` (RunBusy if another run holds it), which ``run_points`` lets go when it ends."""
    path = Path(path)
    lock = _take(path)
    try:
        if env is None:
            from .device import environment

            env = environment(device, dtype, hardware_profile=getattr(hardware, "name", None))
        if resume and path.exists():
            run = _resumed(path, env, dtype)
        else:
            run = Run(name=_printable(name or path.stem), command=_printable(command), environment=env, dtype=dtype,
                      created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    except BaseException:
        lock.release()
        raise
    if run.hardware is None and hardware is not None:
        run.hardware = hardware
    key = _key(path)
    _HELD[key] = lock
    weakref.finalize(run, _let_go, key, lock)  # a run dropped before ``run_points`` lets the file go
    return run


# -- the lock of a results file -------------------------------------------------------------------
_HELD: dict = {}  # (lock file, thread) -> the FileLock that ``open_run`` took there for ``run_points``


def lock_path(path: Path) -> Path:
    """The lock file of the results file ``path``: ``.NAME.lock`` beside it."""
    return beside(Path(path), ".lock")


def check_free(path: Path) -> None:
    """RunBusy if a run is writing ``path`` now; else nothing (the lock is taken and let go)."""
    if Path(path).parent.is_dir():  # (no folder yet: no run there)
        _take(Path(path)).release()


def _take(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path(path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:  # another holder; other OSErrors (a folder this user may not write in) pass through
        raise RunBusy(f"--out {path} is being written by another attncost run now: wait until it ends, or "
                      f"give another --out") from None
    return lock


def _key(path: Path) -> tuple:
    return str(lock_path(path).absolute()), threading.get_ident()


def _let_go(key: tuple, lock: FileLock) -> None:
    if _HELD.get(key) is lock:
        del _HELD[key]
    lock.release()


def _printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (bytes of a command line that were not UTF-8, which
    Python keeps as lone surrogates) as backslash escapes, so that the Run can be written."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _resumed(path: Path, env: Environment, dtype: str) -> Run:
    try:
        stored = load_document(path, RunFile, "results file", ValueError)
    except ValueError as err:  # unreadable, not JSON, not a results file: one sentence
        raise RunError(f"--resume: {err}") from None
    run = Run.model_validate(stored.model_dump())  # the run goes on with points of its own kind
    if run.environment.device != env.device or run.environment.device_name != env.device_name:
        raise RunError(f"--resume: {path} was measured on {run.environment.device_name or run.environment.device}, "
                       f"not on this {env.device_name or env.device}; write to another --out")
    if run.dtype != dtype:
        raise RunError(f"--resume: {path} was measured in {run.dtype}, not {dtype}; pass --dtype {run.dtype} "
                       f"or write to another --out")
    return run


def run_points(path: Path, run: Run, probes: Sequence[Point], measure: Callable[[int], Point], *,
               on_begin: Optional[OnBegin] = None, on_point: Optional[OnPoint] = None,
               after_point: Optional[Callable[[Run], None]] = None) -> Run:
    """Measure ``measure(index)`` for every ``probes[index]`` (the unmeasured point, whose key
    identifies it) that ``run`` does not hold yet, saving ``run`` to ``path`` after each.

    ``after_point(run)`` updates the run before it is saved. ``on_point(point, index, total,
    skipped)`` is called after each point is saved, and for each point skipped because the run
    holds it; an exception it raises, KeyboardInterrupt included, stops the run with the file valid.
    The lock of ``path`` (taken by ``open_run``, or here) is held until it returns or raises.
    """
    path = Path(path)
    key = _key(path)
    lock = _HELD.get(key)
    if lock is None:  # called without ``open_run``
        lock = _take(path)
    try:
        return _run_points(path, run, probes, measure, on_begin, on_point, after_point)
    finally:
        _let_go(key, lock)


def _run_points(path: Path, run: Run, probes: Sequence[Point], measure: Callable[[int], Point],
                on_begin: Optional[OnBegin], on_point: Optional[OnPoint],
                after_point: Optional[Callable[[Run], None]]) -> Run:
    by_key = {p.key: p for p in run.points}
    total = len(probes)
    if not run.points or not path.exists():
        run.save(path)
    for index, probe in enumerate(probes):
        held = by_key.get(probe.key)
        if held is not None:
            if on_point is not None:
                on_point(held, index, total, True)
            continue
        if on_begin is not None:
            on_begin(probe, index, total)
        point = measure(index)
        run.points.append(point)
        by_key[point.key] = point
        if after_point is not None:
            after_point(run)
        run.save(path)
        _stop_if_device_failed(point, run, path)
        if on_point is not None:
            on_point(point, index, total, False)
    return run


def guarded(point: Point, device: str, fill: Callable[[Point], None]) -> Point:
    """``fill(point)`` measures into ``point``; an OOM or any error there becomes its status
    ("oom" / "error") with a one-line message, keeping what was measured before it. The device is
    then synchronised: an error it reports (an asynchronous kernel fault) makes the point an error.
    Memory is released after a failure, and after every point on an accelerator (gc, and the
    allocator's cache back), so the next point starts clean; on the CPU a point that ran frees its
    tensors as they go out of scope (a full collection there costs 0.1 s a point)."""
    try:
        fill(point)
    except Exception as err:  # noqa: BLE001  (one failing point must not stop the run)
        point.status = "oom" if is_oom(err) else "error"
        point.message = one_line(err)
    # ``err`` is gone with its traceback, and with it the frames that hold the point's tensors
    try:
        synchronize(device)
    except RuntimeError as err:  # a kernel of this point faulted (torch.AcceleratorError is a RuntimeError)
        if not (point.status == "error" and sticky_error(point.message)):
            point.status, point.message = "error", "after the point, synchronize failed: " + one_line(err)
    if point.status != "ok" or device != "cpu":
        release_memory(device)
    return point


def predicted_oom(point: Point, need_bytes: Optional[float], device: str, what: str, *,
                  held_bytes: float = 0.0) -> bool:
    """Mark ``point`` "oom-predicted" (with the numbers) and return True when ``need_bytes``, its
    predicted memory, exceeds MEMORY_HEADROOM of the device's free memory (``device.free_memory``,
    plus ``held_bytes`` the run holds and would free for it). Unknown free memory: False."""
    free = free_memory(device)
    if free is None or not need_bytes:
        return False
    free += held_bytes
    if need_bytes <= MEMORY_HEADROOM * free:
        return False
    point.status = "oom-predicted"
    point.message = (f"not run: {what} needs about {need_bytes / GIB:,.1f} GiB, the {device} has "
                     f"{free / GIB:,.1f} GiB free")
    return True


def _stop_if_device_failed(point: Point, run: Run, path: Path) -> None:
    error = sticky_error(point.message) if point.status == "error" else None
    if error is None:
        return
    where = f"{point.model + ' ' if point.model else ''}{point.variant} T={point.shape.T:,}"
    n = len(run.points)
    raise DeviceFailed(f"the {run.environment.device} device hit a sticky error ({error}) at {where}, after which "
                       f"every later point of this process would fail: {path} holds the {n} point{'s' * (n != 1)} "
                       f"measured so far; run the same command with --resume to go on")
