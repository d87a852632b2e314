#!/usr/bin/env bash
# All GPU checks in one command on a one-GPU node (docs/cuda.md), in stages that each report as they
# end and go on where they can:
#   1 pre-flight   nvidia-smi, driver and runtime versions, a 1 GiB cudaMalloc, a bf16 cuBLAS GEMM
#   2 kernels      every CUDA kernel and cuBLAS wrapper against its CPU reference, the NCCL communicator
#   3 step         the fp32 step against the CPU (routing compared exactly), the bf16-storage step
#                  against the CPU's, device residency and host waits, the expert-choice micro-batch
#                  captured as a CUDA graph
#   7 cudnn        (runs after 3, also with --quick) libcudnn's presence and version; cuDNN's fused
#                  attention against the cuBLAS path (kernel and whole step); SKIP without cuDNN
#   4 shared GPU   2 ranks sharing the GPU through the host-staged MPI path against 1 rank
#   5 bf16         bf16 against fp32 over 200 steps
#   6 throughput   the GPU benchmarks (gpu-peak, gpu-expert-gemm, gpu-ffn-epilogue: cuBLASLt's fused GELU
#                  epilogue vs the separate pass, gpu-alltoall), MFU of the h100-100m model at G 1 and 8 and the PyTorch peer
#                  (skipped with a message where the image's Python lacks torch)
#   scripts/gpu-check.sh [--quick] [RESULTS_DIR]   --quick: stages 1-3 and 7 only. Uses the prebuilt bundle
#       in $FINEMOE_GPU_BUNDLE (default .gpu-bundle) when it has binaries, else builds here. Writes
#       summary.txt (a line per stage, as each ends), gpu-check.log and results.tar.gz (stage logs and
#       JSON) into RESULTS_DIR (default $OUT when set, else bench/results/gpu-<UTC time>).
#   scripts/gpu-check.sh --bundle [DIR]   (a CPU machine with the CUDA toolkit and scripts/install-deps.sh's
#       packages) build the GPU binaries for sm_90 ($FINEMOE_CUDA_ARCHS) and gather the runtime .debs
#       they need on an image without MPI, HDF5, Boost or OpenBLAS into DIR (default .gpu-bundle),
#       about 22 MiB of .debs plus the stripped binaries; carry DIR to the GPU node.
#   scripts/gpu-check.sh --prepare DIR   download the .deb files to BUILD on such an image instead
#       (about 50 MiB, -dev packages included).
# Dependencies on the GPU node, first that applies ($FINEMOE_GPU_DEPS = auto (default), system, apt or
# debs forces one): already installed; apt-get works; the .deb files of the bundle or of
# $FINEMOE_GPU_DEBS (default .gpu-debs), unpacked under $FINEMOE_DEPS_ROOT (default /tmp/finemoe-deps),
# never over /, and relocated there. NCCL: the toolkit's, $NCCL_ROOT, or the PyTorch environment's.
# Exit status: 0 every stage ran and passed on a GPU; 3 no GPU (nothing verified); 1 a stage failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# What the GPU build needs beyond a compiler, CMake and the CUDA toolkit. No Ceres: the GPU build
# leaves finemoe-analyze out (-DFINEMOE_ANALYSIS=OFF).
packages=(openmpi-bin libopenmpi-dev libhdf5-dev libboost-program-options-dev libopenblas-dev libgtest-dev
          libgmock-dev zlib1g-dev pkg-config)
