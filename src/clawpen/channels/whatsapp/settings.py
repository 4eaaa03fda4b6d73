"""The ``channels.whatsapp`` block."""

from __future__ import annotations

from pydantic import Field, field_validator

from ...ports.limits import PortLimits
from ..base import ChannelSettings


class WhatsAppSettings(ChannelSettings):
    phone_number_id: str
    access_token: str = Field(repr=False)
    app_secret: str = Field(repr=False)  # checks X-Hub-Signature-256 on every webhook
    verify_token: str = Field(repr=False)  # the webhook subscription handshake
    api_base_url: str = "https://graph.facebook.com/v21.0"
    listen: str = "127.0.0.1:8787"
    port_limits: PortLimits = PortLimits(max_connections=64)  # the webhook's connections

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        from ..webhook import parse_listen

        parse_listen(value)
        return value

    @field_validator("phone_number_id", mode="before")
    @classmethod
    def _digits(cls, value: object) -> object:
        """Digits, quoted or not: YAML reads ``106540352242922`` unquoted as a number."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.isascii() or not value.isdigit():
            raise ValueError(f"{value!r} is not a phone number id (digits, from Meta's app)")
        return value
