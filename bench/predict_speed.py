"""How fast is the analytic model? Prints numbers; asserts nothing.

1. `attncost predict --d 1024 --T 4096` as a whole process (Python start-up included), median of 7.
2. An in-process sweep of 10,000 (variant, shape) points through estimate() with time prediction.

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


def sweep(points: int = 10_000) -> tuple:
    from attncost.costmodel.estimate import estimate
    from attncost.costmodel.hardware import get_hardware
    from attncost.costmodel.shape import Shape
    from attncost.costmodel.variants import NAMES

    hw = get_hardware("h100")
    Ts = [2**i for i in range(7, 17)]
    ds = [512, 768, 1024, 2048, 4096]
    phases = ["prefill", "decode", "train"]
    grid = itertools.cycle(itertools.product(NAMES, Ts, ds, phases))
    todo = [next(grid) for _ in range(points)]
    shapes = {(T, d, ph): Shape(T=T, d=d, heads=d // 64, phase=ph) for _, T, d, ph in todo}
    t0 = time.perf_counter()
    for name, T, d, ph in todo:
        estimate(name, shapes[T, d, ph], None, hw)
    return time.perf_counter() - t0, points


if __name__ == "__main__":
    print(f"attncost predict --d 1024 --T 4096, whole process, median of 7: {whole_process():.3f} s")
    dt, n = sweep()
    print(f"in-process sweep of {n:,} (variant, shape, phase) points with time prediction: {dt:.3f} s "
          f"({dt / n * 1e6:.0f} us per point)")
