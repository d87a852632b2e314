#!/usr/bin/env bash
# Installs the Debian packages finemoe needs to build and test, only those that are missing.
# Used by scripts/test.sh and scripts/run-demo.sh; safe to run again. Needs root (or sudo).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  openmpi-bin libopenmpi-dev            # MPI
  libhdf5-dev hdf5-tools                # run records (C API), h5dump
  libboost-program-options-dev          # parameter files
  libopenblas-dev                       # CBLAS
  libgtest-dev libgmock-dev             # tests
  libceres-dev                          # scaling-law fits (finemoe-analyze)
  zlib1g-dev                            # checkpoint checksums
  slurm-wlm munge                       # the local Slurm of the batch-script tests
  shellcheck                            # the batch scripts are checked
  python3                               # scripts
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "[install-deps] all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "[install-deps] missing packages (${missing[*]}) and no root/sudo" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
echo "[install-deps] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "[install-deps] done"
