#!/usr/bin/env bash
# Runs every run of a sweep manifest on this machine, one after the other, without Slurm:
#
#   scripts/run-sweep.sh MANIFEST [--launcher "mpirun -np {ranks} --oversubscribe"] [--build DIR]
#
# MANIFEST comes from `finemoe-sweep expand` (lines: index name params output_dir ranks ...).
# A run whose record is completed is reused; an interrupted one resumes from its checkpoint.
# Prints one line per run with its config, its progress while it trains, and an ETA for the
# sweep from the FLOPs still to do and the FLOP rate seen so far. Each run's output is kept in
# <output_dir>/train.log. Exits non-zero when a run fails (the others are still attempted).
set -uo pipefail

die() { echo "run-sweep: error: $*" >&2; exit 2; }

manifest=""
launcher="mpirun -np {ranks} --oversubscribe"
build=build
while [ $# -gt 0 ]; do
  case "$1" in
    --launcher) launcher="${2:?--launcher needs a command}"; shift 2 ;;
    --build) build="${2:?--build needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

done_flops=0      # FLOPs of the runs trained by this invocation
left_flops=$total_flops
seconds=0
failed=0
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
  eta="?"
  if awk -v d="$done_flops" 'BEGIN {exit !(d > 0)}'; then
    eta=$(fmt_time "$(awk -v l="$left_flops" -v d="$done_flops" -v s="$seconds" 'BEGIN {printf "%d", l * s / d}')")
  fi
  echo "$prefix $config, N $n_total, D $tokens (sweep ETA $eta)"
  mkdir -p "$outdir"
  resume=()
  [ -d "$outdir/checkpoints" ] && resume=(--resume)
  read -r -a launch <<<"${launcher//\{ranks\}/$ranks}"
  start=$(date +%s.%N)
  # The trainer prints a progress line per log interval; show the latest in place on a terminal.
  "${launch[@]}" "$train" "$params" "${resume[@]}" 2>&1 | tee "$outdir/train.log" | while IFS= read -r out; do
    case "$out" in
      *"] step "*) if [ "$tty" = 1 ]; then printf '\r    %s\033[K' "${out#*] }"; fi ;;
      *error*|*fatal*) printf '\n    %s\n' "$out" ;;
    esac
  done
  status=${PIPESTATUS[0]}
  [ "$tty" = 1 ] && printf '\r\033[K'
  elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.3f", e - s}')
  if [ "$status" -ne 0 ]; then
    echo "    FAILED (exit $status) after ${elapsed}s: see $outdir/train.log"
    failed=$((failed + 1))
    continue
  fi
  summary=$(grep -E '^done:' "$outdir/train.log" | tail -n 1)
  echo "    ${summary#done: } (${elapsed}s)"
  seconds=$(awk -v s="$seconds" -v e="$elapsed" 'BEGIN {printf "%.3f", s + e}')
  done_flops=$(awk -v d="$done_flops" -v f="$flops" 'BEGIN {printf "%.6g", d + f}')
  left_flops=$(awk -v l="$left_flops" -v f="$flops" 'BEGIN {printf "%.6g", l - f}')
done

if [ "$failed" -gt 0 ]; then
  echo "run-sweep: $failed of $total runs failed"
  exit 1
fi
echo "run-sweep: all $total runs completed ($(fmt_time "${seconds%.*}") of training in this invocation)"
