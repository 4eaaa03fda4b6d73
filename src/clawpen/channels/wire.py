"""The frames between the orchestrator and an adapter process: one JSON object per line.

Each adapter has a Unix socket pair of its own, so the channel a frame belongs to is known from
the socket it came in on: the core stamps it and never reads it from a frame. The adapter is
treated as untrusted (it parses everything a platform sends), so every frame from it is checked
here before it is believed.

    adapter -> core   {"type": "ready"}   first, once: its code loaded, running as its own uid
    core -> adapter   {"type": "start", "channel": "telegram", "settings": {...}}   once, the
                       answer to ready (settings hold the credential)
                      {"type": "send", "id": 7, "chat": "42", "thread": "", "text": "...",
                       "reply_to": "", "buttons": [{"label": "Allow", "data": "ok-7f3k9q2m"}]}
                      {"type": "edit", "id": 8, "chat": "42", "thread": "", "platform_id": "..",
                       "text": "..."}     a card's new text, its buttons gone; sent/send_failed
                      {"type": "tap_result", "id": 4, "notice": "...", "card": "..."}
                      {"type": "send_file", "id": 9, "chat": "42", "thread": "", "name": "a.png",
                       "media_type": "image/png", "caption": "", "reply_to": "",
                       "data": "<base64>"}   answered with sent / send_failed
                      {"type": "typing", "chat": "42", "thread": "", "message_id": "9",
                       "active": true}            best effort, never answered
                      {"type": "accepted", "id": 3, "outcome": "routed"|"rejected"|"duplicate"}
                      {"type": "not_accepted", "id": 3, "error": "..."}   (store unavailable;
                       the answer to an inbound or to a tap the core could not record)
    adapter -> core   {"type": "inbound", "id": 3, "chat": "42", "thread": "", "sender": "...",
                       "text": "...", "platform_id": "...", "received_at": 1.5, "reply_to": "",
                       "addressed": true,
                       "attachments": [{"name": "a.png", "media_type": "image/png",
                                        "data": "<base64>"}]}
                      {"type": "sent", "id": 7, "platform_id": "..."}
                      {"type": "send_failed", "id": 7, "error": "...", "retry_after": null,
                       "permanent": false}
                      {"type": "status", "chat": "42", "platform_id": "...", "status": "read",
                       "error": "", "window_closed": false}   a platform's later word on a send
                      {"type": "tap", "id": 4, "chat": "42", "thread": "", "sender": "...",
                       "data": "ok-7f3k9q2m", "platform_id": "..."}   a button pressed
                      {"type": "fatal", "error": "..."}   the adapter cannot work at all
                      {"type": "reach", "state": "unreachable"|"running", "error": "..."}
                                          the platform cannot be reached (or can again)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
from typing import Any

from ..models import (
    MAX_BUTTON_DATA,
    MAX_BUTTON_LABEL,
    Address,
    Attachment,
    Button,
    CardTap,
    Decision,
    InboundMessage,
    OutboundFile,
    OutboundMessage,
    Rejection,
    Route,
    TapOutcome,
)
from ..ports import safejson
from .base import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_ATTACHMENTS_TOTAL,
    MAX_FILE_BYTES,
    DeliveryStatus,
    SendError,
)

MAX_FRAME = 4 * 1024 * 1024 + MAX_ATTACHMENTS_TOTAL * 4 // 3  # bytes in one line, base64 in
# what the adapter reads from the core: a send_file frame carries up to MAX_FILE_BYTES, base64
MAX_CORE_FRAME = 4 * 1024 * 1024 + MAX_FILE_BYTES * 4 // 3 + 4
MAX_CAPTION = 4_096  # characters of a file's caption
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,62}")
BIG_FRAME = 256 * 1024  # frames larger than this are parsed off the event loop
MAX_NAME = 255  # characters in a file name
MAX_MEDIA_TYPE = 127
MAX_ID = 256  # characters in a chat, thread, sender or platform id
MAX_TEXT = 200_000  # characters of inbound text (the core caps what it stores lower still)
MAX_ERROR = 2_000
MAX_BUTTONS = 8  # under one card
MAX_NOTICE = 200  # characters of a tap's notice (Telegram shows up to 200)

Frame = dict[str, Any]


class FrameError(ValueError):
    """A frame that is not what the protocol says: the adapter is broken or hostile."""


def encode(frame: Frame) -> bytes:
    """One line; ``ensure_ascii`` keeps a lone surrogate an escape instead of a bad byte."""
    return json.dumps(frame, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """The next frame, or None at the end of the stream. Raises FrameError."""
    try:
        line = await reader.readline()
    except (asyncio.LimitOverrunError, ValueError):
        raise FrameError(f"a frame over {MAX_FRAME} bytes") from None
    except ConnectionError:
        return None  # the other side died: the same as hanging up
    if not line:
        return None
    try:
        frame = (
            await asyncio.to_thread(safejson.loads, line)
            if len(line) > BIG_FRAME
            else safejson.loads(line)
        )
    except safejson.TooDeep as exc:
        raise FrameError(f"a frame of {exc}") from None
    except ValueError:
        raise FrameError("a frame that is not JSON") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError("a frame without a type")
    return frame


def _text(frame: Frame, key: str, limit: int, required: bool = True) -> str:
    value = frame.get(key, None if required else "")
    if not isinstance(value, str):
        raise FrameError(f"{frame.get('type')}.{key} must be a string")
    if len(value) > limit:
        raise FrameError(f"{frame.get('type')}.{key} is longer than {limit} characters")
    return value


def _id(frame: Frame) -> int:
    value = frame.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FrameError(f"{frame.get('type')}.id must be a non-negative integer")
    return value


# -- adapter -> core ---------------------------------------------------------------------------


def inbound_frame(request_id: int, message: InboundMessage) -> Frame:
    return {
        "type": "inbound",
        "id": request_id,
        "chat": message.address.chat,
        "thread": message.address.thread,
        "sender": message.sender_id,
        "text": message.text,
        "platform_id": message.platform_id,
        "received_at": message.received_at,
        "reply_to": message.reply_to,
        "addressed": message.addressed,
        "attachments": [
            {
                "name": file.name,
                "media_type": file.media_type,
                "data": base64.b64encode(file.data).decode(),
            }
            for file in message.attachments
        ],
    }


def parse_inbound(frame: Frame, channel: str) -> tuple[int, InboundMessage]:
    """The message, addressed to ``channel``: the socket's channel, whatever the frame says."""
    received_at = frame.get("received_at")
    if (
        not isinstance(received_at, int | float)
        or isinstance(received_at, bool)
        or not math.isfinite(received_at)
    ):
        raise FrameError("inbound.received_at must be a number")
    chat = _text(frame, "chat", MAX_ID)
    platform_id = _text(frame, "platform_id", MAX_ID)
    if not chat or not platform_id:
        raise FrameError("inbound.chat and inbound.platform_id must not be empty")
    addressed = frame.get("addressed", True)
    if not isinstance(addressed, bool):
        raise FrameError("inbound.addressed must be true or false")
    message = InboundMessage(
        address=Address(channel, chat, _text(frame, "thread", MAX_ID, required=False)),
        sender_id=_text(frame, "sender", MAX_ID, required=False),
        text=_text(frame, "text", MAX_TEXT),
        platform_id=platform_id,
        received_at=float(received_at),
        reply_to=_text(frame, "reply_to", MAX_ID, required=False),
        attachments=_attachments(frame.get("attachments", [])),
        addressed=addressed,
    )
    return _id(frame), message


