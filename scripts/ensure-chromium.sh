#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test: Debian's chromium and chromium-driver
# (/usr/bin/chromium, /usr/bin/chromedriver). Installs them when missing (apt-get,
# non-interactive); quick and silent when they are there. Safe to run twice.
set -euo pipefail

say() { echo "ensure-chromium: $*"; }

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
say "ready: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
