"""clawpen benchmarks: ``python -m bench`` runs them all and writes docs/benchmarks.md.

Every benchmark is an async function in its own module, registered with
``@harness.benchmark(...)``; it returns result rows (samples, unit, targets) and the report
renders whatever rows it gets. To add one: write ``bench/NAME.py`` with a registered function
and add the module's name to ``MODULES``.
"""

from __future__ import annotations

MODULES = (
    "dispatch",
    "channels",
    "cold_start",
    "throughput",
    "exactly_once",
    "memory",
    "adapters",
    "proxy",
    "isolation",
    "scheduler",
    "caching",
    "idle",
    "gvisor",
    "fleet",
    "parallel",
    "peer",
)
PEERS = ("nanobot",)
"""Benchmarks against a peer run only when asked for (``--peer NAME``): they install it."""
ON_REQUEST = {"peer"}
