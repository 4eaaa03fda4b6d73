"""What the running orchestrator says about itself: ``clawpen status`` and
``clawpen dashboard``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .client import call
from .common import DEFAULT_CONFIG, ConfigOption
from .views import render_status


def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON, as scripts read it.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Agents, containers, queues, jobs, channel health and spend today (JSON when piped)."""
    found = call(config, "GET", "/v1/status")
    if as_json or not sys.stdout.isatty():
        print(json.dumps(found, indent=2))
    else:
        print(render_status(found))


def dashboard(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print the dashboard's address, with its token (keep it to yourself: it opens the
    dashboard and the metrics port)."""
    found = call(config, "GET", "/v1/dashboard")
    print(found["url"])
    print(f"token: {found['token']}  (for scripts and Prometheus: Authorization: Bearer ...)")
