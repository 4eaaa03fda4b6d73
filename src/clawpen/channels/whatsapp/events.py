"""WhatsApp Cloud API payloads as values: what a webhook says, and what a send's answer means.

Pure functions, no I/O, so the rules are read (and tested) as tables. A webhook, as Meta sends it::

    {"object": "whatsapp_business_account",
     "entry": [{"id": "WABA_ID", "changes": [{"field": "messages", "value": {
         "messaging_product": "whatsapp",
         "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1065..."},
         "contacts": [{"profile": {"name": "Alice"}, "wa_id": "15551234567"}],
         "messages": [{"from": "15551234567", "id": "wamid.HBg...", "timestamp": "1700000000",
                       "type": "text", "text": {"body": "hi"},
                       "context": {"from": "1555...", "id": "wamid.of-the-quoted-one"}}],
         "statuses": [{"id": "wamid...", "status": "failed", "recipient_id": "1555...",
                       "timestamp": "...", "errors": [{"code": 131047, "title": "..."}]}]}}]}]}

Whatever we read is checked for type and length (``Malformed`` otherwise); whatever we do not
read may be anything. Strings are cut to what the core's wire takes and made valid UTF-8, so a
signed but strange payload can never make the adapter's frames unacceptable to the core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from ...models import MAX_BUTTON_DATA
from ...ports import safejson
from ..base import SendError

MAX_ID = 256  # characters in an id (the wire's limit)
MAX_TEXT = 200_000  # characters of text (the wire's limit; the core caps lower still)
MAX_NAME = 200
WINDOW_CLOSED = 131047  # "Re-engagement message": more than 24 hours since the user wrote
TOKEN_REFUSED = 190  # "Invalid OAuth access token"
THROTTLED = {4, 80007, 130429, 131048, 131056}  # rate limits: app, account, throughput, pair
TRANSIENT = {1, 2, 131000, 131016, 133004}  # "unknown", "service", "temporarily unavailable"
MEDIA_KINDS = ("image", "document", "audio", "video", "sticker")
IGNORED_KINDS = ("reaction", "system", "request_welcome")  # not a question for the agent


class Malformed(ValueError):
    """A webhook body that is not Meta's shape."""


@dataclass(frozen=True)
class Media:
    kind: str  # image | document | audio | video | sticker
    media_id: str
    mime_type: str  # without parameters: "audio/ogg", not "audio/ogg; codecs=opus"
    filename: str  # the sender's, for documents; else "" (the adapter names it)
    voice: bool = False


@dataclass(frozen=True)
class Message:
    wa_id: str  # the sender, which is the chat: Cloud API chats are one to one
    wamid: str
    timestamp: float
    kind: str
    text: str  # the text, or a media message's caption, or a note on what it was
    reply_to: str = ""  # the wamid it quotes
    media: Media | None = None


@dataclass(frozen=True)
class Tap:
    """A reply button pressed under one of our cards (``interactive.button_reply``). Who
    tapped is Meta's word (the message's ``from``); ``data`` is the button's ``reply.id``."""

    wa_id: str
    wamid: str  # the tap's own id: Meta's redeliveries carry it again
    data: str
    card: str  # ``context.id``: the wamid of the card it was under ("" if Meta named none)


@dataclass(frozen=True)
class Status:
    wamid: str
    recipient: str
    status: str  # sent | delivered | read | failed (| deleted, warning: passed on as is)
    error: str = ""
    window_closed: bool = False


@dataclass(frozen=True)
class Webhook:
    messages: tuple[Message, ...] = ()
    statuses: tuple[Status, ...] = ()
    ignored: tuple[str, ...] = ()
    taps: tuple[Tap, ...] = ()  # why parts were left out (another number's, a reaction)


