#!/usr/bin/env bash
# Configures and builds finemoe in build/ (Release). Extra arguments go to cmake's configure step,
# e.g. scripts/build.sh -DFINEMOE_CUDA=OFF. Binaries land in build/bin/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${FINEMOE_BUILD_DIR:-$root/build}
jobs=${FINEMOE_JOBS:-$(nproc)}
echo "[build] configuring $build_dir"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@"
echo "[build] building with $jobs jobs"
cmake --build "$build_dir" -j "$jobs"
