# shellcheck shell=bash
# Sourced by scripts/gpu-check.sh: a stage's verdict from its log and exit status, case by case for
# the stages that run GoogleTest binaries, so that one skipped case (cuDNN missing) no longer hides
# the cases that ran and passed beside it.
#   stage_verdict LOG RC   prints one of
#     FAIL (exit RC)                     the command failed (RC 3 with a skip message is a skip)
#     PASS                               it passed and nothing skipped
#     PASS (N ran); SKIP M: A, B         N GoogleTest cases ran and passed, the named M skipped
#     SKIP                               nothing ran: every case skipped, or the command said it
#                                        skipped (no CUDA device, no torch)
# Case names come from GoogleTest's "[       OK ] Suite.Case (..." and "[  SKIPPED ] Suite.Case (..."
# lines (colour codes removed; the repeated list of its summary and the copies of several ranks
# counted once).

gpu_check_skip_regex='no CUDA device: skipped|no CUDA device \(cudaGetDeviceCount|no torch|cuDNN unavailable: skipped'

# gtest_cases LOG STATUS: the distinct cases of STATUS (OK or SKIPPED) in LOG, one a line.
gtest_cases() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | sed -nE "s/^\[ *$2 *\] ([A-Za-z0-9_/.]+) \(.*/\1/p" | sort -u
}

stage_verdict() {
  local log=$1 rc=$2 said_skip=0 ran skipped n_ran n_skipped
  grep -qE "$gpu_check_skip_regex" "$log" && said_skip=1
  if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 3 ] && [ $said_skip -eq 1 ]; }; then
    echo "FAIL (exit $rc)"
    return
  fi
  ran=$(gtest_cases "$log" OK)
  skipped=$(gtest_cases "$log" SKIPPED)
  n_ran=$(grep -c . <<< "$ran" || true)
  n_skipped=$(grep -c . <<< "$skipped" || true)
  if [ "$n_ran" -gt 0 ] && [ "$n_skipped" -gt 0 ]; then
    echo "PASS ($n_ran ran); SKIP $n_skipped: $(paste -sd, <<< "$skipped" | sed 's/,/, /g')"
  elif [ "$n_ran" -gt 0 ] || [ $said_skip -eq 0 ]; then
    echo "PASS"
  else
    echo "SKIP"
  fi
}
