#!/usr/bin/env bash
# local-slurm.sh: a real single-node Slurm on this machine, for tests and for trying the batch
# scripts in slurm/ without a cluster. Everything (configuration, munge key and socket, state,
# spool, pid and log files) lives in one folder; nothing under /etc or /var is touched.
#
#   scripts/local-slurm.sh start  [DIR]   start munged, slurmctld and slurmd; print the env line
#   scripts/local-slurm.sh stop   [DIR]   stop the daemons by their pid files (always succeeds)
#   scripts/local-slurm.sh status [DIR]   daemons alive? sinfo
#   scripts/local-slurm.sh env    [DIR]   print `export SLURM_CONF=DIR/slurm.conf`
#
# DIR defaults to $FINEMOE_SLURM_DIR or /tmp/finemoe-slurm. After `start`, every client command
# (sbatch, squeue, scontrol, scancel, srun) needs `export SLURM_CONF=DIR/slurm.conf` (`eval
# "$(scripts/local-slurm.sh env DIR)"`). Installs slurm-wlm and munge with apt-get when they are
# missing (root or sudo). Needs root: slurmd runs jobs as their user and SlurmUser is root, as on
# a CI machine (see ../shared/hpc-notes.md). Ports are picked free at start, so two instances in
# different folders do not collide. Exit codes: 0 ok, 1 failure, 3 Slurm cannot be installed or
# started here (the tests turn 3 into a skip).
set -euo pipefail

cmd="${1:-}"
dir="${2:-${FINEMOE_SLURM_DIR:-/tmp/finemoe-slurm}}"

say() { echo "local-slurm: $*"; }
cannot() { echo "local-slurm: cannot run Slurm here: $*" >&2; exit 3; }
die() { echo "local-slurm: error: $*" >&2; exit 1; }

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stops one daemon by its pid file: TERM, wait up to 10 s, then KILL.
stop_pid() {
  local name="$1" pidfile="$2" pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      [ "$i" = 100 ] && { say "$name ($pid) ignored TERM; killing"; kill -KILL "$pid" 2>/dev/null || true; }
      sleep 0.1
    done
    say "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
}

stop_all() {
  # slurmd first (it may have job steps), then the controller, then munge.
  stop_pid slurmd "$dir/run/slurmd.pid"
  stop_pid slurmctld "$dir/run/slurmctld.pid"
  stop_pid munged "$dir/munge/munged.pid"
}

ensure_packages() {
  local missing=() p
  for p in slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || cannot "packages ${missing[*]} missing and no apt-get"
  local sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || cannot "packages ${missing[*]} missing and no root or sudo"
    sudo_cmd=(sudo)
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q >/dev/null || cannot "apt-get update failed"
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || cannot "apt-get install ${missing[*]} failed"
}

# A TCP port nobody listens on (from a range that avoids the defaults 6817/6818).
free_port() {
  local port
  for port in $(shuf -i 20000-39999 -n 50); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  die "no free TCP port found"
}

start() {
  [ "$(id -u)" -eq 0 ] || cannot "needs root (slurmd with SlurmUser=root); run it in a root container or CI"
  ensure_packages
  local p
  for p in /usr/sbin/munged /usr/sbin/mungekey /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch; do
    [ -x "$p" ] || cannot "$p is missing after installing slurm-wlm and munge"
  done
  id munge >/dev/null 2>&1 || cannot "no 'munge' user (the munge package creates it)"
  if pid_alive "$dir/run/slurmctld.pid"; then
    say "already running in $dir"
    return 0
  fi
  stop_all >/dev/null 2>&1 || true

  mkdir -p "$dir"
  chmod 755 "$dir"   # munged (as munge) must reach its folder inside
  dir=$(cd "$dir" && pwd -P)
  rm -rf "$dir/state" "$dir/spool" "$dir/run" "$dir/log" "$dir/munge"
  mkdir -p "$dir/state" "$dir/spool" "$dir/run" "$dir/log" "$dir/munge/key"
  chmod 755 "$dir/munge"      # the socket's folder: everyone must reach the socket
  chmod 700 "$dir/munge/key"  # the key's folder: munge alone

  # munge: our own key and socket, run as the munge user (munged refuses root).
  mungekey --create --keyfile="$dir/munge/key/munge.key" >/dev/null 2>&1 \
    || die "mungekey --create failed"
  chown -R munge:munge "$dir/munge"
  chmod 600 "$dir/munge/key/munge.key"
  local socket="$dir/munge/munge.socket.2"
  if ! runuser -u munge -- /usr/sbin/munged --socket="$socket" --key-file="$dir/munge/key/munge.key" \
      --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
      --seed-file="$dir/munge/munged.seed" --num-threads=2; then
    cat "$dir/munge/munged.log" >&2 2>/dev/null || true
    stop_all
    cannot "munged did not start (log above)"
  fi

  # Node line from the hardware slurmd sees, memory lowered to 90% (otherwise slurmd finds less
  # than configured and the node drains).
  local node_line host mem
  node_line=$(slurmd -C | head -n 1) || { stop_all; cannot "slurmd -C failed"; }
  host=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node_line")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
  if [ -z "$host" ] || [ -z "$mem" ]; then stop_all; die "cannot parse 'slurmd -C': $node_line"; fi
  node_line=${node_line/RealMemory=$mem/RealMemory=$((mem * 9 / 10))}

  local ctld_port slurmd_port
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

  cat >"$dir/slurm.conf" <<EOF
# Written by scripts/local-slurm.sh: single-node Slurm for tests, everything under $dir.
ClusterName=finemoe-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmdDebug=info
SlurmctldDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=pmix
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MinJobAge=600
KillWait=30
DefMemPerCPU=2048
$node_line State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

  export SLURM_CONF="$dir/slurm.conf"
  if ! slurmctld -f "$SLURM_CONF"; then
    tail -n 20 "$dir/log/slurmctld.log" >&2 2>/dev/null || true
    stop_all
    die "slurmctld did not start (log above)"
  fi
  if ! slurmd -f "$SLURM_CONF"; then
    tail -n 20 "$dir/log/slurmd.log" >&2 2>/dev/null || true
    stop_all
    die "slurmd did not start (log above)"
  fi

  # Ready when the node is idle (usually well under a second).
  local state="" i
  for i in $(seq 1 150); do
    state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)
    [ "$state" = "idle" ] && break
    sleep 0.2
  done
  if [ "$state" != "idle" ]; then
    tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 2>/dev/null || true
    stop_all
    die "node $host is '$state', not idle, after 30 s (logs above)"
  fi
  say "running in $dir (node $host, ports $ctld_port/$slurmd_port)"
  echo "export SLURM_CONF=$dir/slurm.conf"
}

status() {
  local p name rc=0
  for p in munge/munged.pid run/slurmctld.pid run/slurmd.pid; do
    name=$(basename "$p" .pid)
    if pid_alive "$dir/$p"; then say "$name running (pid $(cat "$dir/$p"))"; else say "$name not running"; rc=1; fi
  done
  if [ "$rc" = 0 ]; then SLURM_CONF="$dir/slurm.conf" sinfo; fi
  return "$rc"
}

case "$cmd" in
  start) start ;;
  stop) stop_all ;;
  status) status ;;
  env) echo "export SLURM_CONF=$dir/slurm.conf" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
