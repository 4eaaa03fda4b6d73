#!/usr/bin/env bash
# The whole test suite, real Docker included. Sets up what it needs first (venv, dockerd, and
# local mail servers).
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "[dev]"
bash scripts/ensure-mail.sh   # dovecot and postfix on loopback, for the e-mail channel
bash scripts/ensure-chromium.sh  # headless Chromium and its driver, for the dashboard's browser test
bash scripts/ensure-espeak.sh   # espeak-ng, for the voice-note tests (a spoken sentence)
exec python -m pytest tests "$@"
