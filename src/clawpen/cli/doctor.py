"""Is the setup right? ``clawpen check`` reads the config back; ``clawpen doctor`` checks
every prerequisite (``ops/doctor.py``) and says how to fix what fails."""

from __future__ import annotations

import sys

import typer

from ..config import load_settings
from ..ops.doctor import render, run_checks
from .common import DEFAULT_CONFIG, ConfigOption, audit_to_log, guard


def check(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate the config file and print what it sets up."""
    audit_to_log(config)
    settings = guard(lambda: load_settings(config))
    agents = ", ".join(a.id for a in settings.agents)
    channels = ", ".join(settings.channel_settings())
    print(f"{config}: ok: agents {agents}; channels {channels}; data in {settings.data_dir}")


def doctor(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Check every prerequisite (Docker, image, config, secrets, data_dir, disk, model, channels)
    and say how to fix what fails; exits 1 if anything failed."""
    audit_to_log(config)
    checks = run_checks(config)
    print(render(checks))
    failed = [c for c in checks if c.verdict == "fail"]
    if failed:
        print(f"{len(failed)} check(s) failed", file=sys.stderr)
        raise typer.Exit(1)