# Present on any image with a compiler; unpacking Debian's copies beside them would shadow them.
base_regex='^(libc6|libc6-dev|libc-bin|libc-dev-bin|linux-libc-dev|libgcc-s1|libstdc\+\+6|libstdc\+\+-[0-9]+-dev|gcc(-[0-9]+)?(-base)?|g\+\+(-[0-9]+)?|cpp(-[0-9]+)?|libgcc-[0-9]+-dev|binutils.*|libbinutils|libctf.*|libgprofng.*|libsframe.*|perl.*|libperl.*|debconf.*|dpkg.*|tar|coreutils|bash|dash|sensible-utils|install-info|lib(a|l|t|ub|hwa|itm|quadmath|gomp|cc1-)san[0-9]*|libasan[0-9]+|liblsan[0-9]+|libtsan[0-9]+|libubsan[0-9]+|libhwasan[0-9]+|libitm[0-9]+|libquadmath[0-9]+|libgomp[0-9]+|libatomic[0-9]+|libcc1-[0-9]+|libisl[0-9]+|libmpc[0-9]+|libmpfr[0-9]+|libgmp10|libcrypt1|libcrypt-dev|libnsl.*|libtirpc.*|rpcsvc-proto|make|patch|xz-utils)$'
# Needed by the packages above but not to build or run the GPU checks: compilers (Fortran), autotools,
# documentation scripts, ssh (multi-node launch), account tools, X11 and hwloc's plugins (loaded
# when present), and what only those need.
skip_regex='^(gfortran.*|libgfortran-[0-9]+-dev|autoconf|automake|autotools-dev|libtool|libltdl-dev|m4|libjs-.*|openssh-client|passwd|login|adduser|debianutils|libpam.*|libsemanage.*|libsepol.*|libaudit.*|libcap-ng0|libdb5\.3|libedit2|libfido2-1|libcbor.*|libmd0|libbsd0|libgdbm.*|libicu[0-9]+|libxml2|libhwloc-plugins|libx11-.*|libxau.*|libxcb.*|libxdmcp.*|libxext.*|libxnvctrl.*|libpciaccess.*|ocl-icd-libopencl1)$'

# What the prebuilt binaries need at run time (the bundle's .debs).
runtime_packages=(openmpi-bin libopenmpi3 libhdf5-103-1 libboost-program-options1.74.0 libopenblas0-pthread zlib1g)

log() { echo "[gpu-check] $*"; }

