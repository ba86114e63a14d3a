#!/usr/bin/env bash
# attncost's checks on a machine with one NVIDIA GPU, in one go, in under 8 minutes (docs/GPU_CHECKS.md).
#
#   bash bench/gpu_checks.sh [--dry] [STEP ...]
#     steps, in order: calibrate prefill decode graph heldout models crosscheck report (default: all)
#     --dry or ATTNCOST_DRY=1: the same steps on the CPU with tiny shapes, into a temporary folder
#     OUT=folder: each results file is copied there as soon as its step ends
#
# Writes examples/<gpu>-*.json (<gpu>: the built-in profile matching the GPU, e.g. h100) and a report.
# Every step has a time limit, and the whole run stops within TOTAL_S seconds. A step fails when its
# command exits non-zero or runs out of time; the exit status is the number of failed steps. A
# crosscheck whose median error is above attncost's target (its exit status 1) is a finding, not a
# failure: it is listed as MISSED in the closing summary and not counted.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
t_start=$SECONDS

DRY=${ATTNCOST_DRY:-0}
steps=()
for arg in "$@"; do
  case $arg in
    --dry) DRY=1 ;;
    calibrate|prefill|decode|graph|heldout|models|crosscheck|report) steps+=("$arg") ;;
    *) echo "unknown step or flag: $arg (steps: calibrate prefill decode graph heldout models crosscheck report)" >&2
       exit 2 ;;
  esac
