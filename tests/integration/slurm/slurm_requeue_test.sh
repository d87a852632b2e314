#!/usr/bin/env bash
# Slurm requeue test: a run of slurm/train.sbatch receives USR1 in its batch shell before its end
# (`scancel --signal=USR1 --batch`, as --signal=B:USR1@<s> sends it before the time limit); the
# ranks checkpoint and exit 75, the job requeues itself, restarts (SLURM_RESTART_COUNT 1),
# resumes, completes, and its record equals an uninterrupted run's bit for bit.
#   slurm_requeue_test.sh SOURCE_DIR BUILD_DIR
# shellcheck source=slurm_test_lib.sh
source "$(dirname "$0")/slurm_test_lib.sh"
compare="$build_dir/tests/record_compare"
[ -x "$compare" ] || fail "$compare not built"

start_slurm
make_data
cd "$work" || exit 1
params="$work/params"
"$build_dir/bin/finemoe-sweep" expand "$src_dir/inputs/sweeps/tiny-cpu.ini" --select shape=d48 --select G=G2 \
  --select tokens=D31k --output "$work/runs" --params-dir "$params" --manifest none --quiet \
  --set "data.train=$work/data/train" --set "data.val=$work/data/val" --set train.steps=300 \
  --set train.eval_interval=100 --set train.threads=1 >/dev/null || fail "finemoe-sweep expand failed"
run_params=$(ls "$params"/*.ini)

export FINEMOE_HOME="$src_dir" FINEMOE_BUILD="$build_dir"
job=$(sbatch --parsable -n 2 --cpus-per-task=1 --mem=2048 -t 10 --output="$work/train.out" \
  "$src_dir/slurm/train.sbatch" "$run_params" --output.dir="$work/runs/signalled")
log "submitted job $job"

# Signal once the run is under way (some steps logged), well before its end.
start=$(date +%s)
until grep -qE 'step (5|6|7|8|9)[0-9]/300' "$work/train.out" 2>/dev/null; do
  [ $(( $(date +%s) - start )) -lt 120 ] || { cat "$work/train.out"; fail "the run did not reach step 50 in 120 s"; }
  if grep -q 'step 300/300' "$work/train.out" 2>/dev/null; then fail "the run finished before it could be signalled"; fi
  sleep 0.2
done
scancel --signal=USR1 --batch "$job"
log "sent USR1 to the batch shell of job $job"

wait_jobs 300 "$job"
cat "$work/train.out"
grep -q "received USR1" "$work/train.out" || fail "train.sbatch did not report the signal"
grep -q "exited with 75" "$work/train.out" || fail "finemoe-train did not exit with 75 after the signal"
grep -q "requeueing job $job" "$work/train.out" || fail "the job did not requeue itself"
grep -q "restart 1" "$work/train.out" || fail "the job did not restart"
grep -q "resumed from checkpoint at step" "$work/train.out" || fail "the restarted run did not resume from its checkpoint"
state=$(scontrol show job "$job" | grep -o 'JobState=[A-Z]*')
[ "$state" = "JobState=COMPLETED" ] || fail "job $job ended as $state"

log "uninterrupted reference run"
mpirun -np 2 --oversubscribe "$build_dir/bin/finemoe-train" "$run_params" --output.dir="$work/runs/straight" --quiet \
  || fail "reference run failed"
"$compare" "$work/runs/signalled/record.h5" "$work/runs/straight/record.h5" || fail "records differ"
"$compare" "$work/runs/signalled/record.h5" "$work/runs/straight/record.h5" | grep -q "signalled/record.h5: resume_count 1" \
  || fail "the signalled record was not resumed exactly once"
log "PASS: signalled, requeued, resumed; same final loss as the uninterrupted run"