# download_closure DIR PACKAGE...: the install closure as apt resolves it on an empty system (first
# alternatives only), without what any image has (base_regex) and what the checks do not use (skip_regex).
download_closure() {
  local dir=$1 status
  shift
  mkdir -p "$dir"
  status=$(mktemp)
  mapfile -t closure < <(apt-get -s -q -o Dir::State::Status="$status" -o Debug::NoLocking=1 install \
      --no-install-recommends "$@" | awk '/^Inst /{print $2}' | sort -u |
      grep -Ev "$base_regex" | grep -Ev "$skip_regex")
  rm -f "$status"
  [ ${#closure[@]} -gt 0 ] || { log "apt-get resolved no packages (apt lists missing? run apt-get update)" >&2; exit 1; }
  rm -f "$dir"/*.deb
  log "downloading ${#closure[@]} packages into $dir"
  (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "${closure[@]}" >/dev/null)
  files=("$dir"/*.deb)
  log "${#files[@]} files, $(( $(cat "${files[@]}" | wc -c) / 1048576 )) MiB in $dir"
}

if [ "${1:-}" = "--prepare" ]; then
  dir=${2:?usage: scripts/gpu-check.sh --prepare DIR}
  download_closure "$dir" "${packages[@]}"
  log "carry $dir and set FINEMOE_GPU_DEBS (with the working tree it must stay under the 64 MiB the device tool carries)"
  exit 0
fi

if [ "${1:-}" = "--bundle" ]; then
  dir=${2:-$root/.gpu-bundle}
  export PATH=$PATH:/usr/local/cuda/bin
  command -v nvcc >/dev/null || { log "--bundle needs the CUDA toolkit (nvcc)" >&2; exit 1; }
  build=${FINEMOE_GPU_BUILD_DIR:-$root/build-gpu}
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFINEMOE_CUDA=ON -DFINEMOE_ANALYSIS=OFF \
      -DCMAKE_CUDA_ARCHITECTURES="${FINEMOE_CUDA_ARCHS:-90}" > /dev/null
  mapfile -t targets < <(cmake --build "$build" --target help | grep -oE 'finemoe_gpu_[A-Za-z0-9_]+' | sort -u)
  targets+=(finemoe-bench finemoe-train)
  # cuDNN's attention is compiled in where cudnn-frontend's headers are (scripts/install-deps.sh);
  # libcudnn itself is never carried: the GPU image's is loaded at run time.
  frontend=$(sed -n 's/^FINEMOE_CUDNN_FRONTEND_INCLUDE:[A-Z]*=//p' "$build/CMakeCache.txt")
  case "$frontend" in
    ""|*NOTFOUND) log "cuDNN attention: NOT built (no cudnn-frontend headers: pip install nvidia-cudnn-frontend)" ;;
    *) log "cuDNN attention: built with cudnn-frontend from $frontend" ;;
  esac
  log "building ${targets[*]} for sm_${FINEMOE_CUDA_ARCHS:-90}"
  cmake --build "$build" -j "${FINEMOE_BUILD_JOBS:-$(nproc)}" --target "${targets[@]}"
  rm -rf "${dir:?}/bin" "${dir:?}/tests"
  mkdir -p "$dir/bin" "$dir/tests"
  cp "$build/bin/finemoe-bench" "$build/bin/finemoe-train" "$dir/bin/"
  cp "$build"/tests/finemoe_gpu_* "$dir/tests/"
  strip "$dir"/bin/* "$dir"/tests/*
  download_closure "$dir/debs" "${runtime_packages[@]}"
  log "bundle $dir: $(du -sm "$dir" | cut -f1) MiB (with the working tree it must stay under 64 MiB); commit $(git -C "$root" rev-parse --short HEAD)"
  git -C "$root" rev-parse HEAD > "$dir/commit"
  exit 0
fi

quick=0 results=""
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) results=$a ;;
  esac
done
results=${results:-${OUT:-$root/bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}}
mkdir -p "$results"
results=$(cd "$results" && pwd)
exec > >(tee -a "$results/gpu-check.log") 2>&1  # a few files only: the device tool returns at most 8
log "$(date -u +%FT%TZ), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown), results in $results"

export PATH=$PATH:/usr/local/cuda/bin
command -v nvcc >/dev/null || { log "no nvcc (CUDA toolkit) on PATH or in /usr/local/cuda/bin" >&2; exit 1; }
command -v cmake >/dev/null || { log "no cmake" >&2; exit 1; }
has_gpu=0
if nvidia-smi -L 2>/dev/null | grep -q GPU; then
  has_gpu=1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
else
  log "nvidia-smi lists no GPU: the tests will report themselves skipped, the benchmarks refuse"
fi
bundle=${FINEMOE_GPU_BUNDLE:-$root/.gpu-bundle}
prebuilt=0
[ -x "$bundle/bin/finemoe-bench" ] && prebuilt=1
if [ $prebuilt -eq 1 ]; then
  log "prebuilt bundle $bundle (commit $(cat "$bundle/commit" 2>/dev/null || echo unknown); this tree $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown))"
else
  log "no prebuilt bundle in $bundle: building here; $(nvcc --version | tail -1); $(cmake --version | head -1)"
fi

cmake_args=(-DCMAKE_BUILD_TYPE=Release -DFINEMOE_CUDA=ON -DFINEMOE_ANALYSIS=OFF)
[ -n "${FINEMOE_CUDA_ARCHS:-}" ] && cmake_args+=(-DCMAKE_CUDA_ARCHITECTURES="$FINEMOE_CUDA_ARCHS")
have_deps() {
  if [ $prebuilt -eq 1 ]; then  # run-time libraries only
    command -v mpiexec >/dev/null && ldconfig -p | grep -q libhdf5_serial.so.103 &&
      ldconfig -p | grep -q libboost_program_options.so.1.74 && ldconfig -p | grep -q libopenblas.so.0
    return
  fi
  command -v mpicxx >/dev/null && { [ -e /usr/include/H5public.h ] || [ -d /usr/include/hdf5 ]; } &&
    [ -e /usr/include/boost/program_options.hpp ] && [ -d /usr/include/gtest ] &&
    { [ -e /usr/include/cblas.h ] || compgen -G '/usr/include/*/cblas.h' >/dev/null ||
      compgen -G '/usr/include/*/*/cblas.h' >/dev/null; }
}
debs=${FINEMOE_GPU_DEBS:-$root/.gpu-debs}
[ $prebuilt -eq 1 ] && debs=${FINEMOE_GPU_DEBS:-$bundle/debs}
deps=${FINEMOE_GPU_DEPS:-auto}
if [ "$deps" = auto ]; then
  if have_deps; then deps=system
  elif [ -d "$debs" ]; then deps=debs
  elif [ "$(id -u)" -eq 0 ] && timeout 60 apt-get update -q >/dev/null 2>&1; then deps=apt
  else
    log "MPI, HDF5, Boost, OpenBLAS or GoogleTest missing, apt-get does not work and $debs does not exist;" \
        "prepare it on a Debian 12 machine: scripts/gpu-check.sh --prepare .gpu-debs" >&2
    exit 1
  fi
fi
prefix=/usr
case "$deps" in
  system) log "dependencies: installed under /usr" ;;
  apt)
    log "dependencies: installing with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}" ;;
  debs)
    R=${FINEMOE_DEPS_ROOT:-/tmp/finemoe-deps}
    prefix=$R/usr
    lib=$R/usr/lib/x86_64-linux-gnu
    debfiles=("$debs"/*.deb)
    [ -e "${debfiles[0]}" ] || { log "no .deb files in $debs" >&2; exit 1; }
    stamp=$(printf '%s\n' "${debfiles[@]##*/}" | md5sum | cut -c1-32)
    if [ -f "$R/.finemoe-debs" ] && [ "$(cat "$R/.finemoe-debs")" = "$stamp" ]; then
      log "dependencies: ${#debfiles[@]} carried packages already unpacked under $R"
    else
      log "dependencies: unpacking ${#debfiles[@]} carried packages from $debs under $R"
      rm -rf "$R" && mkdir -p "$R"
      for f in "${debfiles[@]}"; do
        if command -v dpkg-deb >/dev/null; then
          dpkg-deb -x "$f" "$R"
        else  # a .deb is an ar archive; its files are in data.tar.*
          m=$(ar t "$f" | grep '^data\.tar')
          case "$m" in *.xz) z=-J ;; *.zst) z=--zstd ;; *.gz) z=-z ;; *) z= ;; esac
          ar p "$f" "$m" | tar -x $z -C "$R"
        fi
      done
      # Absolute symlinks point into /: redirect them into the tree.
      find "$R" -type l -lname '/*' | while read -r l; do ln -sfn "$R$(readlink "$l")" "$l"; done
      # What update-alternatives would have made (dpkg -x runs no maintainer scripts).
      for n in mpicc mpicxx mpic++ mpiCC mpiexec mpirun; do
        [ -e "$R/usr/bin/$n.openmpi" ] && ln -sfn "$n.openmpi" "$R/usr/bin/$n"
      done
      if [ -d "$R/usr/include" ]; then  # the -dev packages (--prepare), not the bundle's run-time ones
        ln -sfn x86_64-linux-gnu/openblas-pthread/cblas.h "$R/usr/include/cblas.h"
        ln -sfn openblas-pthread/libopenblas.so "$lib/libopenblas.so"
      fi
      # Hard-coded /usr in pkg-config files and HDF5's compiler wrappers: point them into the tree.
      find "$R" -name '*.pc' -type f -exec sed -i -e "s|=/usr/|=$R/usr/|; s|=/usr\$|=$R/usr|" \
          -e "s| -I/usr/| -I$R/usr/|g; s| -L/usr/| -L$R/usr/|g" {} +
      for w in h5cc h5c++; do
        [ -f "$R/usr/bin/$w" ] && sed -i "s|^prefix=\"/usr\"|prefix=\"$R/usr\"|" "$R/usr/bin/$w"
      done
      echo "$stamp" > "$R/.finemoe-debs"
    fi
    export PATH=$R/usr/bin:$PATH
    export LD_LIBRARY_PATH=$lib:$lib/openmpi/lib:$lib/hdf5/serial:$lib/openblas-pthread:${LD_LIBRARY_PATH:-}
    export LIBRARY_PATH=$lib:$lib/openmpi/lib${LIBRARY_PATH:+:$LIBRARY_PATH}  # the linker: indirect needs
    export OPAL_PREFIX=$R/usr  # OpenMPI's relocation: wrappers, mpiexec and plugins under $R
    export PMIX_INSTALL_PREFIX=$lib/pmix2  # PMIx's (its help files)
    export OMPI_MCA_mtl=${OMPI_MCA_mtl:-^psm}  # libpsm_infinipath sits behind an alternative: not unpacked
    export PKG_CONFIG_LIBDIR=$lib/openblas-pthread/pkgconfig:$lib/pkgconfig:$R/usr/share/pkgconfig
    export CMAKE_PREFIX_PATH=$R/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
    cmake_args+=(-DMPI_CXX_COMPILER="$R/usr/bin/mpicxx" -DMPIEXEC_EXECUTABLE="$R/usr/bin/mpiexec"
                 -DHDF5_C_COMPILER_EXECUTABLE="$R/usr/bin/h5cc" -DHDF5_ROOT="$lib/hdf5/serial"
                 -DBoost_ROOT="$R/usr" -DBoost_NO_SYSTEM_PATHS=ON -DGTest_ROOT="$R/usr"
                 -DPKG_CONFIG_EXECUTABLE="$R/usr/bin/pkgconf") ;;
  *) log "FINEMOE_GPU_DEPS=$deps: expected auto, system, apt or debs" >&2; exit 2 ;;
