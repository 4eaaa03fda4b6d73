"""The e-mail channel against real mail servers: dovecot (IMAP, IDLE, XOAUTH2 through an
introspection endpoint) and postfix (SMTP in on port 25, submission with AUTH), both on loopback,
started by scripts/ensure-mail.sh; and real agent containers.

Alice's mail comes in through postfix on port 25 as it would from the internet, with the
Authentication-Results header the receiving server (mx.clawpen.test) would have prepended;
replies go out through the submission port and are read back from alice's own mailbox."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import imaplib
import os
import smtplib
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clawpen.app import Orchestrator
from clawpen.channels.base import MB, SendError
from clawpen.channels.email import EmailAdapter, EmailSettings
from clawpen.demo.model import FakeModel
from clawpen.models import Address, Button, InboundMessage, OutboundFile, OutboundMessage

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker

ROOT = Path(__file__).parents[2]
MAIL_DIR = Path(os.environ.get("CLAWPEN_MAIL_DIR", "/var/lib/clawpen-mail"))
CA_FILE = MAIL_DIR / "tls/cert.pem"
DOVECOT = ["doveadm", "-c", str(MAIL_DIR / "dovecot.conf")]
POSTFIX_CONF = "/etc/postfix-clawpen"
OAUTH_PORT = 18089  # where dovecot asks whether an OAuth2 token is good (ensure-mail.sh)
AGENT, ALICE, MALLORY = "agent@clawpen.test", "alice@clawpen.test", "mallory@clawpen.test"
PASSWORDS = {AGENT: "agent-secret", ALICE: "alice-secret", MALLORY: "mallory-secret"}
RECEIVED_BY = "mx.clawpen.test"  # the receiving server's authserv-id
PASS = f"{RECEIVED_BY}; dkim=pass header.d=clawpen.test header.s=mail"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a2b1e15b0000000049454e44ae426082"
)

EMAIL = {
    "address": AGENT,
    "imap": {"host": "127.0.0.1", "port": 993},
    "smtp": {"host": "127.0.0.1", "port": 587, "starttls": True},
    "username": AGENT,
    "password": PASSWORDS[AGENT],
    "ca_file": str(CA_FILE),
    "authserv_id": RECEIVED_BY,
}


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def mail_servers() -> None:
    """dovecot and postfix up (scripts/test.sh starts them; this makes a bare pytest work)."""
    subprocess.run(["bash", str(ROOT / "scripts/ensure-mail.sh")], check=True)


@pytest.fixture
def mailboxes(mail_servers: None) -> Iterator[None]:
    """Every test starts with empty mailboxes and an SMTP server that defers nothing."""
    for user in PASSWORDS:
        run(*DOVECOT, "expunge", "-u", user, "mailbox", "INBOX", "all")
    yield
    defer_nothing()


def defer_nothing() -> None:
    if (MAIL_DIR / "defer").read_text():
        (MAIL_DIR / "defer").write_text("")
        run("postfix", "-c", POSTFIX_CONF, "reload")


def config(**extra: Any) -> dict[str, Any]:
    return {
        "config_channels": {"cli": {}, "email": EMAIL | extra},
        "pairings": [{"channel": f"email:{ALICE}", "agent": "assistant"}],
        "adapters": "process",
    }


def mail(
    text: str,
    subject: str = "hello",
    sender: str = ALICE,
    auth: list[str] | None = None,
    reply_to: EmailMessage | None = None,
    image: bytes | None = None,
) -> EmailMessage:
    """A message as alice's mail client writes it, with the Authentication-Results headers
    (topmost first) of the server that received it: by default, DKIM passed for her domain."""
    message = EmailMessage()
    for header in auth if auth is not None else [PASS]:
        message["Authentication-Results"] = header
    message["From"] = f"Alice <{sender}>"
    message["To"] = AGENT
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@clawpen.test>"
    if reply_to is not None:
        parent = str(reply_to["Message-ID"])
        message["In-Reply-To"] = parent
        message["References"] = f"{reply_to.get('References', '')} {parent}".strip()
    message.set_content(text)
    if image is not None:
        message.add_attachment(image, maintype="image", subtype="png", filename="dot.png")
    return message


async def deliver(message: EmailMessage | bytes, envelope_from: str = ALICE) -> None:
    """Through postfix's port 25, as a message from the internet arrives."""

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", 25, timeout=60) as smtp:
            if isinstance(message, bytes):
                smtp.sendmail(envelope_from, [AGENT], message)
            else:
                smtp.send_message(message, from_addr=envelope_from, to_addrs=[AGENT])

    await asyncio.to_thread(send)


