#!/usr/bin/env bash
# Prepares the default corpus: the reStructuredText sources of the Python documentation that
# Debian's python3-doc installs (about 11 MB of technical English prose in ~500 files), turned
# into byte-level shards by finemoe-prep in data/corpus/{train,val}. See docs/data.md.
#
#   scripts/prepare-corpus.sh [--out DIR] [--build DIR] [--force]
#
# Idempotent: installs python3-doc only when missing and skips the preparation when DIR already
# holds a completed one (--force redoes it).
set -euo pipefail

out=data/corpus
build=build
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --build) build="${2:?--build needs a folder}"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prepare-corpus: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "prepare-corpus: $*"; }
die() { echo "prepare-corpus: error: $*" >&2; exit 1; }

cd "$(dirname "$0")/.."
package=python3-doc
stamp="$out/.prepared"

if [ -f "$stamp" ] && [ "$force" = 0 ]; then
  say "corpus already prepared in $out ($(cat "$stamp")); --force to redo"
  exit 0
fi

prep="$build/bin/finemoe-prep"
[ -x "$prep" ] || die "$prep not found; build it first: cmake -S . -B $build && cmake --build $build -j2 --target finemoe-prep"

if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
  say "$package $(dpkg-query -W -f='${Version}' "$package") is installed"
else
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "$package is missing and installing it needs root or sudo"
    sudo=sudo
  fi
  say "installing $package with apt-get"
  $sudo apt-get update -q || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$package" \
    || die "apt-get install $package failed"
fi

# /usr/share/doc/python3.X/html/_sources; the newest if several versions are installed.
shopt -s nullglob
candidates=(/usr/share/doc/python3*/html/_sources)
[ ${#candidates[@]} -gt 0 ] || die "no /usr/share/doc/python3*/html/_sources after installing $package \
(does a path-exclude in /etc/dpkg/dpkg.cfg.d/ drop /usr/share/doc?)"
sources=$(readlink -f "${candidates[@]}" | sort -uV | tail -n 1)
files=$(find "$sources" -type f | wc -l)
bytes=$(find "$sources" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
say "text: $sources ($files files, $bytes bytes)"

rm -f "$stamp"
say "writing shards to $out"
"$prep" --out "$out" --val-fraction 0.05 --overwrite "$sources"
echo "$package $(dpkg-query -W -f='${Version}' "$package"), $sources" > "$stamp"
say "done: data.train = $out/train, data.val = $out/val"
