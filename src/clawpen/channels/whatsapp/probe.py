"""`clawpen doctor`'s check of WhatsApp: ``GET /{phone_number_id}``: the token must be good and
the number the app's."""

from __future__ import annotations

from ..base import Finding
from ..probing import UNREACHABLE, no_answer, request
from .settings import WhatsAppSettings


async def probe(block: WhatsAppSettings) -> Finding:
    base = str(block.api_base_url).rstrip("/")
    headers = {"Authorization": f"Bearer {block.access_token}"}
    try:
        answer = await request("GET", f"{base}/{block.phone_number_id}", headers=headers)
    except UNREACHABLE as exc:
        return no_answer("the WhatsApp Cloud API", base, "whatsapp", exc)
    if answer.status == 401:
        return (
            "Meta refused channels.whatsapp.access_token (expired or revoked)",
            "create a System User token in Meta Business settings and store it",
        )
    if answer.status >= 400:
        return (
            f"Meta does not know phone number id {block.phone_number_id} ({answer.status})",
            "copy channels.whatsapp.phone_number_id from WhatsApp > API Setup in the app",
        )
    return None
