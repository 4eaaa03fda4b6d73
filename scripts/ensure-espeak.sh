#!/usr/bin/env bash
# espeak-ng, for the voice-note tests: they speak a known sentence into a WAV file. Installs it
# when missing (apt-get, non-interactive); quick and silent when it is there. Safe to run twice.
set -euo pipefail

say() { echo "ensure-espeak: $*"; }

if ! command -v espeak-ng >/dev/null; then
  say "installing espeak-ng"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends espeak-ng >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends espeak-ng >/dev/null
  fi
fi
say "ready: $(espeak-ng --version | head -1)"
