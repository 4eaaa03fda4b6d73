"""Every error clawpen shows a person says what is wrong and how to fix it.

Foreign exceptions (docker, sqlite, yaml, aiohttp) are turned into a ``ClawpenError`` at the edge
where they happen; the CLI prints ``str(error)`` as one line and exits non-zero.

    ClawpenError
     ├── ConfigError              the config file is wrong (exit code 2)
     ├── DockerUnavailable, ImageMissing, ImageBuildError
     ├── StoreError
     │    ├── StoreUnavailable    not now: retry (disk full, locked)
     │    └── StoreRejected       never: fail the work it belongs to
     └── OrchestratorUnavailable  the CLI finds no orchestrator
"""

from __future__ import annotations


class ClawpenError(Exception):
    """A problem a person can fix: ``problem`` says what, ``fix`` says how."""

    exit_code = 1

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class ConfigError(ClawpenError):
    """The config file is missing, malformed or refers to something unset."""

    exit_code = 2


class DockerUnavailable(ClawpenError):
    """The Docker engine cannot be reached."""


class ImageMissing(ClawpenError):
    """The agent image has not been built."""


class ImageBuildError(ClawpenError):
    """Building the agent image failed."""


class StoreError(ClawpenError):
    """The store failed; the subclass says whether trying again can help."""


class StoreUnavailable(StoreError):
    """Transient: the write can succeed later (disk full, database locked, I/O error)."""


class StoreRejected(StoreError):
    """Permanent: this write will never succeed; fail the work it belongs to."""


class OrchestratorUnavailable(ClawpenError):
    """The CLI cannot reach a running orchestrator through the admin socket."""