esac

# NCCL: the CUDA toolkit's or $NCCL_ROOT (cmake/FindNCCL.cmake), else the PyTorch environment's wheel
# (nvidia-nccl-cu*: include/nccl.h and lib/libnccl.so.2, no unversioned libnccl.so).
cuda_home=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
if [ -z "${NCCL_ROOT:-}" ] && [ ! -e "$cuda_home/include/nccl.h" ] && [ ! -e /usr/include/nccl.h ]; then
  wheel=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
  ncclso=
  if [ -n "$wheel" ]; then
    for f in "$wheel"/lib/libnccl.so*; do [ -e "$f" ] && ncclso=$f && break; done
  fi
  if [ -n "$wheel" ] && [ -e "$wheel/include/nccl.h" ] && [ -n "$ncclso" ]; then
    log "NCCL: the Python environment's, $wheel"
    cmake_args+=(-DNCCL_INCLUDE_DIR="$wheel/include" -DNCCL_LIBRARY="$ncclso")
    export LD_LIBRARY_PATH=$wheel/lib:${LD_LIBRARY_PATH:-}
  else
    log "no NCCL: not in $cuda_home, /usr/include or the Python environment (set NCCL_ROOT)" >&2
    exit 1
  fi
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export LD_LIBRARY_PATH=$cuda_home/lib64:${LD_LIBRARY_PATH:-}

