"""How far apart the predictions of calibrations of the same machine land. Prints numbers; asserts
nothing.

Runs `attncost calibrate --device cpu` RUNS times in a row (--quick unless --full is given), then
prices the points of `bench/cpu_accuracy.sh` (every variant at d 320, 5 heads, fp32: prefill, decode
at batch 1 and 4, train) with each profile, and prints, per phase, the median and the largest spread
of a point's predictions (largest / least - 1) and the points that spread most; then the same for each
point's prediction within its shape (against the median prediction of the variants at its shape, as
`crosscheck --time` judges the error within a shape). A measurement cannot judge the time model more
finely than its calibration repeats: where one point's predictions spread by 30%, an error of 15% there
may be the calibration's.

Run: python bench/calibration_spread.py [RUNS] [--full]   (default 3 quick calibrations, about a minute)
"""

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PHASES = {"prefill": (1, (96, 384, 1536)), "decode, batch 1": (1, (96, 384, 1536)),
          "decode, batch 4": (4, (96, 384, 1536)), "train": (1, (96, 384))}


def calibrations(runs: int, full: bool, folder: Path) -> list:
    """The profiles of ``runs`` calibrations of this machine's CPU, one after another."""
    from attncost.costmodel.hardware import load_profile

    out = []
    for i in range(runs):
        path = folder / f"cpu-{i}.json"
        subprocess.run(["attncost", "calibrate", "--device", "cpu", "--out", str(path), "--overwrite",
                        *([] if full else ["--quick"])], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        out.append(load_profile(path))
        print(f"calibration {i + 1} of {runs}: the reference workload {out[-1].pace_s * 1e3:.3f} ms")
    return out


def spreads(profiles: list, within: bool = False) -> dict:
    """phase -> [(largest / least prediction - 1, variant, T)] over the points each profile prices;
    ``within``: each prediction divided by the median of the profile's predictions at its shape."""
    from attncost.costmodel.estimate import estimate
    from attncost.costmodel.shape import Shape
    from attncost.costmodel.variants import NAMES

    out: dict = {}
    for phase, (batch, Ts) in PHASES.items():
        rows = []
        for T in Ts:
            s = Shape(T=T, d=320, heads=5, batch=batch, phase=phase.split(",")[0], dtype="fp32")
            times = {v: [estimate(v, s, None, hw).time_s for hw in profiles] for v in NAMES}
            times = {v: t for v, t in times.items() if all(t)}
            if within:
                level = [statistics.median(t[i] for t in times.values()) for i in range(len(profiles))]
                times = {v: [x / m for x, m in zip(t, level)] for v, t in times.items()}
            rows += [(max(t) / min(t) - 1.0, v, T) for v, t in times.items()]
        out[phase] = sorted(rows, reverse=True)
    return out


def main(runs: int, full: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        profiles = calibrations(runs, full, Path(tmp))
    for within in (False, True):
        print("each prediction within its shape (against the median of its shape's):" if within else
              "each prediction:")
        for phase, rows in spreads(profiles, within).items():
            worst = ", ".join(f"{v} T {T} {x:.0%}" for x, v, T in rows[:3])
            print(f"  {phase}: {len(rows)} points, predictions spread by a median "
                  f"{statistics.median(r[0] for r in rows):.0%}, at most {rows[0][0]:.0%} ({worst})")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(next((a for a in args if a.isdigit()), 3)), "--full" in args)
