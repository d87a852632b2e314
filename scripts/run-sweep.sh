#!/usr/bin/env bash
# Runs every run of a sweep manifest on this machine, without Slurm:
#
#   scripts/run-sweep.sh MANIFEST [--jobs J] [--launcher "mpirun -np {ranks} --oversubscribe"] [--build DIR]
#
# MANIFEST comes from `finemoe-sweep expand` (lines: index name params output_dir ranks ...).
# A run whose record is completed is reused; an interrupted one resumes from its checkpoint.
# Prints one line per run with its config, its progress while it trains (one job at a time on a
# terminal), and an ETA for the sweep from the FLOPs still to do and the FLOP rate seen so far.
# --jobs J trains J runs at once, each rank with cores / (J x ranks) threads (at least 1; an
# OMP_NUM_THREADS in the environment wins): tiny models keep 2 single-thread runs busier than one
# run on 2 threads. Each run's output is kept in <output_dir>/train.log. Exits non-zero when a run
# fails (the others are still attempted).
set -uo pipefail

die() { echo "run-sweep: error: $*" >&2; exit 2; }

manifest=""
launcher="mpirun -np {ranks} --oversubscribe"
build=build
jobs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --launcher) launcher="${2:?--launcher needs a command}"; shift 2 ;;
    --build) build="${2:?--build needs a folder}"; shift 2 ;;
    --jobs) jobs="${2:?--jobs needs a count}"; shift 2
            [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs takes a positive whole number, not '$jobs'" ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$manifest" ] || die "one manifest only"; manifest="$1"; shift ;;
  esac
done
[ -n "$manifest" ] || die "usage: scripts/run-sweep.sh MANIFEST (see --help)"
[ -f "$manifest" ] || die "manifest '$manifest' not found"
train="$build/bin/finemoe-train"
sweep="$build/bin/finemoe-sweep"
[ -x "$train" ] || die "$train not found: build first (scripts/build.sh)"
[ -x "$sweep" ] || die "$sweep not found: build first (scripts/build.sh)"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
tty=0
[ -t 1 ] && tty=1

fmt_time() { local s=${1%.*}; if [ "$s" -ge 3600 ]; then printf '%dh%02dm' $((s/3600)) $((s%3600/60));
  elif [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s/60)) $((s%60)); else printf '%ds' "$s"; fi; }

