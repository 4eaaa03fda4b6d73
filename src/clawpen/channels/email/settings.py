"""What ``channels.email`` holds: the mailbox, its two servers, and how to log in (a password,
or an OAuth2 refresh token for XOAUTH2)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..base import ChannelSettings

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(ge=1, le=65535)
    starttls: bool = False  # False: TLS from the first byte (993, 465)


class OAuth2Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str
    client_secret: str = Field(repr=False)
    refresh_token: str = Field(repr=False)
    token_uri: str = GOOGLE_TOKEN_URI


class EmailSettings(ChannelSettings):
    address: str  # the agent's own address: From of every reply
    imap: ServerSettings
    smtp: ServerSettings
    username: str
    password: str | None = Field(None, repr=False)
    oauth2: OAuth2Settings | None = Field(None, repr=False)
    mailbox: str = "INBOX"
    trust_unauthenticated: bool = False  # True only for a private server that checks senders
    authserv_id: str | None = None  # only Authentication-Results carrying this id count
    tls_verify: bool = True
    ca_file: str | None = None  # a CA bundle (a private server's own certificate)
    poll_interval: float = Field(60.0, gt=0)  # seconds, where the server has no IDLE
    timeout: float = Field(30.0, gt=0)  # seconds for one IMAP or SMTP step
