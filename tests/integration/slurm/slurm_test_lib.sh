# Shared by the Slurm integration tests (sourced). Starts a private single-node Slurm with
# scripts/local-slurm.sh under a temporary folder and stops it (by pid) on any exit; skips (exit
# 77, ctest SKIP_RETURN_CODE) only when Slurm cannot be installed or started here.
# Arguments of the test scripts: SOURCE_DIR BUILD_DIR.
# shellcheck shell=bash
set -euo pipefail

src_dir=$(cd "${1:?usage: $0 SOURCE_DIR BUILD_DIR}" && pwd)
build_dir=$(cd "${2:?usage: $0 SOURCE_DIR BUILD_DIR}" && pwd)
test_name=$(basename "$0" .sh)
work=$(mktemp -d "/tmp/finemoe-$test_name.XXXXXX")
chmod 755 "$work"
slurm_dir="$work/slurm"
t0=$(date +%s)

log() { echo "[$test_name +$(( $(date +%s) - t0 ))s] $*"; }
fail() { echo "[$test_name] FAIL: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
    squeue -h -o '%i' 2>/dev/null | while read -r id; do scancel "$id" 2>/dev/null || true; done
  fi
  "$src_dir/scripts/local-slurm.sh" stop "$slurm_dir" >/dev/null 2>&1 || true
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ]; then
    rm -rf "$work"
  else
    log "kept $work for inspection (slurm logs in $slurm_dir/log)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for b in finemoe-train finemoe-prep finemoe-sweep finemoe-analyze; do
  [ -x "$build_dir/bin/$b" ] || fail "$build_dir/bin/$b not built"
done

start_slurm() {
  local rc=0 out
  out=$("$src_dir/scripts/local-slurm.sh" start "$slurm_dir" 2>&1) || rc=$?
  if [ "$rc" -eq 3 ]; then
    echo "$out"
    echo "[$test_name] SKIPPED: Slurm cannot be installed or started on this machine (see above)"
    exit 77
  fi
  [ "$rc" -eq 0 ] || { echo "$out" >&2; fail "scripts/local-slurm.sh start failed"; }
  export SLURM_CONF="$slurm_dir/slurm.conf"
  log "local Slurm up ($(sinfo -h -o '%P %D %T' | head -n 1))"
}

# Byte-level shards from text every Debian system has (licenses), written by finemoe-prep.
make_data() {
  "$build_dir/bin/finemoe-prep" --out "$work/data" --val-fraction 0.1 --block-bytes 8192 \
    /usr/share/common-licenses >/dev/null || fail "finemoe-prep failed"
}

# Waits until none of the given jobs is pending or running (bounded by $1 seconds).
wait_jobs() {
  local limit="$1" start left
  shift
  start=$(date +%s)
  while true; do
    left=$(squeue -h -j "$(IFS=,; echo "$*")" -o '%i %T' 2>/dev/null || true)
    [ -z "$left" ] && return 0
    [ $(( $(date +%s) - start )) -lt "$limit" ] || { echo "$left" >&2; fail "jobs $* still queued after ${limit}s"; }
    sleep 1
  done
}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
