"""One trace per message, from the channel to the delivered reply, with the agent's model and
tool calls in it: the context crosses the agent's socket (OpenTelemetry SDK, in memory)."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.runtime.inprocess import InProcessRuntime
from tests.conftest import make_settings, running
from tests.fakes.fake_channel import MemoryChannel
from tests.waiting import until


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


async def test_a_trace_spans_channel_task_model_and_tool_calls_to_the_delivered_reply(
    tmp_path: Path, fake_model: FakeModel, api_key: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings(
        tmp_path / "data",
        fake_model,
        api_key,
        channels={"cli": {}, "telegram": {"token": "123:abc"}},
        pairings=[{"channel": "telegram:42", "agent": "assistant"}],
        tracing={},
    )
    channel = MemoryChannel()
    orchestrator = Orchestrator.open(
        settings,
        runtime=InProcessRuntime(tmp_path / "ws"),
        adapters="in_process",
        channels={"telegram": channel},
        tracer_provider=provider,
    )
    async with running(orchestrator):
        await channel.push("42", "run: echo traced")
        await channel.wait_sent(1)
        await until(  # the delivery's span ends just after the send returns
            lambda: "reply.deliver" in by_name(exporter.get_finished_spans()),
            what="the delivery's span",
        )
    spans = by_name(exporter.get_finished_spans())
    [receipt], [task], [delivery] = spans["message.receive"], spans["task"], spans["reply.deliver"]
    models, tools = spans["model.call"], spans["tool.shell"]
    assert len(models) == 2 and len(tools) == 1  # ask, run the shell, ask again
    trace_id = receipt.context.trace_id
    everything = [receipt, task, delivery, *models, *tools]
    assert {s.context.trace_id for s in everything} == {trace_id}
    assert receipt.parent is None
    assert task.parent is not None and task.parent.span_id == receipt.context.span_id
    for child in (delivery, *models, *tools):  # crossed the socket and came back
        assert child.parent is not None and child.parent.span_id == task.context.span_id
    assert task.attributes is not None and task.attributes["clawpen.agent"] == "assistant"
    first, second = sorted(models, key=lambda s: s.start_time or 0)
    [tool] = tools
    # in the order they happened: ask, the tool, ask again, then the reply goes out
    assert (first.end_time or 0) <= (tool.start_time or 0)
    assert (tool.end_time or 0) <= (second.start_time or 0) + 5_000_000  # clocks: within 5 ms
    assert (delivery.start_time or 0) >= (task.end_time or 0)
    assert second.attributes is not None and second.attributes["gen_ai.usage.output_tokens"] > 0


async def test_without_tracing_in_the_config_no_span_is_made(
    tmp_path: Path, fake_model: FakeModel, api_key: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings(tmp_path / "data", fake_model, api_key)
    orchestrator = Orchestrator.open(
        settings, runtime=InProcessRuntime(tmp_path / "ws"), tracer_provider=provider
    )
    async with running(orchestrator):
        assert orchestrator.cli is not None
        await orchestrator.cli.ask("assistant", "hello")
    assert fake_model.requests  # the message went all the way, and nothing was traced
    assert exporter.get_finished_spans() == ()


def test_tool_timings_from_an_agent_are_read_strictly_and_never_trusted_as_more() -> None:
    from clawpen_agent.protocol import format_tool_calls, parse_tool_calls

    calls = [("shell", 1700000000.25, 1700000001.5), ("read_file", 1700000002.0, 1700000002.0)]
    assert parse_tool_calls(format_tool_calls(calls)) == calls
    hostile = ";".join(
        [
            "shell=2,1",  # ends before it starts
            "Shell=1,2",  # not a tool's name
            "x" * 40 + "=1,2",
            "shell=1e308,1e309",
            "shell=nan,nan",
            "shell=1,2,3",
            "",
        ]
        + ["shell=1,2"] * 100
    )
    parsed = parse_tool_calls(hostile)
    assert parsed == [("shell", 1.0, 2.0)] * (32 - 7)  # 32 parts read at most
