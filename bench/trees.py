"""The versions of clawpen a run compares: this tree, and the code before the core rebuild.

The baseline is checked out from git history into a scratch worktree (``git worktree add
--detach``, removed at the end of the run) and run as ``PYTHONPATH=<worktree>/src python -m
clawpen run``: the same interpreter and virtualenv as this tree (its dependencies are a subset),
the same fakes, the same machine, in the same run. It gets its own agent image, built by its
own code from its own tree, so a change to the agent's protocol in this tree cannot break it;
while the agent is unchanged the build is a cache hit and the two tags name one image.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawpen.runtime.image import DEFAULT_TAG

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "389e3bf"
"""The parent of the first commit of the core rebuild (async store with group commit, the
per-chat outbox, the loop-lag probe, the log event fan-out): "the code before this issue"."""
MAIN_COMMIT = "ade92dc"
"""main before issue 22 (density and speed): the closed loop's "2x the current main" is judged
against it."""

# Run against the tree's own code, whatever its layout: the image module moved into runtime/
# with the wings (issue 17), and the baseline predates that.
_BUILD = """
import sys, docker
try:
    from clawpen.runtime.image import build_agent_image
except ImportError:
    from clawpen.image import build_agent_image
build_agent_image(docker.from_env(), tag=sys.argv[1], progress=lambda _: None)
"""


@dataclass(frozen=True)
class Tree:
    """A version of clawpen to run as a child process: its source and its agent image."""

    label: str  # how the report names it
    root: Path
    image: str
    baseline: bool = False  # the code before the core rebuild: its config has fewer keys

    @property
    def src(self) -> Path:
        return self.root / "src"

    def environment(self) -> dict[str, str]:
        """What ``python -m clawpen`` needs to import this tree's code (before the venv's)."""
        return {"PYTHONPATH": str(self.src)}

    def adapt(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The bench's config (written for this tree) in the form this tree accepts.

        The baseline knows no ``rate_limit`` (it paces nothing: the fake Telegram has no
        limits) and refuses unknown keys; a checkout runs its own agent image."""
        if self.root == REPO_ROOT:
            return raw
        if not self.baseline:
            return {**raw, "image": self.image}
        channels = {
            name: {k: v for k, v in block.items() if k != "rate_limit"}
            for name, block in raw["channels"].items()
        }
        return {**raw, "channels": channels, "image": self.image}


CURRENT = Tree(label="after (this tree)", root=REPO_ROOT, image=DEFAULT_TAG)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def check_out_baseline(
    repo: Path, where: Path, commit: str = BASELINE_COMMIT, label: str = "before"
) -> Tree:
    """``commit`` in a detached worktree at ``where``, with its agent image built."""
    try:
        full = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", cwd=repo)
    except RuntimeError:
        raise RuntimeError(
            f"the baseline commit {commit} is not in this clone's history; fetch it"
            " (git fetch --unshallow) to compare before and after"
        ) from None
    git("worktree", "add", "--detach", str(where), full, cwd=repo)
    tree = Tree(
        label=f"{label} ({commit})",
        root=where,
        image=f"{DEFAULT_TAG.split(':')[0]}:bench-{commit}",
        baseline=commit == BASELINE_COMMIT,
    )
    try:
        build = subprocess.run(
            [sys.executable, "-c", _BUILD, tree.image],
            cwd=where,
            env={**os.environ, **tree.environment()},
            capture_output=True,
            text=True,
        )
        if build.returncode != 0:
            raise RuntimeError(
                f"building the baseline's agent image failed: {build.stderr[-2000:]}"
            )
    except BaseException:
        remove_tree(repo, tree)
        raise
    return tree


def remove_tree(repo: Path, tree: Tree) -> None:
    """Remove the worktree (its image stays: a cached build, shared with other checkouts)."""
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(tree.root)], cwd=repo, capture_output=True
    )
    subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)