# cuDNN for the fused attention. The binaries hold cudnn-frontend (headers, compiled in) and load
# libcudnn.so.9 at run time, so neither the bundle nor --prepare carries cuDNN (about 1 GB): it is
# taken from the image, first the loader's path (the toolkit's lib64 above), then the Python
# environment's nvidia-cudnn-cu13 (or -cu12) wheel. Without it the runs take the cuBLAS attention
# and the cuDNN checks report SKIP.
cudnn_lib=
for f in "$cuda_home"/lib64/libcudnn.so.9 /usr/lib/x86_64-linux-gnu/libcudnn.so.9; do
  [ -e "$f" ] && cudnn_lib=$f && break
done
if [ -z "$cudnn_lib" ]; then
  for wheel in nvidia-cudnn-cu13 nvidia-cudnn-cu12; do
    dir=$(python3 -c "import importlib.metadata as m; print(m.distribution('$wheel').locate_file('nvidia/cudnn/lib'))" \
          2>/dev/null || true)
    if [ -n "$dir" ] && [ -e "$dir/libcudnn.so.9" ]; then
      cudnn_lib=$dir/libcudnn.so.9
      export LD_LIBRARY_PATH=$dir:$LD_LIBRARY_PATH  # its sub-libraries (graph, engines) sit beside it
      break
    fi
  done
