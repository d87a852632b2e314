#!/usr/bin/env bash
# Regenerates tests/reference/reference_state.h5 in two steps (README.md): finemoe writes its
# initial state (configurations, tokens, initial weights), then PyTorch computes the reference
# from it. Needs python3 with torch, h5py and numpy (PYTHON overrides the interpreter).
# By default only the cases the file lacks are added (existing groups stay byte-identical);
# REFERENCE_REWRITE=1 rewrites the whole file.
#   usage: tests/reference/regenerate.sh [BUILD_DIR]   (default: build; configured if it is not)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${1:-$root/build}"
[ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" -DFINEMOE_CUDA=OFF
cmake --build "$build" --target finemoe_reference_initial_state finemoe_reference_test -j2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$build/tests/finemoe_reference_initial_state" "$tmp/initial_state.h5"
mode=(--add-missing)
[ "${REFERENCE_REWRITE:-0}" = 1 ] && mode=()
"${PYTHON:-python3}" "$here/reference.py" "${mode[@]}" "$tmp/initial_state.h5" "$here/reference_state.h5"
echo "wrote $here/reference_state.h5 ($(stat -c %s "$here/reference_state.h5") bytes); check it with" \
     "$build/tests/finemoe_reference_test"
