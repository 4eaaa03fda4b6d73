"""What the agent may send through its door: every result body is checked before it is used.

Pure functions of bytes, so the rules are a table. The agent's own side (``sanitized``) must
never trip them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from clawpen.door.proxy import requested_call
from clawpen_agent.protocol import (
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    MAX_TEXT_CHARS,
    ProtocolError,
    TaskResult,
    check_result,
    clean_text,
    parse_json,
    parse_task_id,
)

REFUSED_RESULTS = {
    "text_a_number": (b'{"text": 123}', "text must be a string, not a number"),
    "text_a_list": (b'{"text": ["a"]}', "text must be a string, not an array"),
    "text_null": (b'{"text": null}', "text must be a string, not null"),
    "escaped_lone_surrogate": (b'{"text": "\\ud800"}', "lone surrogate"),
    "raw_lone_surrogate": (b'{"text": "\xed\xa0\x80"}', "not UTF-8"),
    "latin1_bytes": (b'{"text": "caf\xe9"}', "not UTF-8"),
    "nul": (b'{"text": "a\\u0000b"}', "NUL"),
    "text_too_long": (json.dumps({"text": "x" * (MAX_TEXT_CHARS + 1)}).encode(), "over 100000"),
    "error_a_number": (b'{"error": 1}', "error must be a string"),
    "error_with_surrogate": (b'{"error": "\\udfff"}', "lone surrogate"),
    "tool_calls_negative": (b'{"tool_calls": -1}', "tool_calls must be an integer"),
    "tool_calls_a_bool": (b'{"tool_calls": true}', "tool_calls must be an integer"),
    "tool_calls_a_float": (b'{"tool_calls": 1.5}', "tool_calls must be an integer"),
    "tool_calls_huge": (b'{"tool_calls": 99999999999999999999}', "tool_calls must be"),
    "extra_a_list": (b'{"extra": []}', "extra must be a JSON object"),
    "extra_nested": (b'{"extra": {"a": {"b": 1}}}', "extra.a must be a string, number"),
    "extra_too_many_keys": (
        json.dumps({"extra": {str(i): i for i in range(17)}}).encode(),
        "more than 16 keys",
    ),
    "extra_long_string": (b'{"extra": {"a": "' + b"x" * 300 + b'"}}', "over 256"),
    "extra_nan": (b'{"extra": {"a": NaN}}', "NaN is not a JSON number"),
    "extra_infinite": (b'{"extra": {"a": 1e999}}', "finite"),
    "extra_int_past_sqlite": (b'{"extra": {"a": 9223372036854775808}}', "out of range"),
    "unknown_key": (b'{"text": "hi", "admin": true}', "unknown key 'admin'"),
    "an_array": (b"[]", "must be a JSON object, not an array"),
    "not_json": (b"not json", "not JSON"),
    "empty": (b"", "not JSON"),
    "deep_nesting": (b"[" * 100_000, "nested too deeply"),
    "too_many_values": (b"[" + b"{}," * 600_000 + b"{}]", "more than 500000 JSON values"),
}


@pytest.mark.parametrize(("raw", "why"), REFUSED_RESULTS.values(), ids=REFUSED_RESULTS.keys())
def test_malformed_result_is_refused_with_a_one_line_reason(raw: bytes, why: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        TaskResult.from_json(raw)
    message = str(refused.value)
    assert why in message
    assert "\n" not in message and len(message) < 200  # one line; the value is not echoed


ACCEPTED_RESULTS: dict[str, tuple[bytes, TaskResult]] = {
    "empty_object": (b"{}", TaskResult()),
    "text": (b'{"text": "hello"}', TaskResult(text="hello")),
    "error": (b'{"text": "", "error": "boom"}', TaskResult(error="boom")),
    "paired_surrogates_are_one_emoji": (b'{"text": "\\ud83d\\ude00"}', TaskResult(text="😀")),
    "raw_utf8": ('{"text": "héllo 😀"}'.encode(), TaskResult(text="héllo 😀")),
    "extra_scalars": (
        b'{"extra": {"received": 1.5, "n": 2, "ok": true, "none": null, "s": "x"}}',
        TaskResult(extra={"received": 1.5, "n": 2, "ok": True, "none": None, "s": "x"}),
    ),
    "full": (
        b'{"text": "t", "error": null, "tool_calls": 3, "extra": {}}',
        TaskResult(text="t", tool_calls=3),
    ),
}


@pytest.mark.parametrize(
    ("raw", "expected"), ACCEPTED_RESULTS.values(), ids=ACCEPTED_RESULTS.keys()
)
def test_well_formed_result_is_accepted(raw: bytes, expected: TaskResult) -> None:
    assert TaskResult.from_json(raw) == expected


@pytest.mark.parametrize(
    ("raw", "task_id"), [("1", 1), ("42", 42), ("0007", 7), ("9" * 18, int("9" * 18))]
)
def test_task_id_in_the_path_is_a_number(raw: str, task_id: int) -> None:
    assert parse_task_id(raw) == task_id


@pytest.mark.parametrize("raw", ["x", "", "-1", "1.0", "1e3", " 1", "٣", "9" * 19, "0x10"])
def test_task_id_that_is_not_a_number_is_refused(raw: str) -> None:
    with pytest.raises(ProtocolError, match="task id"):
        parse_task_id(raw)


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("plain", "plain"),
        ("a\x00b", "ab"),
        ("lone \ud800 high", "lone \ufffd high"),
        ("lone \udfff low", "lone \ufffd low"),
        ("😀 stays", "😀 stays"),
    ],
)
def test_agent_cleans_text_before_sending(text: str, cleaned: str) -> None:
    assert clean_text(text, 100) == cleaned


@pytest.mark.parametrize(
    "result",
    [
        TaskResult(text="\ud800" * MAX_TEXT_CHARS * 2, error="\x00\udc00" * MAX_ERROR_CHARS),
        TaskResult(text="\U0001f600" * (MAX_TEXT_CHARS + 5)),  # 4 bytes each in UTF-8
        TaskResult(text="\x01" * MAX_TEXT_CHARS),  # escaped as \\u0001: 6 bytes each
        TaskResult(text="ok", extra={"received": 1.0, "answered": 2.0}),
    ],
    ids=["surrogates_and_nuls", "astral_chars", "control_chars", "plain"],
)
def test_an_honest_agents_sanitized_result_always_passes(result: TaskResult) -> None:
    body = result.sanitized().to_json()
    assert len(body) <= MAX_RESULT_BYTES
    assert check_result(parse_json(body)) == result.sanitized()


MODEL_REQUESTS: dict[str, tuple[Any, tuple[str, bool] | str]] = {
    "plain": ({"model": "m", "messages": []}, ("m", False)),
    "streaming": ({"model": "m", "stream": True}, ("m", True)),
    "no_model_is_refused_by_policy_later": ({"messages": []}, ("", False)),
    "model_a_list": ({"model": ["m"]}, "model must be a string"),
    "stream_a_string": ({"model": "m", "stream": "yes"}, "stream must be true or false"),
    "an_array": ([1], "must be a JSON object"),
}


@pytest.mark.parametrize(("payload", "outcome"), MODEL_REQUESTS.values(), ids=MODEL_REQUESTS.keys())
def test_model_request_names_its_model_and_stream_flag(
    payload: Any, outcome: tuple[str, bool] | str
) -> None:
    if isinstance(outcome, str):
        with pytest.raises(ProtocolError, match=outcome):
            requested_call(payload)
    else:
        assert requested_call(payload) == outcome