mapfile -t runs < <(awk '$1 !~ /^#/ && NF >= 10' "$manifest")
total=${#runs[@]}
[ "$total" -gt 0 ] || die "$manifest lists no runs"
total_flops=$(printf '%s\n' "${runs[@]}" | awk '{s += $10} END {printf "%.6g", s}')
echo "run-sweep: $total runs from $manifest, $total_flops model FLOPs in all"

cores=$(nproc)
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
done_flops=0      # FLOPs of the runs trained by this invocation
left_flops=$total_flops
failed=0
first_start=""
finished=()
# Folds the results of finished runs (a file per run: FLOPs, seconds, exit status) into the totals.
collect() {
  local f flops elapsed status
  for f in "$results"/*; do
    [ -e "$f" ] || continue
    read -r flops elapsed status <"$f"
    rm -f "$f"
    if [ "$status" -ne 0 ]; then
      failed=$((failed + 1))
    else
      done_flops=$(awk -v d="$done_flops" -v f="$flops" 'BEGIN {printf "%.6g", d + f}')
    fi
    finished+=("$elapsed")
  done
}

# Trains one run; writes "FLOPs seconds status" to $results/<index> when it ends.
train_run() {
  local i=$1 name=$2 params=$3 outdir=$4 ranks=$5 flops=$6 prefix=$7
  local threads=$(( cores / (jobs * ranks) ))
  [ "$threads" -ge 1 ] || threads=1
  mkdir -p "$outdir"
  local resume=()
  [ -d "$outdir/checkpoints" ] && resume=(--resume)
  local launch
  read -r -a launch <<<"${launcher//\{ranks\}/$ranks}"
  local start
  start=$(date +%s.%N)
  # The trainer prints a progress line per log interval; show the latest in place on a terminal.
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} "${launch[@]}" "$train" "$params" "${resume[@]}" 2>&1 |
    tee "$outdir/train.log" | while IFS= read -r out; do
    case "$out" in
      *"] step "*) if [ "$tty" = 1 ] && [ "$jobs" = 1 ]; then printf '\r    %s\033[K' "${out#*] }"; fi ;;
      *error*|*fatal*) printf '\n    %s: %s\n' "$name" "$out" ;;
    esac
  done
  local status=${PIPESTATUS[0]}
  [ "$tty" = 1 ] && [ "$jobs" = 1 ] && printf '\r\033[K'
  local elapsed
  elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.3f", e - s}')
  if [ "$status" -ne 0 ]; then
    echo "    $name: FAILED (exit $status) after ${elapsed}s: see $outdir/train.log"
  else
    local summary
    summary=$(grep -E '^done:' "$outdir/train.log" | tail -n 1)
    if [ "$jobs" = 1 ]; then echo "    ${summary#done: } (${elapsed}s)"; else echo "    $name: ${summary#done: } (${elapsed}s)"; fi
  fi
  echo "$flops $elapsed $status" >"$results/$i.tmp" && mv "$results/$i.tmp" "$results/$i"
}

i=0
for line in "${runs[@]}"; do
  i=$((i + 1))
  read -r _ name params outdir ranks _ n_total _ tokens flops _ <<<"$line"
  config=$(awk -F' *= *' '/^\[/{s=substr($0,2,length($0)-2)} s=="model"&&$1=="d_model"{d=$2} s=="model"&&$1=="n_blocks"{b=$2}
    s=="moe"&&$1=="enabled"{m=$2} s=="moe"&&$1=="granularity"{g=$2} s=="moe"&&$1=="expansion_rate"{e=$2}
    END{printf "d_model %s, blocks %s, %s", d, b, (m=="false" ? "dense" : "E " e " G " g)}' "$params")
  prefix=$(printf '[%d/%d] %-18s' "$i" "$total" "$name")
  if "$sweep" status --record "$outdir/record.h5" --quiet >/dev/null 2>&1; then
    echo "$prefix reused (completed record): $config, N $n_total, D $tokens"
    left_flops=$(awk -v l="$left_flops" -v f="$flops" 'BEGIN {printf "%.6g", l - f}')
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n 2>/dev/null || true; done
  collect
  eta="?"
  if awk -v d="$done_flops" 'BEGIN {exit !(d > 0)}'; then
    # the FLOPs not yet finished at the rate seen since the first run started (wall clock: jobs overlap)
    wall=$(awk -v s="$first_start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.3f", e - s}')
    eta=$(fmt_time "$(awk -v l="$left_flops" -v d="$done_flops" -v s="$wall" 'BEGIN {printf "%d", (l - d) * s / d}')")
  fi
  echo "$prefix $config, N $n_total, D $tokens (sweep ETA $eta)"
  [ -n "$first_start" ] || first_start=$(date +%s.%N)
  if [ "$jobs" = 1 ]; then
    train_run "$i" "$name" "$params" "$outdir" "$ranks" "$flops" "$prefix"
  else
    train_run "$i" "$name" "$params" "$outdir" "$ranks" "$flops" "$prefix" &
  fi
  collect
done
wait
collect
seconds=0
for e in "${finished[@]+"${finished[@]}"}"; do seconds=$(awk -v s="$seconds" -v e="$e" 'BEGIN {printf "%.3f", s + e}'); done
wall=0
[ -n "$first_start" ] && wall=$(awk -v s="$first_start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.3f", e - s}')

if [ "$failed" -gt 0 ]; then
  echo "run-sweep: $failed of $total runs failed"
  exit 1
fi
echo "run-sweep: all $total runs completed ($(fmt_time "${wall%.*}") of wall clock, $(fmt_time "${seconds%.*}") of run time in this invocation, $jobs at a time)"
