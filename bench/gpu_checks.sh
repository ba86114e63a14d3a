#!/usr/bin/env bash
# The GPU checks the issues owe, in one go, for a machine with one NVIDIA GPU (see docs/GPU_CHECKS.md).
# Writes examples/<gpu>-*.json and a report; each step is bounded so the whole stays under ~25 minutes.
#   usage: bash bench/gpu_checks.sh [STEP ...]   steps: calibrate prefill decode heldout models report (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
run() { python3 -m attncost.cli.main "$@"; }
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")  # e.g. h100
ex=examples
prof=$ex/$gpu-calibrated.json
steps=${*:-calibrate prefill decode heldout models report}
for step in $steps; do
  echo "== $step $(date +%T)"
  case $step in
    calibrate) timeout 540 python3 -m attncost.cli.main calibrate --device cuda --out "$prof" ;;
    prefill)   timeout 580 python3 -m attncost.cli.main profile --device cuda --dtype bf16 --phase prefill \
                 --variants all --d 1024,2048 --heads 16 --T 512:32768 --hardware "$prof" --no-count \
                 --budget 0.3 --out $ex/$gpu-prefill-bf16.json --resume ;;
    decode)    timeout 300 python3 -m attncost.cli.main profile --device cuda --dtype bf16 --phase decode \
                 --variants mha,gqa,mqa,mla --d 1024,2048 --heads 16 --T 512:32768 --hardware "$prof" \
                 --no-count --budget 0.3 --out $ex/$gpu-decode-bf16.json --resume ;;
    heldout)   timeout 200 python3 -m attncost.cli.main profile --device cuda --dtype bf16 --variants all \
                 --d 4096 --heads 8 --T 8192 --hardware "$prof" --no-count --out $ex/$gpu-heldout-bf16.json --resume ;;
    models)    timeout 400 python3 -m attncost.cli.main profile --device cuda --dtype bf16 --model gpt2 --T 512,2048 \
                 --hardware "$prof" --out $ex/$gpu-model-gpt2-bf16.json --resume
               timeout 400 python3 -m attncost.cli.main profile --device cuda --dtype bf16 --model llama-3-8b \
                 --T 512,2048 --hardware "$prof" --out $ex/$gpu-model-llama-3-8b-bf16.json --resume ;;
    report)    for f in $ex/$gpu-prefill-bf16.json $ex/$gpu-decode-bf16.json $ex/$gpu-heldout-bf16.json; do
                 [ -f "$f" ] && run crosscheck --time "$f"
               done
               run report $ex/$gpu-prefill-bf16.json -o "${OUT:-/tmp}/$gpu-report.html" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
[ -n "${OUT:-}" ] && cp $ex/$gpu-*.json "$OUT"/ 2>/dev/null
exit 0
