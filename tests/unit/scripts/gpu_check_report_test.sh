#!/usr/bin/env bash
# scripts/gpu-check-report.sh (gpu-check.sh's stage verdicts) on GoogleTest logs of the shapes the
# GPU stages write: a stage where one case skipped (cuDNN missing) and the others ran says PASS with
# the skipped case named, not SKIP; a stage where nothing ran says SKIP; failures say FAIL. With a
# CUDA build and no GPU, the real kernels test binary's log too. Runtime: under a second (plus the
# binary's few seconds where it is built).
#   gpu_check_report_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
. "$src/scripts/gpu-check-report.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
expect() {  # expect NAME RC WANTED (the log is $tmp/NAME.log)
  local got
  got=$(stage_verdict "$tmp/$1.log" "$2")
  if [ "$got" = "$3" ]; then
    echo "ok    $1: $got"
  else
    echo "FAIL  $1: got '$got', expected '$3'"
    failures=$((failures + 1))
  fi
}

# Stage 7's shape: the kernel binary's cases (one skipped, colour codes as under mpiexec's pty),
# then the model test on two ranks (each rank prints its cases), GoogleTest's summary repeating the
# skipped case's name.
esc=$'\033'
{
  echo "cuDNN: libcudnn.so.9 not found on this image"
  echo "[ RUN      ] FusedAttentionTest.ForwardAndBackwardMatchCublasWithinBf16"
  echo "gpu_test: cuDNN unavailable: skipped (cuDNN not available: cannot load libcudnn.so.9)"
  echo "${esc}[0;32m[  SKIPPED ] ${esc}[mFusedAttentionTest.ForwardAndBackwardMatchCublasWithinBf16 (0 ms)"
  echo "[ RUN      ] FusedAttentionFallback.SaysWhyItIsUnusable"
  echo "${esc}[0;32m[       OK ] ${esc}[mFusedAttentionFallback.SaysWhyItIsUnusable (3 ms)"
  echo "[  PASSED  ] 1 test."
  echo "[  SKIPPED ] 1 test, listed below:"
  echo "[  SKIPPED ] FusedAttentionTest.ForwardAndBackwardMatchCublasWithinBf16"
  for _ in 0 1; do
    echo "[       OK ] GpuModel.FusedAttentionAtContextOne (812 ms)"
  done
} > "$tmp/mixed.log"
expect mixed 0 "PASS (2 ran); SKIP 1: FusedAttentionTest.ForwardAndBackwardMatchCublasWithinBf16"

# Stage 2 without a GPU: every case skipped.
{
  echo "== build/tests/finemoe_gpu_kernels_test"
  for c in RowKernels.LayerNorm DeterministicScatter.HotRowSumsInCopyOrder; do
    echo "[ RUN      ] $c"
    echo "gpu_test_support.h:24: Skipped"
    echo "no CUDA device: skipped"
    echo "[  SKIPPED ] $c (0 ms)"
  done
} > "$tmp/all_skipped.log"
expect all_skipped 0 "SKIP"

# Every case ran and passed.
printf '[       OK ] A.One (1 ms)\n[       OK ] A.Two (1 ms)\n[  PASSED  ] 2 tests.\n' > "$tmp/passed.log"
expect passed 0 "PASS"

# A failed case beside skipped ones is a failure.
printf '[  SKIPPED ] A.One (0 ms)\ncuDNN unavailable: skipped (x)\n[  FAILED  ] A.Two (5 ms)\n' > "$tmp/failed.log"
expect failed 1 "FAIL (exit 1)"

# finemoe-bench without a device exits 3 with its message (a skip); exit 3 without it is a failure.
echo "finemoe-bench: no CUDA device (cudaGetDeviceCount: no CUDA-capable device is detected)" > "$tmp/bench_no_gpu.log"
expect bench_no_gpu 3 "SKIP"
echo "finemoe-bench: something else" > "$tmp/bench_other.log"
expect bench_other 3 "FAIL (exit 3)"

# A stage without GoogleTest cases that exits 0 (the throughput benchmarks).
echo "MFU 41.2%" > "$tmp/bench.log"
expect bench 0 "PASS"

# The real kernels binary of a CUDA build, on a machine without a GPU: every case skips.
binary=$build/tests/finemoe_gpu_kernels_test
if [ -x "$binary" ] && ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
  rc=0
  OMP_NUM_THREADS=1 "$binary" > "$tmp/real.log" 2>&1 || rc=$?
  # FusedAttentionFallback runs without a GPU (it only loads cuDNN): the stage passed what ran and
  # names the GPU cases it skipped.
  got=$(stage_verdict "$tmp/real.log" $rc)
  if [[ "$got" =~ ^PASS\ \([0-9]+\ ran\)\;\ SKIP\ [0-9]+:\ .*DeterministicScatter\.HotRowSumsInCopyOrder ]] &&
     [[ "$got" != *FusedAttentionFallback* ]]; then
    echo "ok    real: ${got:0:100}..."
  else
    echo "FAIL  real: got '$got'"
    failures=$((failures + 1))
  fi
else
  echo "skip  real: no $binary (a CUDA build) or a GPU is present"
fi

if [ $failures -ne 0 ]; then
  echo "$failures verdicts wrong"
  exit 1
fi
echo "all verdicts as expected"
