#!/usr/bin/env bash
# The main job, on one machine from a fresh Debian 12 clone: a scaling-law study in miniature.
#   1. installs what is missing and builds (Release);
#   2. prepares the default corpus (Debian's python3-doc text as byte-level shards);
#   3. expands inputs/sweeps/demo.ini (3 model sizes x dense and G = 1, 2, 4 x 3 token budgets,
#      E = 8, 2 MPI ranks with expert-parallel size 2) and trains every run, reusing completed
#      ones, so running the script again resumes the sweep;
#   4. fits L(N, D, G) with finemoe-analyze, prints the coefficients beside the paper's, whether
#      the runs identify the law (and which runs would), dense against MoE row by row, the
#      compute-optimal configurations for a few budgets (marked as an extrapolation when the law
#      is not identified: docs/analysis.md), and writes the plots.
# Extra arguments go to cmake's configure step (scripts/build.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
out=runs/demo
analysis=$out/analysis

echo "[demo] step 1/5: packages"
"$root/scripts/install-deps.sh"

echo "[demo] step 2/5: build"
"$root/scripts/build.sh" "$@"

echo "[demo] step 3/5: corpus"
"$root/scripts/prepare-corpus.sh" --out data/corpus --build build

echo "[demo] step 4/5: sweep (inputs/sweeps/demo.ini)"
sweep_start=$(date +%s)
build/bin/finemoe-sweep expand inputs/sweeps/demo.ini --allocation inputs/allocations/local-cpu.ini
"$root/scripts/run-sweep.sh" "$out/manifest.txt" --jobs 2

echo "[demo] step 5/5: analysis"
build/bin/finemoe-analyze fit "$out"/*/record.h5 --out "$analysis"
build/bin/finemoe-analyze optimal --fit "$analysis/fit.h5" --budgets 1e12,1e13,1e14 --min-tokens 10000 \
  --out "$analysis"
python3 "$root/scripts/demo-summary.py" "$analysis"

echo
echo "[demo] sweep and analysis took $(( $(date +%s) - sweep_start )) s; everything $(( $(date +%s) - start )) s"
echo "[demo] records: $out/<run>/record.h5 (h5dump -H; docs/run-record.md); logs: $out/<run>/train.log"
echo "[demo] fit:     $analysis/fit.h5, fit.csv, fit_runs.csv; optimum: $analysis/optimal.*"
echo "[demo] plots:   $analysis/*.svg"
