#!/usr/bin/env bash
# Make sure a Docker engine runs here, so clawpen can start agent containers.
#
# For Debian bookworm as root without systemd (developer machines and CI): installs docker.io
# and debootstrap (the local base image needs it) when missing, clears pid files left by a
# killed dockerd, starts dockerd detached from the caller and waits until it answers.
# Also installs gVisor (Debian package runsc) and registers it with dockerd as the runtime
# `runsc`, so agents can run with `runtime: runsc` (and the isolation tests run under both).
# Idempotent: exits at once when `docker info` already works with runsc registered.
set -euo pipefail

LOG=/var/log/clawpen-dockerd.log
WAIT_SECONDS=60

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v runsc >/dev/null || missing+=(runsc)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
if ((${#missing[@]})); then
  echo "ensure-docker: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# runsc for clawpen: agents reach the orchestrator through a host Unix socket (--host-uds=open),
# and have no network at all (--network=none: gVisor makes only loopback). Merged into any
# daemon.json already there; a running dockerd reloads its runtimes on SIGHUP.
register_runsc() {
  command -v runsc >/dev/null || return 0
  python3 - "$(command -v runsc)" <<'PY'
import json, os, sys
path = "/etc/docker/daemon.json"
config = json.load(open(path)) if os.path.exists(path) else {}
wanted = {"path": sys.argv[1], "runtimeArgs": ["--host-uds=open", "--network=none"]}
if config.get("runtimes", {}).get("runsc") != wanted:
    config.setdefault("runtimes", {})["runsc"] = wanted
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".new", "w") as file:
        json.dump(config, file, indent=2)
    os.replace(path + ".new", path)
PY
}
register_runsc

if docker info >/dev/null 2>&1; then
  if command -v runsc >/dev/null && ! docker info --format '{{json .Runtimes}}' | grep -q '"runsc"'; then
    echo "ensure-docker: registering runsc with the running dockerd (SIGHUP)"
    for dir in /proc/[0-9]*; do
      [[ "$(cat "$dir/comm" 2>/dev/null)" == dockerd ]] && kill -HUP "${dir#/proc/}"
    done
    for ((i = 0; i < 10; i++)); do
      docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' && break
      sleep 1
    done
  fi
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