def parse_webhook(body: bytes, phone_number_id: str) -> Webhook:
    """The messages and statuses in a webhook body addressed to ``phone_number_id``."""
    try:
        payload = safejson.loads(body)
    except safejson.TooDeep as exc:
        raise Malformed(str(exc)) from None
    except ValueError:  # not UTF-8, or not JSON
        raise Malformed("body is not JSON") from None
    root = _obj(payload, "body")
    if root.get("object") != "whatsapp_business_account":
        return Webhook(ignored=(f"object {_clip(str(root.get('object')), 40)!r}",))
    messages: list[Message] = []
    taps: list[Tap] = []
    statuses: list[Status] = []
    ignored: list[str] = []
    for entry in _list(root.get("entry"), "entry"):
        for change in _list(_obj(entry, "entry[]").get("changes", []), "entry[].changes"):
            change = _obj(change, "changes[]")
            if change.get("field") != "messages":
                ignored.append(f"field {_clip(str(change.get('field')), 40)!r}")
                continue
            value = _obj(change.get("value"), "changes[].value")
            metadata = _obj(value.get("metadata", {}), "value.metadata")
            number = metadata.get("phone_number_id", phone_number_id)
            if str(number) != phone_number_id:
                ignored.append(f"phone number {_clip(str(number), 40)}")
                continue
            for raw in _list(value.get("messages", []), "value.messages"):
                message = _message(_obj(raw, "messages[]"))
                if isinstance(message, Tap):
                    taps.append(message)
                elif message.kind in IGNORED_KINDS:
                    ignored.append(message.kind)
                else:
                    messages.append(message)
            for raw in _list(value.get("statuses", []), "value.statuses"):
                statuses.append(_status(_obj(raw, "statuses[]")))
    return Webhook(tuple(messages), tuple(statuses), tuple(ignored), tuple(taps))


def _message(raw: dict[str, Any]) -> Message | Tap:
    kind = _str(raw, "type", MAX_NAME)
    context = _obj(raw.get("context", {}), "message.context")
    base = Message(
        wa_id=_id(raw, "from"),
        wamid=_id(raw, "id"),
        timestamp=_timestamp(raw.get("timestamp", 0)),
        kind=kind,
        text="",
        reply_to=_str(context, "id", MAX_ID, required=False),
    )
    if kind == "text" or kind in MEDIA_KINDS:
        content = _obj(raw.get(kind), f"message.{kind}")
    else:  # a kind we only describe: whatever it holds is not read closely
        found = raw.get(kind)
        content = found if isinstance(found, dict) else {}
    if kind == "text":
        return replace(base, text=_str(content, "body", MAX_TEXT))
    tap = _tap(base, content) if kind == "interactive" else None
    if tap is not None:
        return tap
    if kind in MEDIA_KINDS:
        mime = _str(content, "mime_type", MAX_NAME, required=False)
        media = Media(
            kind=kind,
            media_id=_id(content, "id"),
            mime_type=mime.split(";", 1)[0].strip().lower() or "application/octet-stream",
            filename=_str(content, "filename", MAX_NAME, required=False),
            voice=content.get("voice") is True,
        )
        caption = _str(content, "caption", MAX_TEXT, required=False)
        return replace(base, text=caption, media=media)
    return replace(base, text=_describe(kind, content))


def _tap(base: Message, content: dict[str, Any]) -> Tap | None:
    """A ``button_reply`` whose id can be a button's data (1 to ``MAX_BUTTON_DATA`` bytes, as
    every button we send has); any other interactive reply is read as its title's text."""
    choice = content.get("button_reply")
    if content.get("type") != "button_reply" or not isinstance(choice, dict):
        return None
    data = choice.get("id")
    if not isinstance(data, str) or not data.strip():
        return None
    if len(data) > MAX_BUTTON_DATA or _clip(data, MAX_BUTTON_DATA) != data:
        return None  # not ours (ours are short and valid UTF-8): too long, or lone surrogates
    if len(data.encode()) > MAX_BUTTON_DATA or not data.isprintable():
        return None
    return Tap(wa_id=base.wa_id, wamid=base.wamid, data=data, card=base.reply_to)


def _describe(kind: str, content: dict[str, Any]) -> str:
    """A message the agent can only be told about: what it was, in a line."""
    if kind == "location":
        where = " ".join(
            _clip(str(content.get(key, "")), 300) for key in ("name", "address") if content.get(key)
        )
        latitude = _clip(str(content.get("latitude", "?")), 30)
        longitude = _clip(str(content.get("longitude", "?")), 30)
        return f"[location: {latitude}, {longitude}{' ' + where if where else ''}]"
    if kind == "button":
        return _str(content, "text", MAX_TEXT, required=False)
    if kind == "interactive":
        for key in ("button_reply", "list_reply"):
            choice = content.get(key)
            if isinstance(choice, dict):
                return _str(choice, "title", MAX_TEXT, required=False)
    if kind == "contacts":
        return "[a shared contact card]"
    return f"[a WhatsApp {_clip(kind, 40)} message, which clawpen cannot read]"


