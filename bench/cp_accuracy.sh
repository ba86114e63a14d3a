#!/usr/bin/env bash
# Parallel attention on this CPU: calibrate the compute of one core (the full grid: the quick one has no
# attention rows beyond T=256, and its extrapolation to T=2048 was 2x too fast) and the gloo links between
# 2 processes (each collective right after compute, and how much of a transfer hides behind compute),
# then measure ring attention, Ulysses and tensor parallelism (2 ranks; every variant each runs: flash,
# gqa, mqa, and sliding_window where it composes) beside the prediction, at shapes the calibration does
# not use (d=256, 8 heads), and print the |predicted / measured - 1| per scheme and over all points.
# Each rank gets one core (OMP_NUM_THREADS=1), as the profile is calibrated with one. PHASE=train
# measures forward + backward. About 3 minutes.
# Both cores are busy: any other process shows up as model error (the ranks wait for each other), so the
# script says how much CPU other processes took meanwhile. Run it on a quiet machine.
set -euo pipefail
OUT=${OUT:-runs/cp-accuracy}
T=${T:-256,512,1024,2048}
PHASE=${PHASE:-prefill}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
b0=$(busy)
attncost calibrate --device cpu --nproc 2 --out "$OUT/cpu-1core.json" --overwrite
for scheme in "cp 2 --cp-kind ring" "cp 2 --cp-kind ulysses" "tp 2"; do
  name=$(echo "$scheme" | awk '{print $1 $NF}')
  attncost profile --device cpu --$scheme --phase "$PHASE" --T "$T" --hardware "$OUT/cpu-1core.json" \
    --out "$OUT/$name-$PHASE.json" --overwrite
done
b1=$(busy)
read -r cu cs < <(awk '{print $16, $17}' /proc/$$/stat)  # CPU ticks of this script's finished children
python - "$OUT" "$PHASE" "$((b1 - b0 - cu - cs))" "$((b1 - b0))" <<'PY'
import json, statistics, sys
from pathlib import Path
by_scheme = {}
for path in sorted(Path(sys.argv[1]).glob(f"*-{sys.argv[2]}.json")):
    for p in json.loads(path.read_text())["points"]:
        if p.get("predicted_time_s") and p.get("timing"):
            err = p["predicted_time_s"] / p["timing"]["median_s"] - 1
            by_scheme.setdefault(path.stem, []).append(abs(err))
            print(f"{path.stem:18s} {p['variant']:15s} T={p['shape']['T']:>6,}  measured "
                  f"{p['timing']['median_s']*1e3:8.3g} ms  predicted {p['predicted_time_s']*1e3:8.3g} ms  "
                  f"error {err:+.0%}  bytes/rank {p['rank_bytes_sent']} (predicted {p['predicted_bytes_sent']:,.0f})")


def line(name, errors):
    errors = sorted(errors)
    p90 = errors[min(len(errors) - 1, round(0.9 * (len(errors) - 1)))]
    print(f"{name:18s} {len(errors):3d} points  median |error| {statistics.median(errors):4.0%}  p90 {p90:4.0%}")


for name, errors in by_scheme.items():
    line(name, errors)
line("all", [e for errors in by_scheme.values() for e in errors])
others, total = int(sys.argv[3]), int(sys.argv[4])
print(f"other processes took {max(others, 0) / 100:.1f} CPU-seconds meanwhile "
      f"({max(others, 0) / max(total, 1):.0%} of the CPU time used)")
PY
