"""Value types shared by the orchestrator's modules.

A conversation is an ``Address``: the channel, the chat in it, and the thread inside that chat
(a Slack thread, an e-mail thread, a forum topic), so that a reply lands where the question was.
Pairings name a chat (``telegram:123``); the thread only says where in it to answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Address:
    channel: str  # "telegram", "cli", ...
    chat: str  # the platform's chat / conversation / channel id
    thread: str = ""  # "" when the platform has no thread or the message was not in one

    @classmethod
    def parse(cls, text: str) -> Address:
        """``telegram:123`` -> ``Address("telegram", "123")``: the one reading of a chat written
        as text, at the edges (the config, the CLI, an agent's tool call); inside, an address
        stays an ``Address``. ValueError when ``text`` is not ``PLATFORM:CHAT_ID``."""
        channel, colon, chat = text.strip().partition(":")
        if not colon or not channel or not chat:
            raise ValueError(
                f"{text!r} is not a chat address; write it as PLATFORM:CHAT_ID, for example"
                " telegram:123456789"
            )
        return cls(channel, chat)

    @property
    def chat_only(self) -> Address:
        """The chat without its thread: what a pairing names."""
        return Address(self.channel, self.chat) if self.thread else self

    @property
    def chat_address(self) -> str:
        """``channel:chat``: how a chat is written for people (the CLI, logs) and stored."""
        return f"{self.channel}:{self.chat}"

    def __str__(self) -> str:
        """The conversation key: ``channel:chat``, or ``channel:chat:thread`` in a thread."""
        return f"{self.chat_address}:{self.thread}" if self.thread else self.chat_address


def serves(agent_id: str, address: Address, pairings: Mapping[Address, str]) -> bool:
    """Whether ``agent_id`` may write to ``address`` now: its chat is paired with it (the CLI's
    chat id names its agent). Checked again whenever a job fires or an answer is committed,
    not only when the job was made: a pairing can change in between."""
    if address.channel == "cli":
        return address.chat == agent_id
    return pairings.get(address.chat_only) == agent_id


@dataclass(frozen=True)
class Attachment:
    """A file sent with a message, as the adapter downloaded it (at most
    ``channels.base.MAX_ATTACHMENT_BYTES``). The agent finds it in ``/workspace/inbox/``."""

    name: str  # the file name the sender gave it (cleaned by the core before use)
    media_type: str  # "image/png", "application/pdf", ...
    data: bytes


@dataclass(frozen=True)
class InboundMessage:
    """A chat message as every channel hands it over, before anything is decided about it."""

    address: Address
    sender_id: str
    text: str
    platform_id: str  # the platform's own message id: the key for dropping duplicates
    received_at: float
    reply_to: str = ""  # platform id of the message this one answers, if any
    attachments: tuple[Attachment, ...] = ()
    # False for a message in a group channel that does not mention the bot: it reaches the
    # agent only when the pairing says to listen to everything (``mentions_only: false``)
    addressed: bool = True


MAX_BUTTON_DATA = 64  # bytes of a button's data, UTF-8: Telegram's callback_data limit
MAX_BUTTON_LABEL = 64  # characters of a button's label


@dataclass(frozen=True)
class Button:
    """A button under a message (an approval card's). ``data`` is an opaque id the store maps
    to (request, choice): never the decision nor the action, and short enough (at most
    ``MAX_BUTTON_DATA`` bytes) for a person to type it where a platform has no buttons."""

    label: str
    data: str


@dataclass(frozen=True)
class CardTap:
    """Someone pressed a button (or typed its data) in a chat. ``sender_id`` is the platform's
    word on who did it, never anything the bot itself wrote into the message."""

    address: Address
    sender_id: str
    data: str
    platform_id: str  # of the card message, as ``send`` returned it ("" when typed)


@dataclass(frozen=True)
class TapOutcome:
    """The core's answer to a tap: a short ``notice`` for the tapper, and the card's new text
    (empty: the card stays as it is)."""

    notice: str = ""
    card: str = ""


@dataclass(frozen=True)
class OutboundMessage:
    """What a channel is asked to deliver: one platform message's worth of text, with buttons
    under it when it is a card.

    ``reply_to`` quotes the user's message where the platform can; adapters receive one object
    rather than loose arguments, so that fields can be added."""

    address: Address
    text: str
    reply_to: str = ""
    # the same for every try at this chunk: platforms that take an idempotency key (Discord's
    # nonce) drop a second copy when a try we thought failed had in fact got through
    key: str = ""
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True)
class OutboundFile:
    """A file an agent sends back (``send_file``), as a channel is asked to deliver it: the
    bytes came over the agent's door and were checked there (size, name, media type); the
    host never opened a path the agent named."""

    address: Address
    name: str  # a plain file name, cleaned by the core
    media_type: str  # sniffed from the bytes or from the name's extension, never the agent's word
    data: bytes
    caption: str = ""
    reply_to: str = ""


@dataclass(frozen=True)
class DeliveryStatus:
    """What a platform said later about a message we sent (WhatsApp's status webhooks)."""

    chat: str
    platform_id: str  # the id ``send`` returned for it
    status: str  # "sent" | "delivered" | "read" | "failed"
    error: str = ""  # why it failed, in the platform's words
    window_closed: bool = False  # refused because the chat's reply window (24 h) had closed


@dataclass(frozen=True)
class Route:
    agent_id: str


@dataclass(frozen=True)
class Rejection:
    reason: str  # for the log
    answer: str | None = None  # for the sender, when they may hear from us (a paired chat)
    # not for the agent at all (chatter in a group channel that does not mention the bot):
    # neither stored nor answered nor counted as a stranger
    ignored: bool = False


Decision = Route | Rejection


@dataclass(frozen=True)
class Reply:
    """An answer committed to the store and waiting to be delivered."""

    id: int
    task_id: int
    address: Address
    text: str
    reply_to: str = ""
    attempts: int = 0
    chunks_sent: int = 0
    next_attempt_at: float = 0.0  # not to be tried before this Unix time (a 429's wait)
    owner: str | None = None  # the orchestrator delivering it, while its lease runs
    lease_until: float = 0.0
    stranger: bool = False  # an answer to an unpaired chat (a pairing code): paced apart
    buttons: tuple[Button, ...] = ()  # an approval card's, under its last chunk
    has_file: bool = False  # a file an agent sent (``send_file``): ``text`` is its caption


@dataclass(frozen=True)
class ClaimedTask:
    """A batch of queued messages of one conversation, claimed for one agent turn.

    ``attempts`` counts the agent's tries (a container that died takes one); ``resumes``
    counts the times it was taken over after its orchestrator died holding it: a task that
    keeps killing the process is given up, not resumed for ever."""

    id: int
    agent_id: str
    address: Address
    senders: tuple[str, ...]
    texts: tuple[str, ...]
    attempts: int
    resumes: int = 0
    reply_to: str = ""
    resumed: bool = False  # claimed again after its owner died without finishing it
    platform_ids: tuple[str, ...] = ()  # of the messages, in order: for the log
    has_files: bool = False  # some message came with files (``Store.task_files``)


@dataclass(frozen=True)
class TaskFile:
    """A file sent with one of a task's messages, as stored until the agent has it."""

    platform_id: str  # of the message it came with
    name: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Stranger:
    """What is kept of a message from an unpaired chat: who, when, how much. Never its text."""

    address: Address
    sender_id: str
    size: int
    received_at: float


@dataclass(frozen=True)
class ChannelState:
    """How an adapter is doing, for ``clawpen status``."""

    name: str
    state: str  # starting | running | restarting | disabled
    error: str = ""
    restarts: int = 0


JOB_CHANNEL = "job"  # the conversation of a job's runs: Address("job", name), never a chat's


@dataclass(frozen=True)
class JobSpec:
    """A scheduled job as defined (config file, CLI or an agent's tool): what, when, where to."""

    name: str
    agent_id: str
    kind: str  # cron | every | at (``schedule.Schedule``)
    spec: str
    timezone: str
    task: str
    deliver_to: Address  # where the answer goes: a chat paired with the agent
    misfire: str = "run_once"  # run_once | skip
    max_failures: int = 5  # consecutive failed runs before the job pauses itself
    source: str = "cli"  # config | cli | agent


@dataclass(frozen=True)
class Job:
    """A job as the store holds it: its spec and where it stands."""

    spec: JobSpec
    state: str  # active | paused | done
    next_run: float | None  # UTC epoch
    failures: int  # consecutive failed runs
    running: bool  # a run of it is queued or in progress (it never overlaps itself)
    paused_reason: str = ""
    last_status: str = ""  # ok | failed | skipped
    last_error: str = ""
    last_run_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class JobRun:
    """One firing of a job, from being queued as a task to its answer."""

    id: int
    job: str
    scheduled_for: float
    fired_at: float
    status: str  # running | ok | failed | skipped
    error: str = ""
    finished_at: float | None = None
    manual: bool = False  # ``clawpen jobs run-now``


@dataclass(frozen=True)
class JobFiring:
    """The scheduler's decision on one due job, for the store to carry out atomically: only if
    the job is still due at ``due`` (nobody fired it meanwhile)."""

    agent_id: str
    name: str
    due: float | None  # the next_run it was found with; None: run now, whenever it is due
    run: bool
    next_run: float | None


@dataclass(frozen=True)
class Approval:
    """A request for a person's decision on one exact action of an agent (issue 18)."""

    id: int
    code: str  # the card's id; its buttons carry ok-CODE, al-CODE, no-CODE
    agent_id: str
    task_id: int | None
    kind: str  # send_message | web_fetch | egress | jobs | mounts
    args: str  # canonical JSON
    action_hash: str
    summary: str
    chat: str  # the conversation the task came from
    approvers: tuple[str, ...]  # chat addresses
    status: str  # pending | allowed | denied | expired
    created_at: float
    expires_at: float
    choice: str = ""  # once | always
    decided_by: str = ""
    how: str = ""
    decided_at: float | None = None
    used_at: float | None = None


@dataclass(frozen=True)
class Verdict:
    """What became of a request for approval, as the waiting tool call hears it."""

    outcome: str  # approved | denied | expired
    by: str = ""  # who decided (a chat address, "cli", "dashboard")
    choice: str = ""  # once | always (egress: this host from now on)
    approval_id: int = 0
    first: bool = True  # False: a re-run found it already carried out

    @property
    def approved(self) -> bool:
        return self.outcome == "approved"

    def __str__(self) -> str:
        """ "approved", "denied by NAME" or "expired": what the agent is told."""
        if self.outcome == "denied":
            return f"denied by {self.by}" if self.by else "denied"
        return self.outcome
