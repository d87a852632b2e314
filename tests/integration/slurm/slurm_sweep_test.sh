#!/usr/bin/env bash
# Slurm sweep test: on a private single-node Slurm, slurm/submit.sh submits the tiny CPU sweep
# (inputs/sweeps/tiny-cpu.ini: 8 MoE runs of 2 MPI ranks, EP 2) as an array job plus the
# dependent analysis job; every record must be completed and the fit and optimum written.
#   slurm_sweep_test.sh SOURCE_DIR BUILD_DIR
# shellcheck source=slurm_test_lib.sh
source "$(dirname "$0")/slurm_test_lib.sh"

start_slurm
make_data
cd "$work" || exit 1
out="$work/sweep"
submit_log="$work/submit.log"
FINEMOE_OPTIMAL_ARGS="--budgets 1e12,1e14" \
  "$src_dir/slurm/submit.sh" "$src_dir/inputs/sweeps/tiny-cpu.ini" "$src_dir/inputs/allocations/local-cpu.ini" \
  --build "$build_dir" -- --output "$out" --set "data.train=$work/data/train" --set "data.val=$work/data/val" \
  >"$submit_log" 2>&1 || { cat "$submit_log"; fail "submit.sh failed"; }
array_id=$(awk '$1 == "array" {print $2}' "$submit_log")
analysis_id=$(awk '$1 == "analysis" {print $2}' "$submit_log")
if [ -z "$array_id" ] || [ -z "$analysis_id" ]; then cat "$submit_log"; fail "submit.sh printed no job ids"; fi
log "submitted array $array_id and analysis $analysis_id"
dep=$(scontrol show job "$analysis_id" | grep -o 'Dependency=[^ ]*')
case "$dep" in
  "Dependency=afterany:${array_id}"*) ;;  # afterany:<id>_*(unfulfilled) while the array runs
  *) fail "analysis job $analysis_id has '$dep', expected afterany:$array_id" ;;
esac

wait_jobs 420 "$array_id" "$analysis_id"
log "all jobs ended"
runs=$(grep -vc '^#' "$out/manifest.txt")
[ "$runs" -ge 8 ] || fail "manifest has $runs runs, expected >= 8"
if ! "$build_dir/bin/finemoe-sweep" status "$out/manifest.txt"; then
  tail -n 30 "$out"/logs/*.out
  fail "not every run completed"
fi
grep -q "2 ranks" "$out"/logs/"${array_id}"_0-*.out || fail "run 0 did not run 2 ranks"
grep -q "^rank 1 host" "$out"/logs/"${array_id}"_0-*.out || fail "run 0 printed no rank map"
for f in fit.h5 fit.csv fit_runs.csv observed_vs_predicted.svg optimal/optimal.csv optimal/optimal.h5; do
  [ -s "$out/analysis/$f" ] || { cat "$out"/logs/analyze-*.out; fail "analysis output $f missing"; }
done
grep -q "8 MoE" "$out"/logs/analyze-*.out || { cat "$out"/logs/analyze-*.out; fail "the fit did not use the 8 runs"; }
log "PASS: $runs runs completed, analysis in $out/analysis"
