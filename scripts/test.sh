#!/usr/bin/env bash
# The whole test suite, real Docker included. Sets up what it needs first (venv, dockerd).
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "[dev]"
exec python -m pytest tests "$@"
