#!/usr/bin/env bash
# Smoke test of finemoe-bench (ctest bench_smoke): every subcommand once on tiny sizes; it must
# exit 0 and its --json output must parse. Not a timing test: no figure is checked.
# usage: bench/smoke-test.sh BENCH_BINARY MPIEXEC
set -euo pipefail
b="$1"; mpiexec="${2:-mpiexec}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
mpi=("$mpiexec" -n 2 --oversubscribe)
check_json() {  # file
  if command -v python3 >/dev/null; then python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$1"
  else grep -q '^{' "$1"; fi
}
fast=(--reps 1 --warmup 0)
"$b" expert-gemm --G 1,4 --d-model 64 --tokens 256 "${fast[@]}" --json-out "$tmp/eg.json" && check_json "$tmp/eg.json"
"$b" expert-gemm --G 2 --d-model 64 --tokens 256 --schedule blas --forward-only "${fast[@]}" --json > "$tmp/egb.json" \
  && check_json "$tmp/egb.json"
"${mpi[@]}" "$b" dispatch --rows-per-expert 1,2 --experts 8 --G 2 --d-model 32 "${fast[@]}" --json > "$tmp/d.json" \
  && check_json "$tmp/d.json"
"${mpi[@]}" "$b" moe-layer --G 1,2 --d-model 32 --tokens 128 --context 16 "${fast[@]}" --json > "$tmp/m.json" \
  && check_json "$tmp/m.json"
small=(--d-model 32 --blocks 1 --heads 2 --context 16 --vocab 64 --E 2 --G 2 --batch 8 --group-size 4)
"${mpi[@]}" "$b" step "${small[@]}" --dense-n 256 "${fast[@]}" --json > "$tmp/s.json" && check_json "$tmp/s.json"
"$b" export --out "$tmp/export" "${small[@]}" >/dev/null && check_json "$tmp/export/manifest.json"
"$b" plan --paper 64x1B --nodes 8 > "$tmp/plan.txt" && grep -q "recommended EP" "$tmp/plan.txt"
# Refused before any work (it used to run the full default benchmark first: 190 s of this test).
if timeout 20 "$b" expert-gemm --no-such-option 1 >/dev/null 2>&1; then echo "unknown option accepted"; exit 1; fi
if [ "$(timeout 20 "$b" expert-gemm --no-such-option 1 2>&1 | grep -c 'unknown option --no-such-option')" != 1 ]; then
  echo "unknown option not refused within 20 s"; exit 1
fi
echo "finemoe-bench smoke test: OK"
