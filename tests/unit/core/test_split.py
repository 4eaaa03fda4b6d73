"""Long replies are cut where a reader expects, and code blocks always render as code."""

from __future__ import annotations

import random

import pytest

from clawpen.core.split import FENCE, split_text


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("short", 10, ["short"], id="fits"),
        pytest.param("", 10, [""], id="empty"),
        pytest.param("abcdefghij", 10, ["abcdefghij"], id="exactly_the_limit"),
        pytest.param("abcdefghijkl", 5, ["abcde", "fghij", "kl"], id="hard_cut_without_lines"),
        pytest.param("line one\nline two", 12, ["line one", "line two"], id="cut_at_line_end"),
        pytest.param("ab\ncdefghijkl", 10, ["ab\ncdefghi", "jkl"], id="early_newline_ignored"),
        pytest.param("one two three four", 10, ["one two", "three four"], id="between_words"),
        pytest.param(
            "para one.\nstill one.\n\nparagraph two",
            30,
            ["para one.\nstill one.", "paragraph two"],
            id="paragraph_break_first",
        ),
        pytest.param(
            "```py\nline one\nline two\n```",
            20,
            ["```py\nline one\n```", "```py\nline two\n```"],
            id="code_block_closed_and_reopened",
        ),
        pytest.param(
            "Some words before it.\n```\nshort block\n```",
            30,
            ["Some words before it.", "```\nshort block\n```"],
            id="small_block_moves_whole",
        ),
    ],
)
def test_split_table(text: str, limit: int, expected: list[str]) -> None:
    chunks = split_text(text, limit)
    assert chunks == expected
    assert all(len(c) <= limit for c in chunks)


def _balanced(chunk: str) -> bool:
    return sum(1 for line in chunk.split("\n") if line.lstrip().startswith(FENCE)) % 2 == 0


def _words(text: str) -> str:
    """The text's characters without spaces and fence lines (which the splitter adds)."""
    lines = [line for line in text.split("\n") if not line.lstrip().startswith(FENCE)]
    return "".join("".join(lines).split())


@pytest.mark.parametrize("seed", range(30))
def test_random_replies_with_code_stay_within_limits_and_lose_no_word(seed: int) -> None:
    rng = random.Random(seed)
    pieces: list[str] = []
    for _ in range(rng.randint(3, 12)):
        if rng.random() < 0.4:
            lines = [
                "    " * rng.randint(0, 2) + f"value_{rng.randint(0, 999)} = {rng.random():.6f}"
                for _ in range(rng.randint(1, 60))
            ]
            pieces.append("```python\n" + "\n".join(lines) + "\n```")
        else:
            words = [rng.choice(["alpha", "beta", "gamma", "delta", "x" * 15]) for _ in range(80)]
            pieces.append(" ".join(words))
    text = "\n\n".join(pieces)
    limit = rng.choice([200, 500, 2000, 4000])
    chunks = split_text(text, limit)
    assert all(len(c) <= limit for c in chunks)
    assert all(_balanced(c) for c in chunks), "a chunk left a code block open"
    # every character arrives, in order (only separators at cuts are dropped)
    assert "".join(_words(c) for c in chunks) == _words(text)
