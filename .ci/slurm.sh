#!/usr/bin/env bash
# A real one-node Slurm cluster for the Slurm runtime's tests: munge, slurmctld and slurmd on
# this machine, two fake GPUs as GRES (character devices, so CUDA_VISIBLE_DEVICES works).
# Idempotent: when `sinfo` already shows the node up, it does nothing.
# Usage: source .ci/slurm.sh   (or run it; returns non-zero when the cluster did not come up)
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
slurm_log() { printf '\033[1m[walnut slurm]\033[0m %s\n' "$*"; }
NODE="$(hostname -s)"
SLURM_DIR="${WALNUT_SLURM_DIR:-/var/lib/walnut-slurm}"

slurm_up() {
  timeout 10 sinfo -h -n "$NODE" -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'
}

if command -v sinfo >/dev/null && slurm_up; then
  slurm_log "Slurm is up (node $NODE)"
else
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    slurm_log "installing slurm-wlm and munge"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  # munge: one key for the cluster, its daemon running as the munge user
  if [ ! -s /etc/munge/munge.key ]; then
    $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  $SUDO chown munge:munge /etc/munge/munge.key
  $SUDO chmod 400 /etc/munge/munge.key
  $SUDO mkdir -p /run/munge && $SUDO chown munge:munge /run/munge
  if ! pgrep -u munge -x munged >/dev/null; then
    $SUDO su -s /bin/sh munge -c /usr/sbin/munged
  fi
  # two character devices stand in for GPUs
  for i in 0 1; do [ -e "/dev/fakegpu$i" ] || $SUDO mknod "/dev/fakegpu$i" c 1 3; done
  $SUDO mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool" /etc/slurm
  # the node's socket/core layout and memory as slurmd detects them (else state INVAL)
  layout="$(slurmd -C | head -1 | grep -oE 'CPUs=[0-9]+ Boards=[0-9]+ SocketsPerBoard=[0-9]+ CoresPerSocket=[0-9]+ ThreadsPerCore=[0-9]+')"
  memory="$(slurmd -C | head -1 | grep -oE 'RealMemory=[0-9]+' | cut -d= -f2)"
  $SUDO tee /etc/slurm/slurm.conf >/dev/null <<CONF
ClusterName=walnut
SlurmctldHost=$NODE
SlurmUser=root
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=300
KillWait=5
NodeName=$NODE $layout RealMemory=$((memory * 3 / 4)) Gres=gpu:fake:2 State=UNKNOWN
PartitionName=walnut Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
  echo "NodeName=$NODE Name=gpu Type=fake File=/dev/fakegpu[0-1]" | $SUDO tee /etc/slurm/gres.conf >/dev/null
  pgrep -x slurmctld >/dev/null || $SUDO slurmctld
  pgrep -x slurmd >/dev/null || $SUDO slurmd
  for _ in $(seq 1 60); do
    slurm_up && break
    sleep 0.5
  done
  if ! slurm_up; then
    $SUDO scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do slurm_up && break; sleep 0.5; done
  fi
  if slurm_up; then
    slurm_log "Slurm is up (node $NODE, partition walnut, gpu:fake:2)"
  else
    slurm_log "error: Slurm did not come up; see $SLURM_DIR/slurmctld.log and slurmd.log"
    sinfo -N -l 2>&1 || true
    return 1 2>/dev/null || exit 1
  fi
fi
