"""A message as WhatsApp Cloud API message bodies: a text, or a card with reply buttons.

Pure, like ``events.py``. A card is an ``interactive`` message of type ``button``, within the
Cloud API's limits: at most 3 buttons, each ``reply.id`` (the button's data) at most 256
characters and ``reply.title`` at most 20, titles unique; a body of at most 1024 characters.
A longer card's text goes first as a text of its own, then the buttons under a short body.
A card with more buttons than WhatsApp shows falls back to reply codes, which the core reads
as taps too::

    >>> title("Allow this host from now on")
    'Allow always'
"""

from __future__ import annotations

import re
from typing import Any

from ...models import OutboundMessage
from ..base import with_reply_codes

MAX_BUTTONS = 3
MAX_TITLE = 20
MAX_BODY = 1024
MAX_TEXT = 4096  # of a text message
SHORT_BODY = "Choose one:"  # above the buttons of a card whose text went before them
# sensible short forms of long labels: "Allow this host from now on" -> "Allow always"
_SHORTER = (
    (re.compile(r"^(\w+)\b.*\b(from now on|always|forever)$", re.IGNORECASE), r"\1 always"),
    (re.compile(r"^(\w+)\b.*\b(once|this time)$", re.IGNORECASE), r"\1 once"),
)


def title(label: str) -> str:
    """A button's label as a reply button's title (at most 20 characters): whole when it
    fits, else in a known short form, else cut at a word with an ellipsis."""
    label = " ".join(label.split())
    if len(label) <= MAX_TITLE:
        return label
    for pattern, short in _SHORTER:
        if pattern.match(label):
            shortened = pattern.sub(short, label)
            if len(shortened) <= MAX_TITLE:
                return shortened
    cut = label[: MAX_TITLE - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:-") + "\N{HORIZONTAL ELLIPSIS}"


def _titles(labels: list[str]) -> list[str]:
    """Each label's title, made unique (WhatsApp refuses two buttons with one title)."""
    titles: list[str] = []
    for label in labels:
        candidate = title(label)
        number = 2
        while candidate in titles:
            suffix = f" {number}"
            candidate = title(label)[: MAX_TITLE - len(suffix)].rstrip() + suffix
            number += 1
        titles.append(candidate)
    return titles


def card_messages(message: OutboundMessage) -> list[dict[str, Any]]:
    """The bodies (without ``to`` and ``messaging_product``) to send for ``message``, in
    order; the last is the one whose id the message has (a card's taps name it)."""
    if len(message.buttons) > MAX_BUTTONS:
        message = with_reply_codes(message)
    if not message.buttons:
        return [_text(message.text)]
    labels = [button.label for button in message.buttons]
    titles = _titles(labels)
    # a shortened title keeps its whole label in the card's text, for whoever wonders
    glossary = [f"{t}: {label}" for t, label in zip(titles, labels, strict=True) if t != label]
    text = message.text.strip()
    whole = "\n\n".join(part for part in (text, "\n".join(glossary)) if part)
    if len(whole) > MAX_TEXT:
        whole = text
    bodies: list[dict[str, Any]] = []
    if len(whole) <= MAX_BODY:
        body = whole or SHORT_BODY
    else:
        bodies.append(_text(whole))
        body = SHORT_BODY
    buttons = [
        {"type": "reply", "reply": {"id": button.data, "title": t}}
        for button, t in zip(message.buttons, titles, strict=True)
    ]
    bodies.append(
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": body},
                "action": {"buttons": buttons},
            },
        }
    )
    return bodies


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": {"body": text, "preview_url": False}}