done
[ ${#steps[@]} -eq 0 ] && steps=(calibrate prefill decode graph heldout models crosscheck report)

TOTAL_S=450   # 7.5 minutes: every step's limit is cut to what is left of this
GRACE_S=10    # a step that ignores SIGTERM is killed this long after its limit

if [ "$DRY" = 1 ]; then
  device=cpu
  gpu=cpu
  builtin=cpu
  if ! ex=$(mktemp -d "${TMPDIR:-/tmp}/attncost-checks.XXXXXX"); then
    echo "error: cannot make a temporary folder in ${TMPDIR:-/tmp}" >&2
    exit 1
  fi
  layer=(--d 64 --heads 2)  # one T, one decode batch, the fewest timed calls: every step, quickly
  prefill_T=64
  decode_T=64
  batches=(2)
  heldout=(--d 128 --heads 4 --T 96)
  budget=0.01
  # two small models of the presets' two kinds (GPT-2: learned positions, LayerNorm, GELU, MHA;
  # Llama: RoPE, RMSNorm, SwiGLU, GQA), written beside the results
  cat > "$ex/tiny-gpt2.json" <<'EOF'
{"name": "tiny-gpt2", "layers": 2, "d": 64, "heads": 2, "vocab": 256, "context": 128, "mlp_hidden": 256}
EOF
  cat > "$ex/tiny-llama.json" <<'EOF'
{"name": "tiny-llama", "layers": 2, "d": 64, "heads": 4, "kv_heads": 2, "vocab": 256, "context": 128,
 "positions": "rope", "tied_embeddings": false, "norm": "rmsnorm", "bias": false, "mlp": "swiglu",
 "mlp_hidden": 128, "attention": "gqa"}
EOF
  models=("$ex/tiny-gpt2.json:64" "$ex/tiny-llama.json:64")
  echo "DRY RUN on the CPU, tiny shapes; results in $ex"
else
  device=cuda
  ex=examples
  layer=(--d 1024 --heads 16)
  prefill_T=512:16384
  graph_T=512:4096
  decode_T=4096,32768
  batches=(1 16)
  heldout=(--d 4096 --heads 8 --T 8192)
  budget=0.1
  models=("gpt2:512,1024" "llama-3-8b:2048")
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  [ -n "$name" ] || name=$(timeout 60 python3 -c "import torch; print(torch.cuda.get_device_name())" 2>/dev/null)
  if [ -z "$name" ]; then
    echo "error: no NVIDIA GPU found (nvidia-smi and torch.cuda see none); for the CPU, use --dry" >&2
    exit 1
  fi
  # the built-in profile of this GPU (h100, h200, a100, ...), else h100; it also names the files
  builtin=$(timeout 30 python3 -c "import sys; from attncost.profiler.device import default_hardware
print(default_hardware('cuda', sys.argv[1]) or 'h100')" "$name") || builtin=h100
  gpu=$builtin
  echo "GPU: $name (files $ex/$gpu-*; built-in profile $builtin)"
fi
dtype=bf16
prof=$ex/$gpu-calibrated.json
hardware=$prof

failed=0
summary=()

keep() {  # copy files that exist to $OUT, when it is set
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  for f in "$@"; do
    [ -f "$f" ] && cp -f "$f" "$OUT"/
  done
  return 0
}

step() {  # step [--miss-ok] LABEL LIMIT_S ARGS...: `attncost ARGS...` under a time limit
  local miss_ok=0 label limit left rc t0
  [ "$1" = --miss-ok ] && { miss_ok=1; shift; }  # exit status 1 = a target missed, not a failure
  label=$1 limit=$2
  shift 2
  left=$(( TOTAL_S - (SECONDS - t_start) - GRACE_S ))
  (( limit > left )) && limit=$left
  if (( limit < 5 )); then
    echo "== $(date +%T) $label: NOT RUN, the ${TOTAL_S} s of the whole run are spent" >&2
    failed=$((failed + 1)); summary+=("not run  $label")
    return 1
  fi
  echo "== $(date +%T) $label (limit ${limit} s): attncost $*"
  t0=$SECONDS
  timeout --kill-after="$GRACE_S" "$limit" python3 -m attncost "$@"
  rc=$?
  if (( rc == 0 )); then
    echo "== $(date +%T) $label: ok in $((SECONDS - t0)) s"
    summary+=("ok       $label ($((SECONDS - t0)) s)")
  elif (( rc == 1 && miss_ok )); then
    echo "== $(date +%T) $label: MISSED the accuracy target (see the table above)"
    summary+=("MISSED   $label (above the accuracy target)")
  elif (( rc == 124 || rc == 137 )); then
    echo "== $(date +%T) $label: FAILED, out of time after ${limit} s" >&2
    failed=$((failed + 1)); summary+=("TIMEOUT  $label")
  else
    echo "== $(date +%T) $label: FAILED with exit status $rc" >&2
    failed=$((failed + 1)); summary+=("FAILED   $label (exit $rc)")
  fi
  return "$rc"
}

profile() {  # profile LABEL LIMIT_S FILE ARGS...: one `attncost profile` into FILE, kept as it ends
  local label=$1 limit=$2 file=$3
  shift 3
  [ -f "$prof" ] || hardware=$builtin  # no calibrated profile (not run, or failed): the built-in one
  step "$label" "$limit" profile --device "$device" --dtype "$dtype" --hardware "$hardware" \
    --out "$file" --resume "$@"
  keep "$file"
}

prefill_out=$ex/$gpu-prefill-$dtype.json
heldout_out=$ex/$gpu-heldout-$dtype.json
results=()  # the results files of this run, for crosscheck

for s in "${steps[@]}"; do
  case $s in
    calibrate)
      step calibrate 90 calibrate --device "$device" --quick --out "$prof"
      rc=$?
      keep "$prof" "${prof%.json}.microbench.json"
      if (( rc != 0 )) || [ ! -f "$prof" ]; then
        hardware=$builtin
        echo "== calibration failed: the predictions use the built-in '$builtin' profile" >&2
      fi ;;
    prefill)
      profile prefill 110 "$prefill_out" --phase prefill --variants all "${layer[@]}" --T "$prefill_T" \
        --budget "$budget" --no-count
      results+=("$prefill_out") ;;
    decode)
      for b in "${batches[@]}"; do
        f=$ex/$gpu-decode-b$b-$dtype.json
        profile "decode batch $b" 40 "$f" --phase decode --variants mha,gqa,mqa,mla "${layer[@]}" \
          --T "$decode_T" --batch "$b" --budget "$budget" --no-count
        results+=("$f")
      done ;;
    graph)  # the same layers replayed from a captured CUDA graph: no host time
      if [ "$device" != cuda ]; then
        echo "== graph: CUDA graphs need a CUDA GPU; skipped on the $device" >&2
        summary+=("SKIPPED  graph (needs CUDA)")
        continue
      fi
      f=$ex/$gpu-prefill-graph-$dtype.json
      profile "prefill graph" 60 "$f" --exec graph --phase prefill --variants flash,gqa,mha,performer \
        "${layer[@]}" --T "$graph_T" --budget "$budget" --no-count
      results+=("$f")
      f=$ex/$gpu-decode-graph-b1-$dtype.json
      profile "decode graph" 40 "$f" --exec graph --phase decode --variants mha,gqa,mqa,mla "${layer[@]}" \
        --T "$decode_T" --batch 1 --budget "$budget" --no-count
      results+=("$f") ;;
    heldout)
      profile heldout 40 "$heldout_out" --phase prefill --variants all "${heldout[@]}" --budget "$budget" \
        --no-count
      results+=("$heldout_out") ;;
    models)
      for m in "${models[@]}"; do
        model=${m%%:*}
        T=${m##*:}
        f=$ex/$gpu-model-$(basename "${model%.json}")-$dtype.json
        profile "model $(basename "$model")" 60 "$f" --model "$model" --T "$T" --budget "$budget"
        results+=("$f")
      done ;;
    crosscheck)
      if [ ${#results[@]} -eq 0 ]; then  # run on its own: the files of an earlier run
        for f in "$ex/$gpu"-{prefill,decode-b*,prefill-graph,decode-graph-b*,heldout,model-*}-"$dtype".json; do
          [ -f "$f" ] && results+=("$f")
        done
      fi
      [ ${#results[@]} -eq 0 ] && echo "== crosscheck: no results files in $ex to check"
      for f in "${results[@]}"; do
        if [ -f "$f" ]; then
          step --miss-ok "crosscheck $(basename "$f")" 30 crosscheck --time "$f"
        else  # its step failed already
          echo "== crosscheck: $f was not written" >&2
          summary+=("SKIPPED  crosscheck $(basename "$f") (not written)")
        fi
      done ;;
    report)
      if [ -f "$prefill_out" ]; then
        step report 60 report "$prefill_out" -o "$ex/$gpu-report.html"
        keep "$ex/$gpu-report.html"
      else  # the prefill step failed already, or was not run
        echo "== report: no prefill results to report" >&2
        summary+=("SKIPPED  report (no prefill results)")
      fi ;;
  esac
done

echo
echo "== $(date +%T) done in $((SECONDS - t_start)) s, $failed failed; predictions with the '$hardware' profile"
[ ${#summary[@]} -gt 0 ] && printf '   %s\n' "${summary[@]}"
[ "$DRY" = 1 ] && echo "   results in $ex"
exit "$failed"
