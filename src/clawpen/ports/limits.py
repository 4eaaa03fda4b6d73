"""How much of one public port a flood may take (``port_limits:`` in clawpen.yaml), and the
process's open-files budget the caps are sized in. Kept apart from ``listener.py`` so that
reading the settings, or an adapter's start, does not import the web server."""

from __future__ import annotations

import resource
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PortLimits(BaseModel):
    """One port's caps (``port_limits:`` in clawpen.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(default=32, ge=1, le=4096)
    idle_timeout: float = Field(default=10.0, gt=0, le=600)  # seconds for a request head

    def handler_kwargs(self) -> dict[str, Any]:
        """aiohttp's per-connection settings: bounded heads, idle keep-alive closed, and a body
        left unread by a refusal is not read to its end (lingering 0) but cut off."""
        return {
            "max_line_size": 8190,
            "max_field_size": 8190,
            "max_headers": 64,
            "keepalive_timeout": self.idle_timeout,
            "lingering_time": 0,
            "access_log": None,
        }


RESERVE = 256  # files for the store, logs, Docker's API, adapters and model calls


def files_short(limit: int, public: int, agents: int, per_agent: int) -> int:
    """How many open files the caps could need beyond ``limit`` (0: it is enough): ``public``
    connections on the public ports, ``per_agent`` on each agent's socket, and the reserve.

    >>> files_short(1024, public=112, agents=3, per_agent=64)
    0
    >>> files_short(1024, public=112, agents=20, per_agent=64)
    624
    """
    return max(0, public + agents * per_agent + RESERVE - limit)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, and return it: the
    caps on the public ports are sized well below it, so a flood of them leaves the rest for
    the agents' sockets and the model calls. Called once, at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # a limit we may not raise: the caps still hold
    return soft
