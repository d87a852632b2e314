#!/usr/bin/env bash
# finemoe vs the PyTorch peer (bench/reference) on the same model, threads and machine:
#   1. installs torch from PyPI when missing (bench/reference/install.sh),
#   2. checks the peer's loss against finemoe's on finemoe's exported weights (check_loss.py),
#   3. times a training step of each, alternating (finemoe, peer) x ROUNDS so a change of load hits
#      both, and prints the ratio of tokens/s (medians).
# usage: scripts/bench-vs-pytorch.sh [BUILD_DIR] [-- model options, e.g. --d-model 512 --G 4]
# env: THREADS (default: all cores), RANKS (finemoe ranks, default 1; the peer is one process with
#      THREADS threads, finemoe RANKS ranks x THREADS/RANKS threads), REPS (5), ROUNDS (3),
#      MAX_LOAD (wait, up to WAIT_S seconds, for a 1-minute load below it; default 1.5 / 600),
#      BASELINE_BUILD (optional: a second finemoe build, e.g. of an older commit, timed in the same
#      rounds, so a change's effect and both ratios come from one alternating run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-bench"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then build="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
model_opts=("$@")
threads="${THREADS:-$(nproc)}"
ranks="${RANKS:-1}"
reps="${REPS:-5}"
rounds="${ROUNDS:-3}"
py="${PYTHON:-python3}"
# Each side runs with its own best threading settings: passive OpenMP waits for finemoe (its
# OpenMP expert loop alternates with OpenBLAS's pthreads: 2020 vs 1490 tok/s active), PyTorch's
# defaults for the peer (its OpenMP spins between ops: passive cost it 15-30%, bench/RESULTS.md).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# OpenBLAS's idle pthreads spin (sched_yield) for 2^28 cycles after each threaded call by default,
# stealing a core from the OpenMP expert loop that follows; 4 = sleep almost at once (RESULTS.md).
export OPENBLAS_THREAD_TIMEOUT="${OPENBLAS_THREAD_TIMEOUT:-4}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

bench="$build/bin/finemoe-bench"
if [ ! -x "$bench" ]; then
  [ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" -DFINEMOE_CUDA=OFF
  cmake --build "$build" -j2 --target finemoe-bench
fi
"$root/bench/reference/install.sh"

wait_quiet() {
  local max="${MAX_LOAD:-1.5}" waited=0 limit="${WAIT_S:-600}"
  while awk -v m="$max" '{exit !($1 >= m)}' /proc/loadavg && [ "$waited" -lt "$limit" ]; do
    sleep 15; waited=$((waited + 15))
  done
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)$(awk -v m="$max" '$1 >= m {print "  (above " m ": provisional)"}' /proc/loadavg)"
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "== loss check on finemoe's weights (init_scale 1 so routing matters)"
"$bench" export --out "$tmp/export" --init-scale 1 "${model_opts[@]}" --batch 16
(cd "$root/bench/reference" && "$py" check_loss.py "$tmp/export")

echo "== training step, $threads threads, finemoe $ranks rank(s); $rounds rounds alternating"
baseline="${BASELINE_BUILD:-}"
run_finemoe() {  # [finemoe-bench binary]
  local b="${1:-$bench}"
  if [ "$ranks" -gt 1 ]; then
    mpiexec -n "$ranks" --oversubscribe --bind-to none "$b" step --json --reps "$reps" \
      --threads $((threads / ranks)) "${model_opts[@]}"
  else
    "$b" step --json --reps "$reps" --threads "$threads" "${model_opts[@]}"
  fi
}
for r in $(seq "$rounds"); do
  wait_quiet
  [ -n "$baseline" ] && run_finemoe "$baseline/bin/finemoe-bench" | tail -1 > "$tmp/baseline.$r.json"
  run_finemoe | tail -1 > "$tmp/finemoe.$r.json"
  (cd "$root/bench/reference" && env -u OMP_WAIT_POLICY -u OPENBLAS_THREAD_TIMEOUT "$py" bench_step.py --json --reps "$reps" --threads "$threads" "${model_opts[@]}") \
    | tail -1 > "$tmp/torch.$r.json"
done
"$py" - "$tmp" "$rounds" "$baseline" <<'PY'
import json, statistics, sys
d, rounds, baseline = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fm = [json.load(open(f"{d}/finemoe.{r}.json")) for r in range(1, rounds + 1)]
pt = [json.load(open(f"{d}/torch.{r}.json")) for r in range(1, rounds + 1)]
for r, (a, b) in enumerate(zip(fm, pt), 1):
    print(f"round {r}: finemoe {a['tokens_per_s']:8.0f} tok/s (load {a['load_before']:.2f})   "
          f"pytorch {b['tokens_per_s']:8.0f} tok/s (load {b['load_before']:.2f})   ratio {a['tokens_per_s'] / b['tokens_per_s']:.2f}")
f, p = statistics.median(x["tokens_per_s"] for x in fm), statistics.median(x["tokens_per_s"] for x in pt)
loads = [x["load_before"] for x in fm + pt]
print(f"finemoe {f:.0f} tokens/s, pytorch {p:.0f} tokens/s (torch {pt[0]['torch']}): ratio {f / p:.2f}x "
      f"(target >= 1.5x); model/dense GEMM rate {statistics.median(x['model_vs_dense'] for x in fm):.3f} "
      f"(target >= 0.5); load {min(loads):.2f}..{max(loads):.2f}")
if baseline:
    bl = [json.load(open(f"{d}/baseline.{r}.json")) for r in range(1, rounds + 1)]
    per = [a["tokens_per_s"] / c["tokens_per_s"] for a, c in zip(fm, bl)]
    vs = [c["tokens_per_s"] / b["tokens_per_s"] for c, b in zip(bl, pt)]
    print(f"baseline {baseline}: {statistics.median(x['tokens_per_s'] for x in bl):.0f} tokens/s, ratio to pytorch "
          f"{statistics.median(vs):.2f}x (per round {', '.join(f'{x:.2f}' for x in vs)}); finemoe / baseline "
          f"{statistics.median(per):.3f} (per round {', '.join(f'{x:.3f}' for x in per)})")
PY
