#!/usr/bin/env bash
# submit.sh: expands a sweep for an allocation and submits it: one array job (one task per run,
# slurm/sweep.sbatch) and the analysis job (slurm/analyze.sbatch) that starts when every task has
# ended (--dependency=afterany:<array>, --kill-on-invalid-dep=yes so it cannot stay pending
# forever). Prints the job ids.
#
#   slurm/submit.sh SWEEP.ini ALLOCATION.ini [options] [-- finemoe-sweep expand options]
#     --build DIR        build folder with bin/finemoe-{sweep,train,analyze} (default: build)
#     --throttle K       at most K runs at once (default: the allocation's array_throttle)
#     --no-analysis      submit the array only
#     --dry-run          validate, print the sbatch commands; write and submit nothing
#   e.g. slurm/submit.sh inputs/sweeps/paper-e64.ini inputs/allocations/generic-4gpu.ini
#        slurm/submit.sh inputs/sweeps/tiny-cpu.ini inputs/allocations/local-cpu.ini -- --set data.train=...
#
# Run it from the folder the runs' relative paths refer to (the checkout): finemoe-sweep writes
# <output>/params/*.ini, <output>/manifest.txt, slurm.env and setup.sh (the allocation's module
# lines), and the jobs start there. Invalid or duplicate points stop it before anything is
# submitted. Account, partition, QoS, nodes, ranks, GPUs, cores, memory, time limit, signal
# warning, launcher and throttle come from the allocation file. Re-submitting a sweep reuses its
# completed runs (their tasks end at once) and resumes interrupted ones from their checkpoints.
# Output: <output>/logs/<array id>_<index>-<name>.out and analyze-<id>.out.
# Prints: `array <id>` and `analysis <id>` lines (last two lines of stdout).
set -euo pipefail

say() { echo "submit: $*"; }
die() { echo "submit: error: $*" >&2; exit 1; }
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }

build=build
throttle=""
analysis=1
dry=0
positional=()
expand_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="${2:?--build needs a folder}"; shift 2 ;;
    --throttle) throttle="${2:?--throttle needs a number}"; shift 2 ;;
    --no-analysis) analysis=0; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; expand_args=("$@"); break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -eq 2 ] || { usage >&2; die "expected SWEEP.ini and ALLOCATION.ini"; }
sweep_file="${positional[0]}"
alloc_file="${positional[1]}"
[ -f "$sweep_file" ] || die "sweep definition '$sweep_file' not found"
[ -f "$alloc_file" ] || die "allocation file '$alloc_file' not found"
home=$(cd "$(dirname "$0")/.." && pwd)
for f in slurm/sweep.sbatch slurm/train.sbatch slurm/analyze.sbatch; do
  [ -f "$home/$f" ] || die "$home/$f not found"
done
build=$(cd "$build" 2>/dev/null && pwd) || die "build folder '$build' not found"
for b in finemoe-sweep finemoe-train finemoe-analyze; do
  [ -x "$build/bin/$b" ] || die "$build/bin/$b not found; build it: cmake --build $build --target $b"
done
if [ "$dry" = 0 ]; then
  command -v sbatch >/dev/null || die "sbatch not found (is this a Slurm login node? is SLURM_CONF set?)"
fi

# The output folder and manifest: --output / --manifest among the expand options, else the sweep's.
output=""
manifest=""
for ((i = 0; i < ${#expand_args[@]}; i++)); do
  case "${expand_args[$i]}" in
    --output) output="${expand_args[$((i + 1))]:-}" ;;
    --output=*) output="${expand_args[$i]#--output=}" ;;
    --manifest) manifest="${expand_args[$((i + 1))]:-}" ;;
    --manifest=*) manifest="${expand_args[$i]#--manifest=}" ;;
  esac