fi
if [ -n "$cudnn_lib" ]; then
  export FINEMOE_CUDNN_LIBRARY=$cudnn_lib
  log "cuDNN: $cudnn_lib"
else
  log "cuDNN: no libcudnn.so.9 in $cuda_home/lib64, the system or the Python environment: cuBLAS attention only"
fi
if [ $prebuilt -eq 1 ]; then
  build=$bundle
  mpiexec=$(command -v mpiexec)
else
  build=${FINEMOE_GPU_BUILD_DIR:-$root/build-gpu}
  jobs=${FINEMOE_BUILD_JOBS:-$(nproc)}
  cmake -S "$root" -B "$build" "${cmake_args[@]}" > "$results/cmake-configure.txt" 2>&1 ||
    { cat "$results/cmake-configure.txt"; log "cmake configure FAILED" >&2; exit 1; }
  cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt" | head -1; }
  log "dependencies from $prefix: MPI $(cache MPI_CXX_COMPILER) ($(cache MPI_mpi_LIBRARY)), mpiexec $(cache MPIEXEC_EXECUTABLE)"
  log "  HDF5 $(cache HDF5_C_INCLUDE_DIR) $(cache HDF5_hdf5_LIBRARY_RELEASE); Boost $(cache Boost_DIR) $(cache Boost_INCLUDE_DIR)"
  log "  GTest $(cache GTest_DIR); OpenBLAS $(cache pkgcfg_lib_OPENBLAS_openblas)$(cache BLAS_LIBRARIES); NCCL $(cache NCCL_LIBRARY)"
  log "  CUDA $cuda_home, archs ${FINEMOE_CUDA_ARCHS:-80;90 (default)}, cuBLAS $(cache CUDA_cublas_LIBRARY)"
  # Only what the GPU checks need: the GPU test binaries (finemoe_gpu_*), finemoe-bench and finemoe-train.
  mapfile -t targets < <(cmake --build "$build" --target help | grep -oE 'finemoe_gpu_[A-Za-z0-9_]+' | sort -u)
  targets+=(finemoe-bench finemoe-train)
  log "building ${targets[*]} with $jobs jobs"
  start=$(date +%s)
  cmake --build "$build" -j "$jobs" --target "${targets[@]}" > "$results/build.txt" 2>&1 ||
    { tail -50 "$results/build.txt"; log "build FAILED (log: $results/build.txt)" >&2; exit 1; }
  log "built in $(( $(date +%s) - start )) s"
  rm -f "$results/build.txt"  # kept only on failure: few files come back from the device
  mpiexec=$(cache MPIEXEC_EXECUTABLE)
fi

# The stages. Each writes its log into $logs, adds a line to summary.txt when it ends, and the
# tarball is rewritten then, so whatever ran comes back even if a later stage hangs.
logs=$results/logs
mkdir -p "$logs"
summary=$results/summary.txt
: > "$summary"
failed=() skipped_all=1
pack() { tar -czf "$results/results.tar.gz" -C "$results" logs; }
# shellcheck source=scripts/gpu-check-report.sh
. "$root/scripts/gpu-check-report.sh"
# stage N NAME COMMAND...: PASS, PASS with the skipped cases named, SKIP (nothing ran: no CUDA
# device, no cuDNN, no torch) or FAIL (stage_verdict).
stage() {
  local n=$1 name=$2 t0 rc=0 verdict
  shift 2
  t0=$(date +%s)
  log "stage $n: $name"
  "$@" > "$logs/stage$n-$name.log" 2>&1 || rc=$?
  verdict=$(stage_verdict "$logs/stage$n-$name.log" $rc)
  case "$verdict" in
    SKIP) ;;
    FAIL*) failed+=("$n $name"); skipped_all=0 ;;
    *) skipped_all=0 ;;
  esac
  grep -E "^\[preflight\]|GPU vs CPU|host waits|captured|ranks on one GPU|bf16 vs fp32|MFU|tokens/s|peak|cuDNN|fused" \
    "$logs/stage$n-$name.log" | head -20 | sed 's/^/    /' || true
  printf '%s  stage %d %-12s %4d s  %s\n' "$(date -u +%T)" "$n" "$name" $(( $(date +%s) - t0 )) "$verdict" | tee -a "$summary"
  pack
}