def _read_inbox(user: str) -> list[tuple[EmailMessage, bytes]]:
    from clawpen.channels.email.mailtext import parse_bytes

    imap = imaplib.IMAP4_SSL(
        "127.0.0.1", 993, ssl_context=ssl.create_default_context(cafile=str(CA_FILE))
    )
    try:
        imap.login(user, PASSWORDS[user])
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "ALL")
        messages = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(FLAGS BODY.PEEK[])")
            head, raw = data[0]  # type: ignore[misc]
            messages.append((parse_bytes(raw), head))
        return messages
    finally:
        imap.logout()


async def inbox(user: str) -> list[EmailMessage]:
    return [message for message, _ in await asyncio.to_thread(_read_inbox, user)]


async def wait_for_inbox(user: str, count: int, timeout: float = 90) -> list[EmailMessage]:
    async with asyncio.timeout(timeout):
        while len(messages := await inbox(user)) < count:
            await asyncio.sleep(0.2)
    return messages


async def all_seen(user: str) -> bool:
    messages = await asyncio.to_thread(_read_inbox, user)
    return all(b"\\Seen" in flags for _, flags in messages)


async def settled(orchestrator: Orchestrator, answered: int, timeout: float = 90) -> None:
    """Until ``answered`` messages were answered and no reply waits to go out."""
    async with asyncio.timeout(timeout):
        while True:
            counts = await orchestrator.store.counts()
            if counts.get("messages.answered", 0) >= answered and not counts.get("replies.pending"):
                return
            await asyncio.sleep(0.1)


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n").strip()


def model_saw(fake_model: FakeModel) -> str:
    return repr(fake_model.requests)


async def test_a_mail_gets_a_threaded_reply_in_the_senders_mailbox(
    docker_orchestrator_factory: DockerOrchestratorFactory, mailboxes: None
) -> None:
    orchestrator, _ = docker_orchestrator_factory(**config())
    first = mail("Can you hear me?\n\n-- \nAlice\nACME Corp", subject="plans")
    async with running(orchestrator):
        await deliver(first)
        [reply] = await wait_for_inbox(ALICE, 1)
        # alice answers in the thread, quoting the agent, from her phone
        second = mail(
            "Loud and clear.\n\nOn Mon, 1 Jan 2024, agent wrote:\n> echo: ...\n\n"
            "Sent from my iPhone",
            subject=f"Re: {reply['Subject']}",
            reply_to=reply,
        )
        await deliver(second)
        replies = await wait_for_inbox(ALICE, 2)
        await settled(orchestrator, 2)
        seen = await all_seen(AGENT)

    assert reply["From"] == AGENT and reply["To"] == ALICE
    assert reply["Subject"] == "Re: plans"
    assert reply["In-Reply-To"] == first["Message-ID"]
    assert reply["References"] == first["Message-ID"]
    # the signature was trimmed before the agent saw it; the reply quotes nothing
    assert body(reply) == "echo: Subject: plans\n\nCan you hear me?"
    later = replies[1]
    assert later["Subject"] == "Re: plans"
    assert later["In-Reply-To"] == second["Message-ID"]
    assert later["References"].split() == [
        first["Message-ID"],
        reply["Message-ID"],
        second["Message-ID"],
    ]
    assert body(later) == "echo: Loud and clear."  # quote and "Sent from" trimmed
    assert seen  # both flagged \Seen once committed


async def test_an_image_attachment_reaches_the_model(
    docker_orchestrator_factory: DockerOrchestratorFactory, mailboxes: None
) -> None:
    """(Over IMAP with STARTTLS on 143 and SMTP over TLS on 465, the other two ways in.)"""
    orchestrator, _ = docker_orchestrator_factory(
        **config(
            imap={"host": "127.0.0.1", "port": 143, "starttls": True},
            smtp={"host": "127.0.0.1", "port": 465},
        )
    )
    async with running(orchestrator):
        await deliver(mail("What is this?", subject="a picture", image=PNG))
        [reply] = await wait_for_inbox(ALICE, 1)
    digest = hashlib.sha256(PNG).hexdigest()[:12]
    assert f"[image: image/png, sha256 {digest}]" in body(reply)
    assert "What is this?" in body(reply)


