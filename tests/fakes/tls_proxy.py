"""A corporate network in a box: a private CA, and an HTTP proxy that inspects TLS with it.

``PrivateCA`` makes a CA certificate (``ca.pem``, what a user's ``SSL_CERT_FILE`` names) and
certificates it signs for any host name (``cryptography``). ``InspectingProxy`` is what many
companies run: a client sends ``CONNECT host:443``; the proxy answers 200, ends the client's TLS
itself with a certificate for ``host`` from the private CA, and passes the plain bytes on to
whoever serves ``host`` (here: a fake platform on loopback, ``routes``). A client that does not
trust the private CA fails its handshake; one that ignores the proxy never reaches ``host`` (a
name that does not resolve). Plain-HTTP requests in absolute form (``GET http://...``, how a
client sends ``http://`` and ``ws://`` through a proxy) are passed on too. Every CONNECT and
every handshake's outcome is recorded, so a test can tell which way a client went.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class PrivateCA:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clawpen test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / "ca.pem"
        self.pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self._contexts: dict[str, ssl.SSLContext] = {}

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting a certificate for ``host``, signed by this CA."""
        if host not in self._contexts:
            key = ec.generate_private_key(ec.SECP256R1())
            now = datetime.datetime.now(datetime.UTC)
            leaf = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(self.certificate.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .add_extension(
                    x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                    critical=False,
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                    critical=False,
                )
                .sign(self.key, hashes.SHA256())
            )
            chain = self.directory / f"{host}.pem"
            chain.write_bytes(
                leaf.public_bytes(serialization.Encoding.PEM)
                + key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(chain)
            self._contexts[host] = context
        return self._contexts[host]


class InspectingProxy:
    def __init__(self, ca: PrivateCA, routes: dict[str, str]) -> None:
        """``routes``: host name -> the ``http://127.0.0.1:PORT`` that serves it in plain."""
        self.ca = ca
        self.routes = {host: urlsplit(url) for host, url in routes.items()}
        self.connects: list[str] = []  # "host:port" of every CONNECT
        self.handshakes: list[tuple[str, bool]] = []  # (host, whether the client trusted us)
        self.forwarded: list[str] = []  # absolute-form plain requests passed on
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def trusted(self, host: str) -> bool:
        return (host, True) in self.handshakes

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(head, target, reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connects.append(target)
        host = target.rsplit(":", 1)[0]
        route = self.routes.get(host)
        if route is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await writer.start_tls(self.ca.server_context(host))
        except (ssl.SSLError, OSError, ConnectionError):
            self.handshakes.append((host, False))
            raise
        self.handshakes.append((host, True))
        await self._pipe(reader, writer, route.hostname or "", route.port or 80, b"")

    async def _forward(
        self, head: bytes, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        url = urlsplit(target)
        self.forwarded.append(target)
        route = self.routes.get(url.hostname or "")
        host, port = (route.hostname, route.port) if route else (url.hostname, url.port)
        origin_form = url.path + (f"?{url.query}" if url.query else "")
        line, rest = head.split(b"\r\n", 1)
        method = line.split(b" ", 1)[0]
        first = method + b" " + (origin_form or "/").encode() + b" HTTP/1.1\r\n" + rest
        await self._pipe(reader, writer, host or "", port or 80, first)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        first: bytes,
    ) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        upstream_writer.write(first)

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(OSError, RuntimeError):
                if sink.can_write_eof():
                    sink.write_eof()

        try:
            await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))
        finally:
            upstream_writer.close()
