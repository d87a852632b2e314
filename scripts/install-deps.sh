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
  python3-pip                           # cudnn-frontend's headers (below)
)

# cudnn-frontend's header-only C++ graph API, for cuDNN's fused attention in CUDA builds: the
# nvidia-cudnn-frontend wheel's include/ (CMake finds it through python3), without its Python
# dependencies (--no-deps: only the headers are used). cuDNN itself comes with the CUDA toolkit
# or the nvidia-cudnn-cu13 wheel and is loaded at run time.
install_cudnn_frontend() {
  command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] || return 0
  if python3 -c "import importlib.metadata as m; m.distribution('nvidia-cudnn-frontend')" 2>/dev/null; then
    echo "[install-deps] nvidia-cudnn-frontend present"
    return 0
  fi
  echo "[install-deps] installing nvidia-cudnn-frontend (headers for the cuDNN attention)"
  python3 -m pip install -q --no-deps "nvidia-cudnn-frontend~=1.32.0" ||
    python3 -m pip install -q --no-deps --break-system-packages "nvidia-cudnn-frontend~=1.32.0" ||
    echo "[install-deps] warning: nvidia-cudnn-frontend not installed: CUDA builds use the cuBLAS attention" >&2
}

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "[install-deps] all ${#packages[@]} packages present"
  install_cudnn_frontend
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
install_cudnn_frontend
echo "[install-deps] done"
