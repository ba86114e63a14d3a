"""How fast is the analytic model? Prints numbers; asserts nothing.

1. `attncost predict --d 1024 --T 4096` as a whole process (Python start-up included), median of 7.
2. In-process sweeps of 10,000 distinct (variant, shape) points through estimate() with time
   prediction: prefill, then prefill/decode/train mixed (train graphs carry the backward pass).

Run: python bench/predict_speed.py
"""

import itertools
import shutil
import statistics
import subprocess
import sys
import time


def whole_process(runs: int = 7) -> float:
    exe = shutil.which("attncost")
    cmd = [exe] if exe else [sys.executable, "-m", "attncost.cli.main"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd + ["predict", "--d", "1024", "--T", "4096"], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sweep(points: int = 10_000, phases=("prefill",)) -> tuple:
    """estimate() with time prediction over distinct (variant, T, d, batch, phase) points."""
    from attncost.costmodel.estimate import estimate
    from attncost.costmodel.hardware import get_hardware
    from attncost.costmodel.shape import Shape
    from attncost.costmodel.variants import NAMES

    hw = get_hardware("h100")
    Ts = [2**i for i in range(7, 17)]
    ds = [512, 768, 1024, 2048, 4096]
    batches = range(1, 1 + -(-points // (len(NAMES) * len(Ts) * len(ds) * len(phases))))
    todo = list(itertools.product(NAMES, Ts, ds, batches, phases))[:points]
    shapes = {k[1:]: Shape(T=k[1], d=k[2], heads=k[2] // 64, batch=k[3], phase=k[4]) for k in todo}
    t0 = time.perf_counter()
    for name, *key in todo:
        estimate(name, shapes[tuple(key)], None, hw)
    return time.perf_counter() - t0, len(todo)


if __name__ == "__main__":
    print(f"attncost predict --d 1024 --T 4096, whole process, median of 7: {whole_process():.3f} s")
    for phases in (("prefill",), ("prefill", "decode", "train")):
        dt, n = sweep(phases=phases)
        print(f"in-process sweep of {n:,} distinct (variant, shape) points, {'/'.join(phases)}, with time "
              f"prediction: {dt:.3f} s ({dt / n * 1e6:.0f} us per point)")
