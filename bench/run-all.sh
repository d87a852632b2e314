#!/usr/bin/env bash
# Runs every finemoe-bench figure of bench/RESULTS.md, sequentially (they share the cores), into
# OUT (default bench/results/<UTC date-time>): one .txt (table) and one .json per run, plus the
# machine summary. Waits (up to WAIT_S, default 300 s) for a 1-minute load below MAX_LOAD (1.5)
# before each run and records the load each run saw.
# usage: bench/run-all.sh [BUILD_DIR] [OUT]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build-bench}"
out="${2:-$root/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
reps="${REPS:-3}"
mkdir -p "$out"
b="$build/bin/finemoe-bench"
export OPENBLAS_THREAD_TIMEOUT="${OPENBLAS_THREAD_TIMEOUT:-4}"  # see scripts/bench-vs-pytorch.sh
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpiexec -n 2 --oversubscribe --bind-to none)
wait_quiet() {
  local waited=0
  while awk -v m="${MAX_LOAD:-1.5}" '{exit !($1 >= m)}' /proc/loadavg && [ "$waited" -lt "${WAIT_S:-300}" ]; do
    sleep 15; waited=$((waited + 15))
  done
}
run() {  # name, command...
  local name="$1"; shift
  wait_quiet
  echo "== $name: $* (load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ))" | tee -a "$out/commands.txt"
  "$@" --reps "$reps" --json-out "$out/$name.json" | tee "$out/$name.txt"
}
{ date -u; uname -a; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|L2|L3|Flags" | cut -c1-200;
  git -C "$root" rev-parse --short HEAD; } > "$out/machine.txt"
run expert-gemm "$b" expert-gemm
run expert-gemm-blas "$b" expert-gemm --schedule blas --G 1,16,64 --forward-only
run dispatch "${mpi[@]}" "$b" dispatch
run moe-layer-ep2 "${mpi[@]}" "$b" moe-layer --G 1,4,16,64
run step-1rank "$b" step
run step-ep2 "${mpi[@]}" "$b" step
# GPU benchmarks, when finemoe-bench was built with CUDA and a GPU is there (scripts/gpu-check.sh
# builds and runs them on a bare CUDA image; docs/cuda.md). Their own defaults: 20 reps, 3 warm-ups.
if nvidia-smi -L 2>/dev/null | grep -q GPU && "$b" gpu-peak --help >/dev/null 2>&1; then
  for g in gpu-peak gpu-expert-gemm gpu-alltoall; do
    echo "== $g: $b $g ($(date -u +%FT%TZ))" | tee -a "$out/commands.txt"
    "$b" "$g" --json-out "$out/$g.json" | tee "$out/$g.txt"
  done
fi
echo "results in $out"