async def test_mail_whose_from_the_receiving_server_did_not_vouch_for_never_reaches_an_agent(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_model: FakeModel,
    mailboxes: None,
) -> None:
    """Alice is paired; mallory writes as alice. No verdict, a failing one, a passing one for
    mallory's own domain, and a passing one forged below the receiving server's or under
    another server's name: none counts. Then alice's real mail is answered, alone."""
    orchestrator, _ = docker_orchestrator_factory(**config())
    forgeries = [
        mail("forged 1: no verdict", auth=[]),
        mail("forged 2", auth=[f"{RECEIVED_BY}; dkim=fail header.d=clawpen.test"]),
        mail("forged 3", auth=[f"{RECEIVED_BY}; dkim=pass header.d=evil.test"]),
        mail("forged 4", auth=["evil.test; dkim=pass header.d=clawpen.test"]),
        mail("forged 5", auth=[f"{RECEIVED_BY}; dkim=none", PASS]),
    ]
    async with running(orchestrator):
        for forged in forgeries:
            await deliver(forged, envelope_from=MALLORY)
        await deliver(mail("the real alice"))
        [reply] = await wait_for_inbox(ALICE, 1)
        await settled(orchestrator, 1)
        async with asyncio.timeout(30):
            while not await all_seen(AGENT):  # every forgery was read and set aside
                await asyncio.sleep(0.2)
        replies = await inbox(ALICE)
    assert body(reply) == "echo: Subject: hello\n\nthe real alice"
    assert len(replies) == 1
    assert "forged" not in model_saw(fake_model)


async def test_a_dropped_imap_connection_loses_and_doubles_nothing(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_model: FakeModel,
    mailboxes: None,
) -> None:
    orchestrator, _ = docker_orchestrator_factory(**config())
    async with running(orchestrator):
        await deliver(mail("one", subject="m1"))
        await wait_for_inbox(ALICE, 1)
        await settled(orchestrator, 1)
        # as if the adapter died between the commit and the \Seen flag: it reads "one" again
        run(*DOVECOT, "flags", "remove", "-u", AGENT, "\\Seen", "mailbox", "INBOX", "all")
        kicked = run(*DOVECOT, "kick", AGENT)
        for n in (2, 3):
            await deliver(mail(f"mail {n}", subject=f"m{n}"))
        await wait_for_inbox(ALICE, 3)
        kicked += run(*DOVECOT, "kick", AGENT)
        for n in (4, 5):
            await deliver(mail(f"mail {n}", subject=f"m{n}"))
        replies = await wait_for_inbox(ALICE, 5)
        await settled(orchestrator, 5)
        async with asyncio.timeout(30):
            while not await all_seen(AGENT):
                await asyncio.sleep(0.2)
        replies = await inbox(ALICE)
    assert AGENT in kicked  # the connection was really dropped, twice
    assert kicked.count(AGENT) == 2
    assert sorted(body(reply) for reply in replies) == [
        "echo: Subject: m1\n\none",
        *(f"echo: Subject: m{n}\n\nmail {n}" for n in (2, 3, 4, 5)),
    ]


async def test_an_smtp_temporary_failure_is_retried_and_delivered_once(
    docker_orchestrator_factory: DockerOrchestratorFactory, mailboxes: None
) -> None:
    """postfix answers 451 to the reply's recipient until the test lifts it."""
    log = MAIL_DIR / "postfix.log"
    already = log.read_text().count("451 4.7.1")
    (MAIL_DIR / "defer").write_text(f"{ALICE} 451 4.7.1 try again later\n")
    run("postfix", "-c", POSTFIX_CONF, "reload")
    orchestrator, _ = docker_orchestrator_factory(**config())
    async with running(orchestrator):
        await deliver(mail("are you there?"))
        async with asyncio.timeout(60):
            while log.read_text().count("451 4.7.1") < already + 2:  # refused, and refused again
                await asyncio.sleep(0.1)
        assert await inbox(ALICE) == []
        defer_nothing()
        [reply] = await wait_for_inbox(ALICE, 1)
        await settled(orchestrator, 1)
        replies = await inbox(ALICE)
    assert len(replies) == 1
    assert body(reply) == "echo: Subject: hello\n\nare you there?"


