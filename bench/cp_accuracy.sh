#!/usr/bin/env bash
# Parallel attention on this CPU: calibrate the compute of one core and the gloo links between 2
# processes, then measure ring attention, Ulysses and tensor parallelism (2 ranks; every variant each
# runs: flash, gqa, mqa, and sliding_window where it composes) beside the prediction and print the
# median |predicted / measured - 1| over T, variants and schemes. Each rank gets one core
# (OMP_NUM_THREADS=1), as the profile is calibrated with one. PHASE=train measures forward + backward.
# Other processes sharing the cores make the times noisy: run it on a quiet machine.
set -euo pipefail
OUT=${OUT:-runs/cp-accuracy}
T=${T:-256,512,1024,2048}
PHASE=${PHASE:-prefill}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
attncost calibrate --device cpu --quick --nproc 2 --out "$OUT/cpu-1core.json" --overwrite
for scheme in "cp 2 --cp-kind ring" "cp 2 --cp-kind ulysses" "tp 2"; do
  name=$(echo "$scheme" | awk '{print $1 $NF}')
  attncost profile --device cpu --$scheme --phase "$PHASE" --T "$T" --hardware "$OUT/cpu-1core.json" \
    --out "$OUT/$name-$PHASE.json" --overwrite
done
python - "$OUT" "$PHASE" <<'PY'
import json, statistics, sys
from pathlib import Path
errors = []
for path in sorted(Path(sys.argv[1]).glob(f"*-{sys.argv[2]}.json")):
    for p in json.loads(path.read_text())["points"]:
        if p.get("predicted_time_s") and p.get("timing"):
            err = p["predicted_time_s"] / p["timing"]["median_s"] - 1
            errors.append(abs(err))
            print(f"{path.stem:16s} {p['variant']:15s} T={p['shape']['T']:>6,}  measured "
                  f"{p['timing']['median_s']*1e3:8.3g} ms  predicted {p['predicted_time_s']*1e3:8.3g} ms  "
                  f"error {err:+.0%}  bytes/rank {p['rank_bytes_sent']} (predicted {p['predicted_bytes_sent']:,.0f})")
print(f"median |error| over {len(errors)} points: {statistics.median(errors):.0%}")
PY
