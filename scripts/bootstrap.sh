#!/usr/bin/env bash
# Shared set-up for quickstart.sh and test.sh: a virtualenv with clawpen, a running Docker engine.
# Usage: source scripts/bootstrap.sh [EXTRAS]   (EXTRAS like "[dev]"; default: none)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CLAWPEN_VENV:-$ROOT/.venv}
extras=${1:-}

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "bootstrap: installing python3-venv"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
if [[ ! -x $VENV/bin/python ]]; then
  echo "bootstrap: creating $VENV"
  python3 -m venv "$VENV"
fi
# Re-install only when pyproject.toml changed since the last install.
stamp=$VENV/.clawpen-installed$extras
if [[ ! -f $stamp || $ROOT/pyproject.toml -nt $stamp ]]; then
  echo "bootstrap: installing clawpen$extras into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT$extras"
  touch "$stamp"
fi
export PATH=$VENV/bin:$PATH

bash "$ROOT/scripts/ensure-docker.sh"