def _status(raw: dict[str, Any]) -> Status:
    errors = raw.get("errors", [])
    codes: list[int] = []
    words: list[str] = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            code = error.get("code")
            if isinstance(code, int) and not isinstance(code, bool):
                codes.append(code)
            details = error.get("error_data", {})
            detail = details.get("details") if isinstance(details, dict) else None
            text = " ".join(str(x) for x in (code, error.get("title"), detail) if x)
            words.append(_clip(text, 500))
    return Status(
        wamid=_id(raw, "id"),
        recipient=_str(raw, "recipient_id", MAX_ID, required=False),
        status=_str(raw, "status", MAX_NAME),
        error="; ".join(words)[:2000],
        window_closed=WINDOW_CLOSED in codes,
    )


# -- the Graph API's answers -------------------------------------------------------------------


def send_outcome(status: int, body: bytes, retry_after: str | None = None) -> str:
    """The wamid of a sent message, from the Graph API's answer to ``POST /messages``; or the
    ``SendError`` that says whether trying again can help."""
    try:
        payload = safejson.loads(body)
    except ValueError:
        payload = None
    if status == 200 and isinstance(payload, dict):
        sent = payload.get("messages")
        if isinstance(sent, list) and sent and isinstance(sent[0], dict):
            wamid = sent[0].get("id")
            if isinstance(wamid, str) and wamid:
                return wamid
    raise send_error(status, payload, retry_after)


def send_error(status: int, payload: Any, retry_after: str | None = None) -> SendError:
    code, message = graph_error(payload)
    said = f"whatsapp: HTTP {status}" + (f", error {code}" if code is not None else "")
    said += f": {message}" if message else ""
    if code == WINDOW_CLOSED:
        return SendError(
            "whatsapp: the 24-hour window closed: WhatsApp takes a free-form reply only within"
            " 24 hours of the user's last message; the user must write first"
            f" (Meta: {message or 'Re-engagement message'})",
            permanent=True,
        )
    if status == 401 or code == TOKEN_REFUSED:
        return SendError(
            f"{said}; the access token was refused: check channels.whatsapp.access_token",
            permanent=True,
        )
    if status == 429 or code in THROTTLED:
        return SendError(said, retry_after=_seconds(retry_after))
    if status >= 500 or status == 408 or code in TRANSIENT:
        return SendError(said)
    if status == 200:
        return SendError(f"whatsapp: the answer to a send carries no message id: {said}")
    return SendError(said, permanent=True)


def graph_error(payload: Any) -> tuple[int | None, str]:
    """``(code, message)`` of a Graph API error body ``{"error": {"code":..., "message":...}}``."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code")
    details = error.get("error_data")
    detail = details.get("details") if isinstance(details, dict) else None
    message = " ".join(str(x) for x in (error.get("message"), detail) if x)
    valid = isinstance(code, int) and not isinstance(code, bool)
    return (code if valid else None), _clip(message, 500)


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (Meta rarely sends one: then the core's backoff decides)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 3600 else None


# -- checks ------------------------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{where} is not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Malformed(f"{where} is not a list")
    return value


def _str(raw: dict[str, Any], key: str, limit: int, required: bool = True) -> str:
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise Malformed(f"{key} is not a string")
    return _clip(value, limit)


def _id(raw: dict[str, Any], key: str) -> str:
    value = _str(raw, key, MAX_ID + 1)
    if len(value) > MAX_ID or not _PRINTABLE.fullmatch(value):
        raise Malformed(f"{key} is not an id")
    return value


def _timestamp(value: Any) -> float:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
        return float(value)
    raise Malformed("timestamp is not Unix seconds")


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters of valid UTF-8 (JSON may carry lone surrogates)."""
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # ids are ASCII without spaces or controls
