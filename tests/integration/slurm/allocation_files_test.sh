#!/usr/bin/env bash
# Every committed allocation file (inputs/allocations/*.ini) parses, expands the tiny sweep with
# `finemoe-sweep expand --allocation FILE --check`, and goes through `slurm/submit.sh --dry-run`:
# the printed sbatch command carries the file's account, partition, QoS, constraint and GPUs, and
# the dry run writes nothing.
# No Slurm needed (the dry run submits nothing). Runtime: ~2 s for 8 files.
#   allocation_files_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src_dir=$(cd "$1" && pwd)
build_dir=$(cd "$2" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$src_dir"
n=0
for alloc in inputs/allocations/*.ini; do
  name=$(basename "$alloc" .ini)
  "$build_dir/bin/finemoe-sweep" expand inputs/sweeps/tiny-cpu.ini --allocation "$alloc" --no-data-check --check -q \
    > "$work/$name.expand" 2>&1 || { cat "$work/$name.expand"; echo "FAIL: $alloc: finemoe-sweep expand"; exit 1; }
  slurm/submit.sh inputs/sweeps/tiny-cpu.ini "$alloc" --build "$build_dir" --dry-run -- \
    --output "$work/$name" --no-data-check > "$work/$name.dry" 2>&1 \
    || { cat "$work/$name.dry"; echo "FAIL: $alloc: submit.sh --dry-run"; exit 1; }
  # A dry run writes nothing: no parameter files, manifest or logs folder.
  [ ! -e "$work/$name" ] || { find "$work/$name" | head; echo "FAIL: $alloc: submit.sh --dry-run wrote files"; exit 1; }
  # The file's own settings must reach the sbatch line.
  value() { awk -F= -v k="$1" '/^\[/ {sec=$0} sec=="[allocation]" && $1 ~ "^"k"[[:space:]]*$" {v=$2; sub(/#.*/, "", v); gsub(/^[[:space:]]+|[[:space:]]+$/, "", v); print v}' "$alloc"; }
  for key in account partition qos constraint; do
    v=$(value "$key")
    if [ -n "$v" ] && ! grep -qF -- "--$key=$v" "$work/$name.dry"; then
      cat "$work/$name.dry"; echo "FAIL: $alloc: --$key=$v not in the sbatch command"; exit 1
    fi
  done
  gpus=$(value gpus_per_node)
  if [ "${gpus:-0}" -gt 0 ] && ! grep -q -- "--gpus-per-node=" "$work/$name.dry"; then
    cat "$work/$name.dry"; echo "FAIL: $alloc: no --gpus-per-node in the sbatch command"; exit 1
  fi
  grep -q "^sbatch --parsable" "$work/$name.dry" || { cat "$work/$name.dry"; echo "FAIL: $alloc: no sbatch line"; exit 1; }
  echo "ok: $alloc"
  n=$((n + 1))
done
[ "$n" -ge 8 ] || { echo "FAIL: expected at least 8 allocation files, found $n"; exit 1; }
echo "all $n allocation files expand and pass the dry run"