async def test_a_refused_password_disables_the_channel_naming_the_key(
    orchestrator_factory: Callable[..., Orchestrator], mailboxes: None
) -> None:
    orchestrator = orchestrator_factory(**config(password="not-the-password"))
    async with running(orchestrator):
        async with asyncio.timeout(30):
            while orchestrator.channel_states["email"].state != "disabled":
                await asyncio.sleep(0.05)
        status = await orchestrator.status()
    error = status["channels"]["email"]["error"]
    assert "refused the login of agent@clawpen.test" in error
    assert "channels.email.password" in error


class FakeOAuth:
    """Google's token endpoint (refresh grants) and the introspection endpoint dovecot asks,
    on one loopback port. ``expire()`` ends every token issued so far."""

    def __init__(self) -> None:
        self.grants: list[dict[str, str]] = []
        self.checked: list[tuple[str, bool]] = []  # (token, accepted), as dovecot asked
        self.live: set[str] = set()
        self.issued = 0

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.grants.append({k: str(v) for k, v in form.items()})
        if form.get("refresh_token") != "refresh-me" or form.get("client_secret") != "shh":
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.issued += 1
        token = f"ya29.token-{self.issued}"
        self.live.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        )

    async def introspect(self, request: web.Request) -> web.Response:
        token = str((await request.post()).get("token", ""))
        active = token in self.live
        self.checked.append((token, active))
        return web.json_response({"active": active, "username": AGENT})

    def expire(self) -> None:
        self.live.clear()


