#!/usr/bin/env bash
# All GPU checks in one command, on a machine with a CUDA GPU, nvcc and CMake:
#   scripts/gpu-check.sh                build with CUDA in $FINEMOE_GPU_BUILD_DIR (default build-gpu),
#                                       run `ctest -L gpu` and the GPU benchmarks when there are any
#   scripts/gpu-check.sh --prepare DIR  (on Debian 12 with apt; no GPU needed) download the .deb files
#                                       of the build dependencies, with their dependencies, into DIR to
#                                       carry to a GPU image that lacks MPI, HDF5, Boost and a network
# Dependencies on the GPU machine, first that applies: already installed; apt-get works
# (scripts/install-deps.sh); the .deb files in $FINEMOE_GPU_DEBS (default .gpu-debs), unpacked with
# dpkg -x under $FINEMOE_DEPS_ROOT (default /tmp/finemoe-deps), never over /.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# What the build needs beyond a compiler, CMake and the CUDA toolkit (scripts/install-deps.sh).
packages=(openmpi-bin libopenmpi-dev libhdf5-dev libboost-program-options-dev libopenblas-dev libgtest-dev
          libgmock-dev libceres-dev zlib1g-dev pkg-config)
# Present on any image with a compiler; unpacking Debian's copies beside them would shadow them.
base_regex='^(libc6|libc6-dev|libc-bin|libc-dev-bin|linux-libc-dev|libgcc-s1|libstdc\+\+6|libstdc\+\+-[0-9]+-dev|gcc(-[0-9]+)?(-base)?|g\+\+(-[0-9]+)?|cpp(-[0-9]+)?|libgcc-[0-9]+-dev|binutils.*|libbinutils|libctf.*|libgprofng.*|libsframe.*|perl.*|libperl.*|debconf.*|dpkg.*|tar|coreutils|bash|dash|sensible-utils|install-info|lib(a|l|t|ub|hwa|itm|quadmath|gomp|cc1-)san[0-9]*|libasan[0-9]+|liblsan[0-9]+|libtsan[0-9]+|libubsan[0-9]+|libhwasan[0-9]+|libitm[0-9]+|libquadmath[0-9]+|libgomp[0-9]+|libatomic[0-9]+|libcc1-[0-9]+|libisl[0-9]+|libmpc[0-9]+|libmpfr[0-9]+|libgmp10|libcrypt1|libcrypt-dev|libnsl.*|libtirpc.*|rpcsvc-proto|make|patch|xz-utils)$'

if [ "${1:-}" = "--prepare" ]; then
  dir=${2:?usage: scripts/gpu-check.sh --prepare DIR}
  mkdir -p "$dir"
  mapfile -t closure < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances "${packages[@]}" | grep -E '^[a-z0-9]' | sort -u | grep -Ev "$base_regex")
  echo "[gpu-check] downloading ${#closure[@]} packages into $dir"
  # Virtual packages have no file of their own; a real provider is in the closure.
  (cd "$dir" && for p in "${closure[@]}"; do apt-get download -q "$p" >/dev/null 2>&1 || echo "  (no file for $p)"; done)
  echo "[gpu-check] $(ls "$dir"/*.deb | wc -l) files, $(du -sh "$dir" | cut -f1); carry $dir and set FINEMOE_GPU_DEBS"
  exit 0
fi

command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "[gpu-check] no nvcc" >&2; exit 1; }
has_gpu=0
nvidia-smi -L 2>/dev/null | grep -q GPU && has_gpu=1
[ $has_gpu -eq 1 ] || echo "[gpu-check] nvidia-smi lists no GPU: the tests will report themselves skipped"

cmake_args=(-DCMAKE_BUILD_TYPE=Release -DFINEMOE_CUDA=ON)
have_deps() { command -v mpicxx >/dev/null && [ -e /usr/include/H5public.h -o -d /usr/include/hdf5 ] &&
              [ -e /usr/include/boost/program_options.hpp ]; }
debs=${FINEMOE_GPU_DEBS:-$root/.gpu-debs}
if have_deps; then
  echo "[gpu-check] dependencies present"
elif [ "$(id -u)" -eq 0 ] && timeout 60 apt-get update -q >/dev/null 2>&1; then
  "$root/scripts/install-deps.sh"
elif [ -d "$debs" ]; then
  R=${FINEMOE_DEPS_ROOT:-/tmp/finemoe-deps}
  echo "[gpu-check] unpacking $(ls "$debs"/*.deb | wc -l) carried packages under $R"
  mkdir -p "$R"
  for f in "$debs"/*.deb; do dpkg -x "$f" "$R"; done
  # Absolute symlinks point into /; redirect them into the unpacked tree.
  find "$R" -type l -lname '/*' | while read -r l; do ln -sfn "$R$(readlink "$l")" "$l"; done
  lib=$R/usr/lib/x86_64-linux-gnu
  export PATH=$R/usr/bin:$PATH
  export LD_LIBRARY_PATH=$lib:$lib/openmpi/lib:$lib/hdf5/serial:$lib/openblas-pthread:${LD_LIBRARY_PATH:-}
  export OPAL_PREFIX=$R/usr  # OpenMPI's relocation: wrappers, mpiexec and plugins under $R
  export PKG_CONFIG_PATH=$lib/pkgconfig:$R/usr/share/pkgconfig
  export CMAKE_PREFIX_PATH=$R/usr
  cmake_args+=(-DMPI_CXX_COMPILER="$R/usr/bin/mpicxx" -DMPIEXEC_EXECUTABLE="$R/usr/bin/mpiexec"
               -DHDF5_ROOT="$lib/hdf5/serial" -DBoost_ROOT="$R/usr" -DBoost_NO_SYSTEM_PATHS=ON)
else
  echo "[gpu-check] MPI, HDF5 or Boost missing, apt-get does not work and $debs does not exist;" \
       "prepare it on a Debian 12 machine: scripts/gpu-check.sh --prepare .gpu-debs" >&2
  exit 1
fi

build=${FINEMOE_GPU_BUILD_DIR:-$root/build-gpu}
jobs=${FINEMOE_BUILD_JOBS:-$(nproc)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmake -S "$root" -B "$build" "${cmake_args[@]}"
# Only what the GPU checks need: the GPU test binaries and benchmarks (targets named finemoe_gpu_*
# and finemoe_bench_gpu_*).
mapfile -t targets < <(cmake --build "$build" --target help | grep -oE 'finemoe_(gpu|bench_gpu)_[A-Za-z0-9_]+' | sort -u)
echo "[gpu-check] building ${targets[*]}"
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
status=0
(cd "$build" && ctest -L gpu --output-on-failure --timeout 600) || status=1
for bench in "$build"/bin/finemoe_bench_gpu_*; do
  [ -x "$bench" ] || continue
  echo "[gpu-check] $bench"
  "$bench" || status=1
done
if [ $status -ne 0 ]; then
  echo "[gpu-check] GPU checks FAILED" >&2
  exit 1
fi
if [ $has_gpu -eq 0 ]; then  # built and ran, but skipping verifies nothing
  echo "[gpu-check] no GPU: the GPU tests were skipped, nothing was verified" >&2
  exit 3
fi
echo "[gpu-check] all GPU checks passed"
