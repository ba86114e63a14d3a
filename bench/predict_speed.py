"""How fast is the analytic model? Prints numbers; asserts nothing.

1. Whole `attncost predict` processes (Python start-up included), the median of several runs:
   one shape (target 0.3 s), a T sweep with an HTML report (target 1.5 s), and five widths by
   fifteen T values, every variant, --json (about 1,000 points with their crossover searches;
   target about 1 s). Each with the program store (``costmodel/program_store.py``) cold (the first
   run after installing), warm (the runs after) and off, with Python's bytecode cache on (as an
   installed package has it); and the floor: a process that imports what every command needs
   (typer, rich, pydantic) and prints a one-row table.
2. In-process sweeps of 10,000 distinct (variant, shape) points through estimate() with time
   prediction: prefill, then prefill/decode/train mixed (train graphs carry the backward pass).
3. The same kind of sweep, 100,000 mixed points, through estimate_many (one call per variant):
   first call (tracing included), then again (programs kept). Target: 100,000 points a second.

Run: python bench/predict_speed.py
"""

import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WHOLE = [  # (arguments, runs, target)
    (["--d", "1024", "--T", "4096"], 7, "<= 0.3 s"),
    (["--d", "1024", "--T", "512:65536", "--html", "{tmp}/x.html", "--overwrite"], 3, "<= 1.5 s"),
    (["--d", "256,512,1024,2048,4096", "--T", "64:1048576", "--variants", "all", "--json"], 3, "about 1 s"),
]
FLOOR = ("import typer, pydantic\nfrom rich.console import Console\nfrom rich.table import Table\n"
         "app = typer.Typer()\n@app.command()\ndef main(d: int = 1):\n    t = Table('d'); t.add_row(str(d)); "
         "Console().print(t)\napp()\n")


def _command() -> list:
    """The installed `attncost` script beside this Python (not a shell shim in front of it)."""
    beside = Path(sys.executable).with_name("attncost")
    exe = str(beside) if beside.exists() else shutil.which("attncost")
    return [exe] if exe else [sys.executable, "-m", "attncost.cli.main"]


def _env(**extra) -> dict:
    """The environment of a timed process: Python's bytecode cache on, as an installed package has it
    (``PYTHONDONTWRITEBYTECODE`` would compile every module at every start)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return dict(env, **extra)


def _timed(cmd: list, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def whole_process(args: list, runs: int) -> tuple:
    """(cold, warm, off): the wall time of the first `attncost predict ARGS` process with an empty
    program store, then the medians of ``runs`` processes with it filled and with it off, taken in
    turns (this machine's pace drifts over seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = _command() + ["predict", *[a.format(tmp=tmp) for a in args]]
        store = _env(ATTNCOST_CACHE_DIR=os.path.join(tmp, "store"))
        _timed(cmd, _env(ATTNCOST_CACHE_DIR="off"))  # writes the bytecode cache
        cold = _timed(cmd, store)
        for _ in range(3):  # the runs after the first trace what it priced one by one
            _timed(cmd, store)
        pairs = [(_timed(cmd, store), _timed(cmd, _env(ATTNCOST_CACHE_DIR="off"))) for _ in range(runs)]
    return cold, statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def floor(runs: int = 7) -> float:
    """The median wall time of a process that imports typer, rich and pydantic and prints a table."""
    return statistics.median(_timed([sys.executable, "-c", FLOOR], _env()) for _ in range(runs))


def _points(points: int, phases: tuple) -> list:
    """[(variant, Shape)]: ``points`` distinct points over every variant, T 128 to 65536, five widths,
    batches and ``phases``."""
    from attncost.costmodel.shape import Shape
    from attncost.costmodel.variants import NAMES

    Ts = [2**i for i in range(7, 17)]
    ds = [512, 768, 1024, 2048, 4096]
    batches = range(1, 1 + -(-points // (len(NAMES) * len(Ts) * len(ds) * len(phases))))
    todo = list(itertools.product(NAMES, Ts, ds, batches, phases))[:points]
    return [(k[0], Shape(T=k[1], d=k[2], heads=k[2] // 64, batch=k[3], phase=k[4])) for k in todo]


def sweep_many(points: int = 100_000, phases=("prefill", "decode", "train")) -> tuple:
    """estimate_many per variant over the points of ``_points``: (first call s, second call s, n), the
    program store off (the first call traces every program; the second finds them in memory)."""
    os.environ["ATTNCOST_CACHE_DIR"] = "off"
    from attncost.costmodel.estimate import estimate_many
    from attncost.costmodel.hardware import get_hardware

    hw = get_hardware("h100")
    by: dict = {}
    for name, shape in _points(points, phases):
        by.setdefault(name, []).append(shape)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        for name, shapes in by.items():
            estimate_many(name, shapes, None, hw)
        times.append(time.perf_counter() - t0)
    return times[0], times[1], sum(map(len, by.values()))


def sweep(points: int = 10_000, phases=("prefill",)) -> tuple:
    """estimate() with time prediction over the distinct (variant, shape) points of ``_points``."""
    from attncost.costmodel.estimate import estimate
    from attncost.costmodel.hardware import get_hardware

    hw = get_hardware("h100")
    todo = _points(points, phases)
    t0 = time.perf_counter()
    for name, shape in todo:
        estimate(name, shape, None, hw)
    return time.perf_counter() - t0, len(todo)


if __name__ == "__main__":
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"floor: python + typer + rich + pydantic, a one-row table, median of 7: {floor():.3f} s")
    for args, runs, target in WHOLE:
        shown = " ".join(a.replace("{tmp}/", "") for a in args if a != "--overwrite")
        cold, warm, off = whole_process(args, runs)
        print(f"attncost predict {shown}, whole process: {warm:.3f} s with the program store (median of {runs}; "
              f"first run {cold:.3f} s), {off:.3f} s without (target: {target})")
    for phases in (("prefill",), ("prefill", "decode", "train")):
        dt, n = sweep(phases=phases)
        print(f"in-process sweep of {n:,} distinct (variant, shape) points, {'/'.join(phases)}, with time "
              f"prediction: {dt:.3f} s ({dt / n * 1e6:.0f} us per point)")
    first, again, n = sweep_many()
    print(f"estimate_many, {n:,} mixed prefill/decode/train points, time prediction: {n / first:,.0f} points/s "
          f"({first:.2f} s, tracing included), {n / again:,.0f} points/s again (target: 100,000 points/s)")
