"""The resumable loop every profiling run shares (layer sweeps, whole models).

``open_run`` starts a ``Run``, or with ``resume`` loads the results file (same device and dtype).
``run_points`` measures each point of a grid whose ``Point.key`` the Run does not hold yet and
writes the whole Run atomically (temp file + rename) after every point, so an interrupted run
(Ctrl-C, a killed job) leaves a valid file that ``resume`` completes. ``guarded`` measures one
point: an OOM or error becomes its status ("oom" / "error", one line), memory is released after
it, KeyboardInterrupt passes through.
"""

import datetime as _dt
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..costmodel.results import Environment, Point, Run
from .harness import is_oom, release_memory

OnBegin = Callable[[Point, int, int], None]  # (the point about to be measured, index, total)
OnPoint = Callable[[Point, int, int, bool], None]  # (point, index, total, skipped)


class RunError(ValueError):
    """A run cannot start (one plain sentence), e.g. --resume on a file from another device."""


def one_line(err: BaseException) -> str:
    """``"TypeName: message"`` on one line, at most 300 characters."""
    text = " ".join(str(err).split())
    msg = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


def open_run(path: Path, resume: bool, device: str, dtype: str, *, env: Optional[Environment] = None,
             command: str = "", name: str = "", hardware=None) -> Run:
    """A new Run, or with ``resume`` the one at ``path`` (same device and dtype, else RunError).
    ``env``: default ``profiler.device.environment(device, dtype)``. ``hardware``: the profile the
    predictions use, embedded in the Run (a resumed Run keeps the one it holds)."""
    if env is None:
        from .device import environment

        env = environment(device, dtype, hardware_profile=getattr(hardware, "name", None))
    if resume and path.exists():
        run = _resumed(path, env, dtype)
    else:
        run = Run(name=name or path.stem, command=command, environment=env, dtype=dtype,
                  created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if run.hardware is None and hardware is not None:
        run.hardware = hardware
    return run


def _resumed(path: Path, env: Environment, dtype: str) -> Run:
    try:
        run = Run.load(path)
    except (OSError, ValueError) as err:  # unreadable, not JSON, not a Run (pydantic's error is a ValueError)
        raise RunError(f"--resume: {path} is not a readable results file ({one_line(err)})") from None
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
    """
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
        if on_point is not None:
            on_point(point, index, total, False)
    return run


def guarded(point: Point, device: str, fill: Callable[[Point], None]) -> Point:
    """``fill(point)`` measures into ``point``; an OOM or any error there becomes its status
    ("oom" / "error") with a one-line message, keeping what was measured before it. Memory is
    released after (gc, and the allocator's cache back), so the next point starts clean."""
    try:
        fill(point)
    except Exception as err:  # noqa: BLE001  (one failing point must not stop the run)
        point.status = "oom" if is_oom(err) else "error"
        point.message = one_line(err)
    # ``err`` is gone with its traceback, and with it the frames that hold the point's tensors
    release_memory(device)
    return point
