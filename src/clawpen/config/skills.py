"""Skills in the shared ``SKILL.md`` format (Claude's, NanoClaw's, the agent-skills ecosystem's):
a folder whose ``SKILL.md`` opens with YAML front matter naming it (``name``) and saying when it
helps (``description``), then instructions; scripts and other files beside it.

Only the name and the description go into the agent's system prompt (a few tokens each); the
folder is mounted read-only at ``/mnt/skills/NAME`` through the mount allowlist, and the agent
reads the body and runs the files when it needs them. A malformed skill is a config error
naming the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

SKILL_FILE = "SKILL.md"
SKILLS_DIR = "/mnt/skills"
SKILL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")  # the format's own rule
MAX_DESCRIPTION = 1024  # the format's own limit
MAX_SKILL_FILE = 1024 * 1024


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    folder: Path  # on the host, resolved

    @property
    def container_path(self) -> str:
        return f"{SKILLS_DIR}/{self.name}"


def read_skill(written: str) -> Skill:
    """The skill in folder ``written`` (``~`` expanded); ValueError naming the file and the
    field when it is not one."""
    folder = Path(written).expanduser()
    if not folder.is_absolute():
        raise ValueError(f"{written!r}: write the skill folder's full path (or ~/...)")
    path = folder / SKILL_FILE
    try:
        if path.stat().st_size > MAX_SKILL_FILE:
            raise ValueError(f"{path}: larger than {MAX_SKILL_FILE // 1024} KB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; a skill folder holds a SKILL.md") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read ({type(exc).__name__})") from None
    front = _front_matter(text, path)
    name = front.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: front matter field 'name' is missing")
    if not SKILL_NAME.fullmatch(name):
        raise ValueError(
            f"{path}: front matter field 'name' must be lowercase letters, digits and hyphens,"
            " at most 64"
        )
    description = front.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"{path}: front matter field 'description' is missing")
    if len(description) > MAX_DESCRIPTION:
        raise ValueError(
            f"{path}: front matter field 'description' is over {MAX_DESCRIPTION} characters"
        )
    return Skill(name, " ".join(description.split()), folder.resolve())


def _front_matter(text: str, path: Path) -> dict[str, object]:
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise ValueError(f"{path}: no front matter; start the file with --- and name: ...")
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        raise ValueError(f"{path}: the front matter is not closed with ---") from None
    try:
        front = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        raise ValueError(f"{path}: the front matter is not YAML{where}") from None
    if not isinstance(front, dict):
        raise ValueError(
            f"{path}: the front matter must be a mapping (name: ..., description: ...)"
        )
    return front


def read_skills(written: Sequence[str]) -> list[Skill]:
    """Every skill of an agent; ValueError on a malformed one or two of one name."""
    skills = [read_skill(folder) for folder in written]
    names = [skill.name for skill in skills]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two skills are named {name!r}; each needs its own name")
    return skills


def skills_prompt(skills: Sequence[Skill]) -> str:
    """What the system prompt says of them: name, description and where, nothing more."""
    if not skills:
        return ""
    lines = ["Skills you have (read a skill's SKILL.md before using it; its files are beside it):"]
    lines += [f"- {s.name}: {s.description} ({s.container_path}/{SKILL_FILE})" for s in skills]
    return "\n".join(lines)