@pytest.fixture
async def fake_oauth() -> AsyncIterator[FakeOAuth]:
    oauth = FakeOAuth()
    app = web.Application()
    app.router.add_post("/token", oauth.token)
    app.router.add_post("/introspect", oauth.introspect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", OAUTH_PORT)
    await site.start()
    yield oauth
    await runner.cleanup()


async def test_xoauth2_with_an_expired_token_is_refreshed_through_google_auth(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_oauth: FakeOAuth,
    mailboxes: None,
) -> None:
    oauth2 = {
        "client_id": "clawpen-test.apps.googleusercontent.com",
        "client_secret": "shh",
        "refresh_token": "refresh-me",
        "token_uri": f"http://127.0.0.1:{OAUTH_PORT}/token",
    }
    settings = config(oauth2=oauth2)
    del settings["config_channels"]["email"]["password"]
    orchestrator, _ = docker_orchestrator_factory(**settings)
    async with running(orchestrator):
        await deliver(mail("first"))
        await wait_for_inbox(ALICE, 1)
        fake_oauth.expire()  # the access token ran out: the server refuses it from now on
        kicked = run(*DOVECOT, "kick", AGENT)
        await deliver(mail("after expiry"))
        replies = await wait_for_inbox(ALICE, 2)
        await settled(orchestrator, 2)
    assert AGENT in kicked
    assert sorted(body(reply) for reply in replies) == [
        "echo: Subject: hello\n\nafter expiry",
        "echo: Subject: hello\n\nfirst",
    ]
    assert len(fake_oauth.grants) >= 2  # once at start, again when the token was refused
    for grant in fake_oauth.grants:
        assert grant["grant_type"] == "refresh_token"
        assert grant["client_id"] == oauth2["client_id"]
    assert ("ya29.token-1", False) in fake_oauth.checked  # the expired one was refused
    assert ("ya29.token-2", True) in fake_oauth.checked  # and its successor let in


def adapter(**extra: Any) -> EmailAdapter:
    return EmailAdapter(EmailSettings.model_validate(EMAIL | extra))


async def test_a_reply_after_a_restart_finds_its_thread_over_imap(mailboxes: None) -> None:
    """An adapter that never saw the original (it was restarted) looks it up by Message-ID."""
    first = mail("hello again", subject="Re: Re: the plan")
    first["References"] = "<root@clawpen.test>"
    await deliver(first)
    await wait_for_inbox(AGENT, 1)
    fresh = adapter()
    sent = await fresh.send(
        OutboundMessage(
            Address("email", ALICE, "<root@clawpen.test>"),
            "Noted.",
            reply_to=str(first["Message-ID"]),
        )
    )
    [reply] = await wait_for_inbox(ALICE, 1)
    assert reply["Message-ID"] == sent
    assert reply["Subject"] == "Re: the plan"
    assert reply["In-Reply-To"] == first["Message-ID"]
    assert reply["References"].split() == ["<root@clawpen.test>", first["Message-ID"]]
    assert body(reply) == "Noted."


@pytest.mark.parametrize(
    ("answer", "permanent"),
    [("451 4.7.1 try again later", False), ("550 5.1.1 no such mailbox", True)],
)
async def test_smtp_refusals_are_temporary_or_permanent_as_the_server_says(
    mailboxes: None, answer: str, permanent: bool
) -> None:
    (MAIL_DIR / "defer").write_text(f"{ALICE} {answer}\n")
    run("postfix", "-c", POSTFIX_CONF, "reload")
    with pytest.raises(SendError) as refused:
        await adapter().send(OutboundMessage(Address("email", ALICE, ""), "hi"))
    assert refused.value.permanent is permanent
    assert answer.split()[0] in str(refused.value)


def test_doctor_logs_in_to_imap_and_tells_a_refused_password_from_a_dead_server(
    mail_servers: None,
) -> None:
    from clawpen.channels.email.probe import probe as email

    def probe(**extra: Any) -> tuple[str, str] | None:
        return asyncio.run(email(EmailSettings.model_validate(EMAIL | extra)))

    assert probe() is None
    assert probe(imap={"host": "127.0.0.1", "port": 143, "starttls": True}) is None
    refused = probe(password="wrong")
    assert refused is not None and f"refused the login of {AGENT}" in refused[0]
    assert "password" in refused[1]
    dead = probe(imap={"host": "127.0.0.1", "port": 9})
    assert dead is not None and "does not answer" in dead[0]
    untrusted = probe(ca_file=None)  # the server's certificate is its own
    assert untrusted is not None and "TLS" in untrusted[0]


def config_for(*senders: str, **extra: Any) -> dict[str, Any]:
    settings = config(**extra)
    settings["pairings"] = [{"channel": f"email:{s}", "agent": "assistant"} for s in senders]
    return settings


async def test_a_subject_that_decodes_to_a_line_break_gets_a_clean_reply_and_holds_up_no_one(
    docker_orchestrator_factory: DockerOrchestratorFactory, mailboxes: None
) -> None:
    """Issue 23: the encoded subject decodes to CR/LF plus a Bcc header. The reply goes out
    with that subject on one line and no Bcc; mallory's own mail, sent just after, is
    answered as promptly as ever (no failing reply holds the channel)."""
    orchestrator, _ = docker_orchestrator_factory(**config_for(ALICE, MALLORY))
    hostile = mail("hello there", subject="hello").as_bytes()
    encoded = b"=?utf-8?q?hi=0D=0ABcc:_mallory@clawpen.test?="
    hostile = hostile.replace(b"Subject: hello", b"Subject: " + encoded, 1)
    assert encoded in hostile
    async with running(orchestrator):
        await deliver(hostile)
        await deliver(mail("me too", subject="mine", sender=MALLORY), envelope_from=MALLORY)
        [theirs] = await wait_for_inbox(MALLORY, 1, timeout=30)
        [reply] = await wait_for_inbox(ALICE, 1, timeout=30)
        await settled(orchestrator, 2)
        mallorys = await inbox(MALLORY)
    assert reply["Subject"] == "Re: hi Bcc: mallory@clawpen.test"
    assert reply["Bcc"] is None and reply["To"] == ALICE
    assert body(reply).endswith("hello there")
    assert [m["To"] for m in mallorys] == [MALLORY]  # no copy of alice's reply went to mallory
    assert theirs["Subject"] == "Re: mine"


async def test_a_forged_authentication_results_alone_gets_no_answer_without_authserv_id(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_model: FakeModel,
    mailboxes: None,
) -> None:
    """With authserv_id unset, mallory writes a passing verdict for alice's domain into her
    own mail, naming our server: it sits below every Received line, so it is not ours. A mail
    whose verdict our server wrote as it delivered it (above its Received line; postfix here
    verifies nothing, so `doveadm save` plays that server) is answered."""
    orchestrator, _ = docker_orchestrator_factory(**config(authserv_id=None))
    forged = mail("forged: only my own header", auth=[PASS])
    genuine = mail("the real alice", auth=[])
    received = (
        "Received: from mail.clawpen.test (mail.clawpen.test [127.0.0.1])\r\n"
        "\tby mx.clawpen.test (Postfix) with ESMTPS; Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    )
    delivered = f"Authentication-Results: {PASS}\r\n{received}".encode() + genuine.as_bytes()
    async with running(orchestrator):
        await deliver(forged, envelope_from=MALLORY)
        async with asyncio.timeout(30):
            while not (await inbox(AGENT)) or not await all_seen(AGENT):
                await asyncio.sleep(0.2)  # read and set aside
        await asyncio.to_thread(
            subprocess.run,
            [*DOVECOT, "save", "-u", AGENT, "-m", "INBOX"],
            input=delivered.replace(b"\r\n", b"\n"),
            check=True,
        )
        [reply] = await wait_for_inbox(ALICE, 1)
        await settled(orchestrator, 1)
        async with asyncio.timeout(30):
            while not await all_seen(AGENT):
                await asyncio.sleep(0.2)
        replies = await inbox(ALICE)
    assert body(reply) == "echo: Subject: hello\n\nthe real alice"
    assert len(replies) == 1
    assert "forged" not in model_saw(fake_model)


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far, in bytes (VmHWM): no sampling can miss it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def big_mail(megabytes: int) -> bytes:
    """A mail from alice (DKIM passed) with one attachment, ``megabytes`` large once encoded."""
    line = b"A" * 76 + b"\r\n"
    return b"".join(
        [
            f"Authentication-Results: {PASS}\r\nFrom: Alice <{ALICE}>\r\nTo: {AGENT}\r\n"
            f"Subject: the scan\r\nMessage-ID: <{uuid.uuid4().hex}@clawpen.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            "--B\r\nContent-Type: text/plain\r\n\r\nsee the attached scan\r\n"
            "--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: "
            "attachment; filename=scan.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode(),
            line * (megabytes * 1024 * 1024 // len(line)),
            b"--B--\r\n",
        ]
    )


async def test_a_mail_over_the_cap_is_never_read_whole_and_its_sender_is_told_the_limit(
    docker_orchestrator_factory: DockerOrchestratorFactory, mailboxes: None
) -> None:
    """The cap is 25 MB (channels/email/adapter.py MAX_MAIL_BYTES); this mail is 36 MB."""
    orchestrator, _ = docker_orchestrator_factory(**config())
    big = big_mail(36)
    async with running(orchestrator):
        await deliver(mail("warm up", subject="first"))
        await wait_for_inbox(ALICE, 1)
        await settled(orchestrator, 1)
        pid = orchestrator.channels["email"].pid  # type: ignore[attr-defined]
        assert pid is not None
        before = peak_rss(pid)
        await deliver(big)
        replies = await wait_for_inbox(ALICE, 2)
        await settled(orchestrator, 2)
        after = peak_rss(pid)
        assert orchestrator.channels["email"].pid == pid  # the same adapter process throughout
    assert after - before < 20 * 1024 * 1024, f"the adapter grew by {(after - before) >> 20} MB"
    said = [body(reply) for reply in replies if reply["Subject"] == "Re: the scan"]
    assert len(said) == 1
    assert "over the 25 MB limit for one mail" in said[0]
    assert "36.0 MB" in said[0]


# -- approval cards and files back (CONTRACT.md) ----------------------------------------------

CARD = "Approval needed: assistant wants to reach example.com:443\nUnanswered by 21:00 UTC: denied."
BUTTONS = (
    Button("Allow once", "ok-7f3k9q2m"),
    Button("Allow this host from now on", "al-7f3k9q2m"),
    Button("Deny", "no-7f3k9q2m"),
)
PDF = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"


@contextlib.asynccontextmanager
async def receiving(agent: EmailAdapter) -> AsyncIterator[list[InboundMessage]]:
    """The adapter reading the agent's mailbox; what it hands to the core, in order."""
    received: list[InboundMessage] = []

    async def accept(message: InboundMessage) -> None:
        received.append(message)

    task = asyncio.create_task(agent.run(accept))
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_card_goes_out_with_codes_and_the_code_replied_above_it_is_read_alone(
    mailboxes: None,
) -> None:
    agent = adapter()
    card_id = await agent.send(OutboundMessage(Address("email", ALICE, ""), CARD, buttons=BUTTONS))
    [card] = await wait_for_inbox(ALICE, 1)
    assert card["Message-ID"] == card_id
    assert card["Subject"] == "Approval needed: assistant wants to reach example.com:443"
    text = body(card)
    assert text.startswith(CARD)
    for label, code in [
        ("Allow once", "ok-7f3k9q2m"),
        ("Allow this host from now on", "al-7f3k9q2m"),
        ("Deny", "no-7f3k9q2m"),
    ]:
        assert f"To {label}, reply with: {code}" in text

    # Mallory writes the code in Alice's name, with no verdict of our server: never handed over
    quoted = "\n".join(f"> {line}" for line in text.splitlines())
    forged = mail("al-7f3k9q2m", subject=f"Re: {card['Subject']}", auth=[], reply_to=card)
    await deliver(forged, envelope_from=MALLORY)
    # Alice's client: the code, a signature, the attribution line, the card quoted
    answer = mail(
        f"al-7f3k9q2m\n\n-- \nAlice\n\nOn Mon, 7 Dec 2026 at 21:00, <{AGENT}> wrote:\n{quoted}\n",
        subject=f"Re: {card['Subject']}",
        reply_to=card,
    )
    await deliver(answer)
    await wait_for_inbox(AGENT, 2)
    async with receiving(agent) as received:
        async with asyncio.timeout(60):
            while not received or not await all_seen(AGENT):
                await asyncio.sleep(0.1)
    [message] = received  # the forged one was older, read first, and left out
    assert (message.text, message.sender_id) == ("al-7f3k9q2m", ALICE)
    assert message.platform_id == answer["Message-ID"]
    assert message.address.thread == card_id  # the card is the root of this thread


async def test_edit_and_a_file_go_as_replies_threaded_under_the_card(mailboxes: None) -> None:
    agent = adapter()
    to = Address("email", ALICE, "")
    card_id = await agent.send(OutboundMessage(to, CARD, buttons=BUTTONS))
    await agent.edit(to, card_id, "Allowed (from now on) by email:alice@clawpen.test.")
    photo_id = await agent.send_file(
        OutboundFile(to, "chart.png", "image/png", PNG, "the chart", reply_to=card_id)
    )
    pdf_id = await agent.send_file(
        OutboundFile(to, "form filled.pdf", "application/pdf", PDF, reply_to=card_id)
    )
    card, edited, photo, pdf = await wait_for_inbox(ALICE, 4)
    for reply in (edited, photo, pdf):
        assert reply["In-Reply-To"] == card_id
        assert reply["References"].split() == [card_id]
        assert reply["Subject"] == f"Re: {card['Subject']}"
    assert body(edited) == "Allowed (from now on) by email:alice@clawpen.test."
    assert (photo["Message-ID"], pdf["Message-ID"]) == (photo_id, pdf_id)

    assert body(photo) == "the chart"
    [image] = list(photo.iter_attachments())
    assert (image.get_content_type(), image.get_filename()) == ("image/png", "chart.png")
    assert image["Content-Transfer-Encoding"] == "base64"
    assert image.get_content() == PNG

    assert body(pdf) == "form filled.pdf is attached."  # no caption: the text names the file
    [document] = list(pdf.iter_attachments())
    assert (document.get_content_type(), document.get_filename()) == (
        "application/pdf",
        "form filled.pdf",
    )
    assert document.get_content() == PDF


async def test_a_card_edited_after_a_restart_is_still_answered_under_it(mailboxes: None) -> None:
    to = Address("email", ALICE, "")
    card_id = await adapter().send(OutboundMessage(to, CARD, buttons=BUTTONS))
    await adapter().edit(to, card_id, "Expired: nobody decided in time.")  # a fresh adapter
    _, edited = await wait_for_inbox(ALICE, 2)
    assert (edited["In-Reply-To"], edited["References"]) == (card_id, card_id)
    assert body(edited) == "Expired: nobody decided in time."


async def test_a_file_over_25_megabytes_is_refused_naming_the_limit(mailboxes: None) -> None:
    huge = OutboundFile(
        Address("email", ALICE, ""), "big.pdf", "application/pdf", bytes(25 * MB + 1)
    )
    with pytest.raises(SendError) as refused:
        await adapter().send_file(huge)
    assert refused.value.permanent and "25 MB limit" in str(refused.value)
    assert await inbox(ALICE) == []
