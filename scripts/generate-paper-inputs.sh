#!/usr/bin/env bash
# Writes inputs/paper/<shape>-<ffn>.ini: one parameter file per paper shape (64x3M .. 64x85M) and
# FFN (dense, G1 .. G16) at 16B tokens, from inputs/sweeps/paper-e64.ini, with expert_parallel 1 so
# each validates (and dry-runs) on one rank; set it on the command line for real runs:
#   srun -n 8 build/bin/finemoe-train inputs/paper/64x25M-G8.ini --parallel.expert_parallel=8
#
#   scripts/generate-paper-inputs.sh [--build DIR] [--check]
#
# --check: write to a temporary folder and fail (exit 1) when the committed files differ, e.g.
# after the sweep or the base changed (the test suite runs this).
set -euo pipefail
build=build
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="${2:?--build needs a folder}"; shift 2 ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "generate-paper-inputs: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
sweep="$build/bin/finemoe-sweep"
[ -x "$sweep" ] || { echo "generate-paper-inputs: $sweep not found; build it: cmake --build $build --target finemoe-sweep" >&2; exit 1; }
[ -f inputs/sweeps/paper-e64.ini ] || { echo "generate-paper-inputs: inputs/sweeps/paper-e64.ini is missing" >&2; exit 1; }

out=inputs/paper
if [ "$check" = 1 ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
"$sweep" expand inputs/sweeps/paper-e64.ini --select tokens=D16B --name-format '{shape}-{ffn}' \
  --set parallel.expert_parallel=1 --params-dir "$out" --manifest none --no-data-check --force --quiet
if [ "$check" = 1 ]; then
  status=0
  for f in "$out"/*.ini; do
    name=$(basename "$f")
    if ! cmp -s "$f" "inputs/paper/$name"; then
      echo "generate-paper-inputs: inputs/paper/$name is missing or out of date; run scripts/generate-paper-inputs.sh" >&2
      status=1
    fi
  done
  [ "$status" = 0 ] && echo "generate-paper-inputs: inputs/paper/ matches inputs/sweeps/paper-e64.ini"
  exit "$status"
fi
echo "generate-paper-inputs: wrote $(find "$out" -maxdepth 1 -name '64x*.ini' | wc -l) files in $out"