def _attachments(files: Any) -> tuple[Attachment, ...]:
    if not isinstance(files, list) or len(files) > MAX_ATTACHMENTS:
        raise FrameError(f"inbound.attachments must be a list of at most {MAX_ATTACHMENTS}")
    found: list[Attachment] = []
    total = 0
    for file in files:
        if not isinstance(file, dict):
            raise FrameError("inbound.attachments holds something that is not an object")
        encoded = _text(file | {"type": "attachment"}, "data", MAX_FRAME)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise FrameError("attachment.data is not base64") from None
        total += len(data)
        if len(data) > MAX_ATTACHMENT_BYTES or total > MAX_ATTACHMENTS_TOTAL:
            raise FrameError("inbound.attachments are larger than the limit")
        found.append(
            Attachment(
                name=_text(file | {"type": "attachment"}, "name", MAX_NAME),
                media_type=_text(file | {"type": "attachment"}, "media_type", MAX_MEDIA_TYPE),
                data=data,
            )
        )
    return tuple(found)


def sent_frame(request_id: int, platform_id: str) -> Frame:
    return {"type": "sent", "id": request_id, "platform_id": platform_id}


def send_failed_frame(request_id: int, failure: SendError) -> Frame:
    return {
        "type": "send_failed",
        "id": request_id,
        "error": str(failure)[:MAX_ERROR],
        "retry_after": failure.retry_after,
        "permanent": failure.permanent,
        "about_message": failure.about_message,
    }


