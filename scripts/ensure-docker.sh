#!/usr/bin/env bash
# Make sure a Docker engine runs here, so clawpen can start agent containers.
#
# For Debian bookworm as root without systemd (developer machines and CI): installs docker.io
# and debootstrap (the local base image needs it) when missing, clears pid files left by a
# killed dockerd, starts dockerd detached from the caller and waits until it answers.
# Idempotent: exits at once when `docker info` already works.
set -euo pipefail

LOG=/var/log/clawpen-dockerd.log
WAIT_SECONDS=60

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  echo "ensure-docker: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

# running NAME: is a process with this command name alive? (/proc only: procps may be absent)
running() {
  local dir
  for dir in /proc/[0-9]*; do
    [[ "$(cat "$dir/comm" 2>/dev/null)" == "$1" ]] || continue
    # a killed daemon can linger as a zombie for a moment: that one runs no more
    grep -q '^State:[[:space:]]*Z' "$dir/status" 2>/dev/null || return 0
  done
  return 1
}

# A dockerd killed without cleanup leaves pid files that make the next one refuse to start.
clear_stale_pidfile() {
  local file=$1 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [[ -z $pid || ! -d /proc/$pid ]]; then
    echo "ensure-docker: removing stale $file"
    rm -f "$file"
  fi
}

start_dockerd() {
  rm -f /var/run/docker.pid
  clear_stale_pidfile /var/run/docker/containerd/containerd.pid
  clear_stale_pidfile /run/containerd/containerd.pid
  echo "ensure-docker: starting dockerd (log: $LOG)"
  # setsid + nohup: the daemon must outlive this script and the shell that called it.
  nohup setsid dockerd >>"$LOG" 2>&1 </dev/null &
}

starts=0
for ((i = 0; i < WAIT_SECONDS; i++)); do
  if docker info >/dev/null 2>&1; then
    echo "ensure-docker: Docker engine is up"
    exit 0
  fi
  if ! running dockerd; then
    # none yet, or one that was killed and is going away, or ours died: (re)start, twice at most
    ((starts < 2)) || break
    starts=$((starts + 1))
    start_dockerd
  fi
  sleep 1
done

echo "ensure-docker: dockerd did not come up (waited up to ${WAIT_SECONDS}s); last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
echo "ensure-docker: fix the error above (iptables, storage driver, disk space) and rerun" >&2
exit 1
