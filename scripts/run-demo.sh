#!/usr/bin/env bash
# The main job on one machine, from a fresh Debian 12 clone: installs what is missing, builds,
# prepares the default corpus (Debian's python3-doc text as byte-level shards) and trains the
# tiny fine-grained MoE of inputs/cpu-tiny.ini on 2 MPI ranks (expert-parallel size 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)

echo "[demo] step 1/4: packages"
"$root/scripts/install-deps.sh"

echo "[demo] step 2/4: build"
"$root/scripts/build.sh" "$@"

echo "[demo] step 3/4: corpus"
"$root/scripts/prepare-corpus.sh" --out data/corpus --build build

echo "[demo] step 4/4: training inputs/cpu-tiny.ini on 2 ranks"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
resume=()
[ -d runs/cpu-tiny/checkpoints ] && resume=(--resume)
mpirun -np 2 --oversubscribe build/bin/finemoe-train inputs/cpu-tiny.ini "${resume[@]}"

echo "[demo] done in $(( $(date +%s) - start )) s; record: runs/cpu-tiny/record.h5 (h5dump -H runs/cpu-tiny/record.h5)"