def parse_send_outcome(frame: Frame) -> tuple[int, str | None, SendError | None]:
    """(id, platform id, None) of a sent frame; (id, None, the failure) of a send_failed one."""
    request_id = _id(frame)
    if frame["type"] == "sent":
        return request_id, _text(frame, "platform_id", MAX_ID), None
    retry_after = frame.get("retry_after")
    if retry_after is not None and (
        not isinstance(retry_after, int | float)
        or isinstance(retry_after, bool)
        or not 0 <= retry_after <= 86_400
    ):
        raise FrameError("send_failed.retry_after must be null or seconds up to a day")
    flags = {name: frame.get(name, False) for name in ("permanent", "about_message")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise FrameError(f"send_failed.{name} must be true or false")
    failure = SendError(
        _text(frame, "error", MAX_ERROR),
        retry_after=None if retry_after is None else float(retry_after),
        permanent=flags["permanent"],
        about_message=flags["about_message"],
    )
    return request_id, None, failure


DELIVERY_STATES = ("sent", "delivered", "read", "failed")


def status_frame(status: DeliveryStatus) -> Frame:
    return {
        "type": "status",
        "chat": status.chat,
        "platform_id": status.platform_id,
        "status": status.status,
        "error": status.error[:MAX_ERROR],
        "window_closed": status.window_closed,
    }


def parse_status(frame: Frame) -> DeliveryStatus:
    state = frame.get("status")
    if state not in DELIVERY_STATES:
        raise FrameError(f"status.status must be one of {', '.join(DELIVERY_STATES)}")
    window_closed = frame.get("window_closed", False)
    if not isinstance(window_closed, bool):
        raise FrameError("status.window_closed must be true or false")
    return DeliveryStatus(
        chat=_text(frame, "chat", MAX_ID),
        platform_id=_text(frame, "platform_id", MAX_ID),
        status=str(state),
        error=_text(frame, "error", MAX_ERROR, required=False),
        window_closed=window_closed,
    )


REACH_STATES = ("running", "unreachable")


def reach_frame(state: str, error: str) -> Frame:
    return {"type": "reach", "state": state, "error": error[:MAX_ERROR]}


def parse_reach(frame: Frame) -> tuple[str, str]:
    state = frame.get("state")
    if state not in REACH_STATES:
        raise FrameError(f"reach.state must be one of {', '.join(REACH_STATES)}")
    return str(state), _text(frame, "error", MAX_ERROR, required=False)


def tap_frame(request_id: int, tap: CardTap) -> Frame:
    return {
        "type": "tap",
        "id": request_id,
        "chat": tap.address.chat,
        "thread": tap.address.thread,
        "sender": tap.sender_id,
        "data": tap.data,
        "platform_id": tap.platform_id,
    }


def parse_tap(frame: Frame, channel: str) -> tuple[int, CardTap]:
    """A tap in ``channel`` (the socket's). Who tapped must be named: a tap from nobody is
    nobody's decision."""
    chat = _text(frame, "chat", MAX_ID)
    sender = _text(frame, "sender", MAX_ID)
    if not chat or not sender:
        raise FrameError("tap.chat and tap.sender must not be empty")
    tap = CardTap(
        address=Address(channel, chat, _text(frame, "thread", MAX_ID, required=False)),
        sender_id=sender,
        data=_button_data(frame),
        platform_id=_text(frame, "platform_id", MAX_ID, required=False),
    )
    return _id(frame), tap


def _button_data(frame: Frame) -> str:
    data = _text(frame, "data", MAX_BUTTON_DATA)
    if not data or len(data.encode("utf-8", "surrogatepass")) > MAX_BUTTON_DATA:
        raise FrameError(f"{frame.get('type')}.data must be 1 to {MAX_BUTTON_DATA} bytes")
    return data


def ready_frame() -> Frame:
    """The adapter's first frame: its code is loaded and it runs as its own uid; the core
    answers with the start frame (the credential) only after checking that uid itself."""
    return {"type": "ready"}


def fatal_frame(error: str) -> Frame:
    return {"type": "fatal", "error": error[:MAX_ERROR]}


# -- core -> adapter -------------------------------------------------------------------------


def start_frame(channel: str, settings: dict[str, Any]) -> Frame:
    return {"type": "start", "channel": channel, "settings": settings}


def send_frame(request_id: int, message: OutboundMessage) -> Frame:
    return {
        "type": "send",
        "id": request_id,
        "chat": message.address.chat,
        "thread": message.address.thread,
        "text": message.text,
        "reply_to": message.reply_to,
        "key": message.key,
        "buttons": [{"label": b.label, "data": b.data} for b in message.buttons],
    }


def parse_send(frame: Frame, channel: str) -> tuple[int, OutboundMessage]:
    address = Address(
        channel, _text(frame, "chat", MAX_ID), _text(frame, "thread", MAX_ID, required=False)
    )
    message = OutboundMessage(
        address,
        _text(frame, "text", MAX_FRAME),
        _text(frame, "reply_to", MAX_ID, False),
        _text(frame, "key", MAX_ID, False),
        _buttons(frame.get("buttons", [])),
    )
    return _id(frame), message


def _buttons(buttons: Any) -> tuple[Button, ...]:
    if not isinstance(buttons, list) or len(buttons) > MAX_BUTTONS:
        raise FrameError(f"send.buttons must be a list of at most {MAX_BUTTONS}")
    found: list[Button] = []
    for button in buttons:
        if not isinstance(button, dict):
            raise FrameError("send.buttons holds something that is not an object")
        checked = button | {"type": "button"}
        label = _text(checked, "label", MAX_BUTTON_LABEL)
        if not label:
            raise FrameError("button.label must not be empty")
        found.append(Button(label, _button_data(checked)))
    return tuple(found)


def edit_frame(request_id: int, address: Address, platform_id: str, text: str) -> Frame:
    return {
        "type": "edit",
        "id": request_id,
        "chat": address.chat,
        "thread": address.thread,
        "platform_id": platform_id,
        "text": text,
    }


def parse_edit(frame: Frame, channel: str) -> tuple[int, Address, str, str]:
    """(id, the card's chat, its platform id, its new text)."""
    address = Address(
        channel, _text(frame, "chat", MAX_ID), _text(frame, "thread", MAX_ID, required=False)
    )
    platform_id = _text(frame, "platform_id", MAX_ID)
    return _id(frame), address, platform_id, _text(frame, "text", MAX_TEXT)


def tap_result_frame(request_id: int, outcome: TapOutcome) -> Frame:
    return {
        "type": "tap_result",
        "id": request_id,
        "notice": outcome.notice[:MAX_NOTICE],
        "card": outcome.card,
    }


def parse_tap_result(frame: Frame) -> tuple[int, TapOutcome]:
    notice = _text(frame, "notice", MAX_NOTICE, required=False)
    return _id(frame), TapOutcome(notice, _text(frame, "card", MAX_TEXT, required=False))


def send_file_frame(request_id: int, file: OutboundFile) -> Frame:
    return {
        "type": "send_file",
        "id": request_id,
        "chat": file.address.chat,
        "thread": file.address.thread,
        "name": file.name,
        "media_type": file.media_type,
        "caption": file.caption,
        "reply_to": file.reply_to,
        "data": base64.b64encode(file.data).decode(),
    }


def parse_send_file(frame: Frame, channel: str) -> tuple[int, OutboundFile]:
    """The file, for ``channel``. Checked as strictly as the other direction: a plain name, a
    media type of the form type/subtype, bytes that are base64 and within MAX_FILE_BYTES."""
    request_id = _id(frame)
    chat = _text(frame, "chat", MAX_ID)
    if not chat:
        raise FrameError("send_file.chat must not be empty")
    name = _text(frame, "name", MAX_NAME)
    if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise FrameError("send_file.name must be a plain file name")
    media_type = _text(frame, "media_type", MAX_MEDIA_TYPE)
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise FrameError("send_file.media_type must look like type/subtype")
    encoded = _text(frame, "data", MAX_CORE_FRAME)
    if len(encoded) > (MAX_FILE_BYTES + 2) // 3 * 4:
        raise FrameError(f"send_file.data is over {MAX_FILE_BYTES} bytes")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("send_file.data is not base64") from None
    if not data:
        raise FrameError("send_file.data is empty")
    file = OutboundFile(
        address=Address(channel, chat, _text(frame, "thread", MAX_ID, required=False)),
        name=name,
        media_type=media_type,
        data=data,
        caption=_text(frame, "caption", MAX_CAPTION, required=False),
        reply_to=_text(frame, "reply_to", MAX_ID, required=False),
    )
    return request_id, file


def typing_frame(address: Address, message_id: str, active: bool) -> Frame:
    return {
        "type": "typing",
        "chat": address.chat,
        "thread": address.thread,
        "message_id": message_id,
        "active": active,
    }


def parse_typing(frame: Frame, channel: str) -> tuple[Address, str, bool]:
    address = Address(
        channel, _text(frame, "chat", MAX_ID), _text(frame, "thread", MAX_ID, required=False)
    )
    active = frame.get("active")
    if not isinstance(active, bool):
        raise FrameError("typing.active must be true or false")
    return address, _text(frame, "message_id", MAX_ID, required=False), active


def accepted_frame(request_id: int, decision: Decision | None) -> Frame:
    outcome = (
        "duplicate"
        if decision is None
        else "rejected"
        if isinstance(decision, Rejection)
        else "routed"
    )
    return {"type": "accepted", "id": request_id, "outcome": outcome}


def parse_not_accepted(frame: Frame) -> tuple[int, str]:
    return _id(frame), _text(frame, "error", MAX_ERROR, required=False)


def parse_accepted(frame: Frame) -> tuple[int, Decision | None]:
    """What the adapter needs to know: committed (routed or rejected) or seen before."""
    outcome = frame.get("outcome")
    if outcome == "routed":
        return _id(frame), Route("")
    if outcome == "rejected":
        return _id(frame), Rejection("")
    if outcome == "duplicate":
        return _id(frame), None
    raise FrameError("accepted.outcome must be routed, rejected or duplicate")