done
if [ -z "$output" ]; then
  output=$(awk '/^[[:space:]]*\[/ {sec=$0; gsub(/[][[:space:]]/, "", sec)}
                sec == "sweep" && $1 == "output" {sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*([#;].*)?$/, ""); print}' "$sweep_file")
fi

# Expand: validates every point, writes parameter files, manifest, slurm.env and setup.sh.
# Every point is checked before any file is written. A dry run writes nothing of the sweep's: it
# expands into a scratch folder and prints the paths a submission would use.
if [ "$dry" = 1 ]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  kept=()
  for ((i = 0; i < ${#expand_args[@]}; i++)); do
    case "${expand_args[$i]}" in
      --params-dir|--manifest) i=$((i + 1)) ;;
      --params-dir=*|--manifest=*) ;;
      *) kept+=("${expand_args[$i]}") ;;
    esac
  done
  expand_args=(${kept[@]+"${kept[@]}"} --params-dir "$scratch/params" --manifest "$scratch/manifest.txt")
fi
"$build/bin/finemoe-sweep" expand "$sweep_file" --allocation "$alloc_file" ${expand_args[@]+"${expand_args[@]}"} \
  || die "the sweep is invalid (above); nothing was submitted"
if [ "$dry" = 1 ]; then env_file="$scratch/slurm.env"; else env_file="$(dirname "${manifest:-$output/manifest.txt}")/slurm.env"; fi
[ -f "$env_file" ] || die "$env_file was not written by finemoe-sweep"
# shellcheck disable=SC1090
source "$env_file"
[ "${FINEMOE_RUNS:-0}" -gt 0 ] || die "the sweep has no runs"
throttle="${throttle:-$FINEMOE_ARRAY_THROTTLE}"

common=()
[ -n "$FINEMOE_ACCOUNT" ] && common+=("--account=$FINEMOE_ACCOUNT")
[ -n "$FINEMOE_PARTITION" ] && common+=("--partition=$FINEMOE_PARTITION")
[ -n "$FINEMOE_QOS" ] && common+=("--qos=$FINEMOE_QOS")
[ -n "$FINEMOE_CONSTRAINT" ] && common+=("--constraint=$FINEMOE_CONSTRAINT")
if [ "$dry" = 1 ]; then  # the paths of a real submission, not the scratch folder's
  FINEMOE_MANIFEST=$(realpath -m "${manifest:-$output/manifest.txt}")
else
  export FINEMOE_HOME="$home" FINEMOE_BUILD="$build" FINEMOE_SETUP FINEMOE_LAUNCHER FINEMOE_SRUN_MPI
  mkdir -p "$output/logs"
fi

array="0-$((FINEMOE_RUNS - 1))"
[ -n "$throttle" ] && [ "$throttle" -gt 0 ] && array="$array%$throttle"
run_opts=("${common[@]}" "--job-name=$FINEMOE_SWEEP_NAME" "--array=$array"
  "--nodes=$FINEMOE_NODES_PER_RUN" "--ntasks=$FINEMOE_RANKS_PER_RUN" "--ntasks-per-node=$FINEMOE_RANKS_PER_NODE"
  "--cpus-per-task=$FINEMOE_CPUS_PER_RANK" "--time=$FINEMOE_TIME_LIMIT"
  "--signal=B:USR1@$FINEMOE_SIGNAL_WARNING_S" --requeue --open-mode=append
  "--output=$output/logs/%A_%a-$FINEMOE_SWEEP_NAME.out" --export=ALL)
if [ "$FINEMOE_GPUS_PER_NODE" -gt 0 ]; then
  run_opts+=("--gpus-per-node=$FINEMOE_RANKS_PER_NODE")
fi
if [ "$FINEMOE_MEM_PER_NODE_MB" -gt 0 ]; then run_opts+=("--mem=$FINEMOE_MEM_PER_NODE_MB"); else run_opts+=("--mem=0"); fi

say "sweep $FINEMOE_SWEEP_NAME: $FINEMOE_RUNS runs of $FINEMOE_RANKS_PER_RUN ranks on $FINEMOE_NODES_PER_RUN node(s), array $array, allocation $FINEMOE_ALLOCATION; estimated $FINEMOE_EST_NODE_HOURS node-hours (longest run $FINEMOE_EST_MAX_RUN_HOURS h)"
if [ "$dry" = 1 ]; then
  echo "sbatch --parsable ${run_opts[*]} $home/slurm/sweep.sbatch $FINEMOE_MANIFEST"
  [ "$analysis" = 1 ] && echo "sbatch --parsable ${common[*]} --dependency=afterany:<array> --kill-on-invalid-dep=yes --time=$FINEMOE_ANALYSIS_TIME_LIMIT --output=$output/logs/analyze-%j.out $home/slurm/analyze.sbatch $FINEMOE_MANIFEST"
  exit 0
fi

array_id=$(sbatch --parsable "${run_opts[@]}" "$home/slurm/sweep.sbatch" "$FINEMOE_MANIFEST") \
  || die "sbatch of the sweep array failed"
array_id="${array_id%%;*}"
say "submitted array job $array_id ($FINEMOE_RUNS tasks); logs in $output/logs"
analysis_id=""
if [ "$analysis" = 1 ]; then
  analysis_id=$(sbatch --parsable "${common[@]}" "--job-name=$FINEMOE_SWEEP_NAME-analyze" \
      "--dependency=afterany:$array_id" --kill-on-invalid-dep=yes --ntasks=1 \
      "--cpus-per-task=$FINEMOE_CPUS_PER_RANK" "--time=$FINEMOE_ANALYSIS_TIME_LIMIT" --export=ALL \
      "--output=$output/logs/analyze-%j.out" "$home/slurm/analyze.sbatch" "$FINEMOE_MANIFEST") \
    || die "sbatch of the analysis job failed (the array $array_id is submitted; cancel it with scancel $array_id or submit analyze.sbatch by hand)"
  analysis_id="${analysis_id%%;*}"
  say "submitted analysis job $analysis_id (after array $array_id); results in $output/analysis"
fi
echo "array $array_id"
[ -n "$analysis_id" ] && echo "analysis $analysis_id"
exit 0
