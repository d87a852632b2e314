#!/usr/bin/env bash
# Runs the input fuzzer, the CLI error cases and the resume-robustness cases against an
# ASan+UBSan build of finemoe-train alone (the test binaries come from the normal build and
# take the sanitized binary through FINEMOE_TRAIN_BIN).
# usage: scripts/fuzz-sanitized.sh [BUILD_DIR=build] [SANITIZED_BUILD_DIR=build-asan]
# Builds finemoe-train in SANITIZED_BUILD_DIR (Debug, -fsanitize=address,undefined; CUDA off) and
# the test binaries in BUILD_DIR if missing. Any sanitizer report fails the cases (they look for
# "runtime error:" and "AddressSanitizer").
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build}"; asan="${2:-build-asan}"
jobs="${JOBS:-2}"
cmake -S "$src" -B "$asan" -DCMAKE_BUILD_TYPE=Debug -DFINEMOE_CUDA=OFF -DFINEMOE_TESTS=OFF -DFINEMOE_ANALYSIS=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
  -DCMAKE_C_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build "$asan" --target finemoe-train -j "$jobs"
cmake --build "$build" --target input_fuzz_test cli_errors_test resume_robustness_test -j "$jobs"
# OpenMPI's own allocations are not ours to report; every other finding fails the run.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0" UBSAN_OPTIONS="print_stacktrace=1"
export FINEMOE_TRAIN_BIN="$(cd "$asan" && pwd)/bin/finemoe-train"
cd "$build"
ctest -R "InputFuzz|CliErrors|ResumeRobustness" --output-on-failure
