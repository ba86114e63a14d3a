#!/usr/bin/env bash
# The time model's accuracy on this machine's CPU, out of sample: calibrate (microbenchmarks only),
# then profile every variant in prefill, decode (batch 1 and 4) and train at shapes that no test
# and no calibration row uses, and print the error tables (`attncost crosscheck --time`).
# Writes examples/cpu-accuracy/: the calibrated profile (+ its rows) and the results files.
#   usage: bash bench/cpu_accuracy.sh [--quick]     (--quick: quick calibration, fewer T)
# Run it on a quiet machine: other processes on the cores show up as model error.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
ex=examples/cpu-accuracy
mkdir -p $ex
prof=$ex/cpu-calibrated.json
T=96,384,1536
[ "$quick" = "--quick" ] && T=96,384
common=(--device cpu --dtype fp32 --d 320 --heads 5 --hardware "$prof" --budget 0.3 --no-count --overwrite)
fail=0
step() { echo "== $(date +%T) $*"; "$@" || { echo "== failed: $*"; fail=$((fail + 1)); }; }

step attncost calibrate --device cpu ${quick:+--quick} --out "$prof" --overwrite
step attncost profile "${common[@]}" --phase prefill --variants all --T "$T" --out $ex/prefill.json
step attncost profile "${common[@]}" --phase decode --variants all --T "$T" --batch 1 --out $ex/decode-b1.json
step attncost profile "${common[@]}" --phase decode --variants all --T "$T" --batch 4 --out $ex/decode-b4.json
step attncost profile "${common[@]}" --phase train --variants all --T 96,384 --out $ex/train.json
for f in $ex/prefill.json $ex/decode-b1.json $ex/decode-b4.json $ex/train.json; do
  [ -f "$f" ] && { echo "== $f"; attncost crosscheck --time "$f"; }
done
exit $fail
