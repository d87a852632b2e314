#!/usr/bin/env bash
# The checks that need several GPUs on one node (one GPU cannot run NCCL on 2 ranks), after
# scripts/gpu-check.sh has passed on one of them. Uses the same build (or the prebuilt bundle in
# $FINEMOE_GPU_BUNDLE, default .gpu-bundle) and environment; run it from the repository root:
#   scripts/gpu-multi-check.sh [RESULTS_DIR]        (default $OUT when set, else bench/results/gpu-multi-<UTC>)
# Stages, each with a line in RESULTS_DIR/summary.txt (PASS / FAIL, seconds) and its log:
#   1 nccl     finemoe_gpu_nccl_test on N ranks, one GPU each (all-to-all(v), all-reduce, split, ...)
#   2 layouts  finemoe-bench step of the h100-100m shape (2 blocks, G 8, bf16) on 1 rank and on N ranks
#              over NCCL with EP = N, the same global batches: losses after the same steps within 1e-2
#   3 overlap  the 14-block model on N ranks over NCCL (EP = N): tokens/s, all-to-all and expert-GEMM
#              times (the exchange on the expert group's communicator and the compute stream, the
#              gradient reduction on the world's communicator and its own stream, overlapping the
#              backward block by block)
# N = $NGPUS or the GPUs nvidia-smi lists (at least 2). Exit: 0 passed, 3 fewer than 2 GPUs, 1 a
# stage failed. Not yet run: no multi-GPU machine was at hand when it was written.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "[gpu-multi-check] $*"; }
ngpu=${NGPUS:-$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)}
if [ "${ngpu:-0}" -lt 2 ]; then
  log "fewer than 2 GPUs visible ($ngpu): nothing to check here (scripts/gpu-check.sh covers one GPU)"
  exit 3
fi
bundle=${FINEMOE_GPU_BUNDLE:-$root/.gpu-bundle}
if [ -x "$bundle/bin/finemoe-bench" ]; then build=$bundle; else build=${FINEMOE_GPU_BUILD_DIR:-$root/build-gpu}; fi
[ -x "$build/bin/finemoe-train" ] || { log "no binaries in $build: run scripts/gpu-check.sh first (it builds them)" >&2; exit 1; }
results=${1:-${OUT:-$root/bench/results/gpu-multi-$(date -u +%Y%m%dT%H%M%SZ)}}
mkdir -p "$results/logs"
summary=$results/summary.txt
: > "$summary"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpiexec=${MPIEXEC:-mpiexec}
failed=()
stage() {
  local n=$1 name=$2 t0 rc=0
  shift 2
  t0=$(date +%s)
  log "stage $n: $name ($ngpu GPUs)"
  "$@" > "$results/logs/stage$n-$name.log" 2>&1 || rc=$?
  local verdict=PASS
  [ $rc -eq 0 ] || { verdict="FAIL (exit $rc)"; failed+=("$n $name"); }
  grep -E "losses|tokens/s|all-to-all|PASSED|FAILED" "$results/logs/stage$n-$name.log" | head -20 |
    sed 's/^/    /' || true
  printf '%s  stage %d %-8s %4d s  %s\n' "$(date -u +%T)" "$n" "$name" $(( $(date +%s) - t0 )) "$verdict" | tee -a "$summary"
}

model=(--device cuda --precision bf16 --d-model 768 --heads 12 --context 512 --vocab 256 --E 8 --G 8
       --batch $((64 / ngpu * ngpu)))
layouts() {  # the same steps (same global batches) on 1 rank and on N ranks over NCCL with EP = N
  "$mpiexec" -n 1 "$build/bin/finemoe-bench" step "${model[@]}" --blocks 2 --reps 3 --warmup 1 \
    --json-out "$results/logs/layout-1.json" > /dev/null
  "$mpiexec" -n "$ngpu" "$build/bin/finemoe-bench" step "${model[@]}" --blocks 2 --reps 3 --warmup 1 \
    --communicator nccl --json-out "$results/logs/layout-$ngpu.json" > /dev/null
  python3 - "$results/logs/layout-1.json" "$results/logs/layout-$ngpu.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
gap = abs(a["loss"] - b["loss"]) / abs(a["loss"])
print(f"losses after the same steps, 1 rank {a['loss']:.6f} vs {b['ep']} ranks over NCCL {b['loss']:.6f}: "
      f"relative gap {gap:.2e}; rank_devices {b['device']}")
sys.exit(0 if gap <= 1e-2 else 1)
PY
}

stage 1 nccl "$mpiexec" -n "$ngpu" "$build/tests/finemoe_gpu_nccl_test"
stage 2 layouts layouts
stage 3 overlap "$mpiexec" -n "$ngpu" "$build/bin/finemoe-bench" step "${model[@]}" --blocks 14 \
  --communicator nccl --reps 5 --warmup 2 --json-out "$results/logs/step-nccl.json"
if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED stages: ${failed[*]}" >&2
  exit 1
fi
log "all stages passed; $summary"
