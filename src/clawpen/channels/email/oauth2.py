"""XOAUTH2 access tokens for IMAP and SMTP, from a refresh token (google-auth)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ... import netenv
from ..base import ChannelFatal
from .settings import OAuth2Settings

if TYPE_CHECKING:
    import requests


class Tokens:
    """An OAuth2 access token for XOAUTH2, refreshed through google-auth before it expires
    (google-auth counts a token as expired a few minutes before its expiry)."""

    def __init__(self, settings: OAuth2Settings) -> None:
        import google.auth.transport.requests
        from google.oauth2.credentials import Credentials

        self.credentials = Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=settings.refresh_token,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            token_uri=settings.token_uri,
        )
        self.request = google.auth.transport.requests.Request(session=_session(settings.token_uri))
        self.lock = asyncio.Lock()

    async def get(self, renew: bool = False) -> str:
        from google.auth.exceptions import RefreshError, TransportError

        async with self.lock:
            if renew or not self.credentials.valid:
                try:
                    await asyncio.to_thread(self.credentials.refresh, self.request)
                except RefreshError as exc:
                    if getattr(exc, "retryable", False):
                        raise ConnectionError(f"token refresh: {exc}") from None
                    raise ChannelFatal(
                        "email: the OAuth2 refresh token was refused; check "
                        "channels.email.oauth2 (client_id, client_secret, refresh_token)"
                    ) from None
                except TransportError as exc:
                    raise ConnectionError(f"token refresh: {exc}") from None
            return str(self.credentials.token)


def _session(token_uri: str) -> requests.Session:
    """requests, as google-auth uses it, through our proxy and CA bundle (on its own it reads
    REQUESTS_CA_BUNDLE and certifi's bundle, never SSL_CERT_FILE)."""
    import requests

    net = netenv.current()
    session = requests.Session()
    session.trust_env = False  # the proxy and bundle below, not requests' own reading
    proxy = net.proxy_for(token_uri)
    session.proxies = {"https": proxy, "http": proxy} if proxy else {}
    if net.ca_file or net.ca_dir:
        session.verify = net.ca_file or net.ca_dir or True
    return session
