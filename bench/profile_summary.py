"""Summarize a py-spy folded-stack profile (``--profile DIR`` writes them):
``python -m bench.profile_summary DIR/closed-loop-docker.folded [--top 30] [--rate 250]``.

Prints the busiest functions by self time and by inclusive time, as shares of the samples
(py-spy samples only threads that are running, so the total says how busy the process was).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LINE = re.compile(r"\s*\(([^)]*)\)$")


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``: lines merged, paths shortened."""
    match = LINE.search(frame)
    if not match:
        return frame
    where = match.group(1).rsplit(":", 1)[0]
    parts = where.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{frame[: match.start()]} ({short})"


def summarize(path: Path, top: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [f"{path.name}: {total} samples"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines.append(f"-- top {top} by {title} time")
        for name, count in counter.most_common(top):
            lines.append(f"{100 * count / total:6.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    for path in args.files:
        print(summarize(path, args.top))


if __name__ == "__main__":
    main()