gpu_tests() {  # every kernel test binary, then the NCCL communicator under mpiexec
  local rc=0 t
  for t in "$build"/tests/finemoe_gpu_*; do
    case "$t" in *model_test|*nccl_test) continue ;; esac
    echo "== $t"
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$t" || rc=1
  done
  echo "== $build/tests/finemoe_gpu_nccl_test"
  "$mpiexec" -n 1 "$build/tests/finemoe_gpu_nccl_test" || rc=1
  return $rc
}
model_test() {  # ranks filter
  "$mpiexec" -n "$1" --oversubscribe "$build/tests/finemoe_gpu_model_test" --gtest_filter="$2"
}
cudnn_check() {  # libcudnn's presence and version, then the fused attention against the cuBLAS path
  if [ -n "$cudnn_lib" ]; then
    python3 - "$cudnn_lib" <<'PY' || echo "cuDNN: $cudnn_lib does not load"
import ctypes, sys
v = ctypes.CDLL(sys.argv[1]).cudnnGetVersion()
print(f"cuDNN: {sys.argv[1]} version {v // 10000}.{v // 100 % 100}.{v % 100}")
PY
  else
    echo "cuDNN: libcudnn.so.9 not found on this image"
  fi
  local rc=0
  OMP_NUM_THREADS=1 "$build/tests/finemoe_gpu_kernels_test" --gtest_filter='FusedAttentionTest.*' || rc=1
  model_test 1 GpuModel.FusedAttentionStepMatchesCublas || rc=1
  model_test 1 GpuModel.FusedAttentionAtContextOne || rc=1
  return $rc
}
throughput() {
  local rc=0 run
  for run in gpu-peak gpu-expert-gemm gpu-ffn-epilogue gpu-alltoall; do
    "$mpiexec" -n 1 "$build/bin/finemoe-bench" "$run" --json-out "$logs/$run.json" || rc=$?
    [ $rc -eq 3 ] && return 3
  done
  if ! python3 -c 'import torch' 2>/dev/null; then
    echo "no torch in this image's Python: the PyTorch comparison is skipped"
  fi
  MPIEXEC="$mpiexec" "$root/scripts/bench-vs-pytorch-gpu.sh" "$build" "$logs" || rc=1
  return $rc
}

stage 1 preflight "$mpiexec" -n 1 "$build/bin/finemoe-bench" gpu-preflight
stage 2 kernels gpu_tests
stage 3 step model_test 1 "GpuModel.OneStepMatchesCpu:GpuModel.Bf16StorageMatchesCpu:GpuModel.Bf16OperandsMatchCpuAndRoundingInsideCublas:GpuModel.DeviceResidency:GpuModel.ExpertChoiceCaptures:GpuModel.CapturedStepMatchesUncapturedBitForBit:GpuModel.StepGraphCaptureLetsOtherThreadsCallCuda"
stage 7 cudnn cudnn_check
if [ $quick -eq 0 ]; then
  stage 4 shared-gpu model_test 2 GpuModel.SharedGpuLayouts
  stage 5 bf16 model_test 1 GpuModel.Bf16FollowsFp32
  stage 6 throughput throughput
fi
rm -rf "$logs"  # in the tarball: few files come back from the device

if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED stages: ${failed[*]} (their logs are in $results/results.tar.gz)" >&2
  exit 1
fi
if [ $has_gpu -eq 0 ] || [ $skipped_all -eq 1 ]; then
  log "no GPU: the stages were skipped; nothing was verified" >&2
  exit 3
fi
log "all stages passed; $summary"
