"""The store seam: what the orchestrator records, as awaitable named operations.

Nothing above this interface writes SQL or knows which database holds the rows; SQLite
(``sqlite/``) is the one implementation today, and a PostgreSQL one can join it without
touching the message path. Times come in as arguments (``now``), never from inside the store.

The message path is a handful of state changes:

    inbound message:  queued -> claimed (into a task) -> answered | rejected
    task:             running (owner, lease) -> done | failed
                      running again, resumes + 1, when its owner's lease ran out (a crash)
    reply:            pending (owner, lease, next_attempt_at) -> sent | failed
    stranger:         recorded (who, when, size; never the text) -> expired
    command:          an inbound /new, /stop, /usage, /help: answered at once, in the same
                      transaction as its reply (and, for /new, the chat's next session number)
    job:              active (next_run) -> paused (by hand, after max_failures, or when its
                      chat left its agent) | done (`at`); named per agent: (agent, name)
    job run:          running (queued as a message of conversation job:NAME) -> ok | failed;
                      or skipped (misfire: skip; chat unpaired); one running run per job

Claimed work carries an owner and a lease: an orchestrator takes a task or a reply only when
nobody holds a live lease on it, so two orchestrators on one database never run the same task
or send the same reply.

Two kinds of failure, because they need opposite handling:

* ``StoreUnavailable``: the database cannot be written now (disk full, locked, I/O error).
  The same write will succeed later; callers hold their work and retry (``retry.STORE``).
* ``StoreRejected``: this write can never succeed (a bug, a value the database refuses).
  Retrying it would wedge its caller for ever; the work it belongs to is failed instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import StoreError, StoreRejected, StoreUnavailable
from ..models import (
    Address,
    Approval,
    Button,
    ClaimedTask,
    Decision,
    DeliveryStatus,
    InboundMessage,
    Job,
    JobFiring,
    JobRun,
    JobSpec,
    OutboundFile,
    Reply,
    Stranger,
    TaskFile,
)
from ..obs.logging import get_logger
from ..retry import STORE, until_done

__all__ = ["Lease", "Store", "StoreError", "StoreRejected", "StoreUnavailable", "until_written"]
T = TypeVar("T")


@dataclass(frozen=True)
class Lease:
    """``owner`` may act on what it claims until ``until`` (a Unix time), unless it renews."""

    owner: str
    until: float


@dataclass(frozen=True)
class RecentMessage:
    """A message as the dashboard lists it (its text clipped)."""

    id: int
    channel: str
    chat: str
    sender: str
    text: str
    received_at: float
    status: str
    agent_id: str | None


@dataclass(frozen=True)
class RecentTask:
    """A task as the dashboard lists it."""

    id: int
    agent_id: str
    channel: str
    chat: str
    status: str
    created_at: float
    finished_at: float | None
    error: str | None


@dataclass(frozen=True)
class UsageRow:
    """One agent's model use on one UTC day, one model (``clawpen usage``)."""

    day: str  # YYYY-MM-DD
    agent_id: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    usd: float
    estimated: int  # calls whose usage was not known, charged at their reservation


@dataclass(frozen=True)
class StrangerChat:
    """An unpaired chat that wrote to a bot: how often, by whom, and when last."""

    chat: str  # platform:chat_id, as `clawpen pair` takes it
    messages: int
    senders: int
    last_sender: str
    last_seen: float


class Store(Protocol):
    # -- inbound -------------------------------------------------------------------------------

    async def record_inbound(
        self, message: InboundMessage, decision: Decision, lease: Lease, now: float
    ) -> int | None:
        """Commit a message with its routing decision; ``None`` if it was seen before. A refusal
        with an answer commits that answer as a pending reply in the same transaction."""

    async def record_command(
        self,
        message: InboundMessage,
        agent_id: str,
        answer: str,
        new_session: bool,
        lease: Lease,
        now: float,
    ) -> int | None:
        """Commit an in-chat command with its answer (and, with ``new_session``, move the
        chat to its next session); None for a duplicate."""
        ...

    async def session_number(self, agent_id: str, conversation: str) -> int:
        """The chat's current session (0 until its first /new)."""
        ...

    async def record_stranger(self, stranger: Stranger) -> None:
        """Who wrote from an unpaired chat, when and how much: never what."""

    async def expire_strangers(self, before: float) -> int:
        """Forget strangers recorded before ``before``; returns how many."""

    async def stranger_chats(self, since: float) -> list[StrangerChat]:
        """The unpaired chats that wrote since ``since``, latest first: what an owner needs to
        pair one (``clawpen pairings --pending``)."""

    # -- tasks ---------------------------------------------------------------------------------

    async def claim_next_task(self, agent_id: str, lease: Lease, now: float) -> ClaimedTask | None:
        """The agent's next task: first one whose owner's lease ran out (resumed, resumes + 1),
        else every queued message of its oldest waiting conversation that has no task at work
        (so that one conversation's tasks run in order), batched into a new one."""

    async def task_files(self, task_id: int) -> list[TaskFile]:
        """The files of the task's messages, in the order they came (kept until it ends)."""

    async def retry_task(self, task_id: int, lease: Lease) -> int:
        """Count one more attempt at a task; returns the attempt number."""

    async def finish_task(
        self, task_id: int, text: str, error: str | None, lease: Lease, now: float
    ) -> Reply | None:
        """Close a task and commit its reply in one transaction: no answer without a reply row.
        The reply is leased to the finisher, who is about to deliver it. ``None`` when the task
        is no longer ``lease.owner``'s: whoever holds it now answers it."""

    async def record_agent_message(
        self, agent_id: str, address: Address, text: str, lease: Lease, now: float
    ) -> Reply | None:
        """Commit a message an agent sends on its own (``send_message``) as a reply to
        ``address``, behind a finished task of its own: the outbox delivers it as any reply.
        None, committing nothing, when ``address`` is no longer paired with the agent."""

    async def record_agent_file(
        self, agent_id: str, file: OutboundFile, lease: Lease, now: float, once: str | None = None
    ) -> Reply | None:
        """Commit a file an agent sends back (``send_file``) as a reply to ``file.address``
        (its caption the reply's text), as ``record_agent_message`` does a message. None,
        committing nothing, when the address is no longer paired with the agent. A file with
        the ``once`` key of one committed before is that one's reply, committed again never."""

    async def reply_file(self, reply: Reply) -> OutboundFile | None:
        """The file a reply with ``has_file`` carries, as the channel is to be given it."""

    async def release_task(self, task_id: int, owner: str) -> None:
        """Give a running task back (the orchestrator is stopping, not crashing): its next
        start is not counted as a resume."""

    async def renew_leases(self, lease: Lease) -> None:
        """Extend every lease ``lease.owner`` holds to ``lease.until``."""

    async def release_leases(self, owner: str | None = None) -> int:
        """End the leases of ``owner`` (``None``: everyone's; only for a store that one
        orchestrator holds exclusively, at start, when every other owner is known dead)."""

    # -- replies -------------------------------------------------------------------------------

    async def pending_replies(self, channel: str) -> list[Reply]:
        """Every reply of ``channel`` not yet sent or given up, oldest first."""

    async def claim_reply(
        self, reply_id: int, chunk: int, lease: Lease, claim: str, now: float
    ) -> bool:
        """Take a pending reply for one delivery, named ``claim``, starting at ``chunk``: only
        while it is still pending, still at that chunk, and nobody holds a live claim or lease
        on it. A delivery started from a stale read (the chunk was sent meanwhile, or another
        delivery holds it) gets False and must not send."""

    async def record_chunk_sent(
        self, reply_id: int, claim: str, chunk: int, platform_id: str, done: bool, now: float
    ) -> bool:
        """Chunk ``chunk`` reached the platform; ``done`` when it was the last. The claim goes
        on to the next chunk in the same write. False when ``claim`` no longer holds the reply
        at that chunk: the delivery must stop."""

    async def release_reply(self, reply_id: int, claim: str) -> None:
        """End ``claim`` on the reply (a delivery that stopped before its end), if it holds."""

    async def record_delivery_status(
        self, channel: str, status: DeliveryStatus, now: float
    ) -> None:
        """What the platform said later about a sent message (never moves back)."""

    async def delivery_failures(self, since: float) -> dict[str, tuple[int, str]]:
        """Per channel: replies given up since then (refused, or failed by the platform after
        it took them), and the last error."""

    async def record_send_failure(
        self,
        reply_id: int,
        claim: str,
        error: str,
        final: bool,
        next_attempt_at: float,
        counted: bool = True,
    ) -> None:
        """A delivery attempt under ``claim`` failed, and the claim ends; ``final`` gives the
        reply up, else it is due again at ``next_attempt_at``. ``counted``: it counts against
        the reply's attempts (not when the whole platform is down: that is the circuit
        breaker's to wait out)."""

    # -- agents, usage, pairings ---------------------------------------------------------------

    async def set_agent_state(
        self, agent_id: str, state: str, container_id: str | None, now: float
    ) -> None: ...

    async def record_usage(
        self,
        agent_id: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        now: float,
        usd: float = 0.0,
        estimated: bool = False,
    ) -> None: ...

    async def tokens_used_since(self, agent_id: str, since: float) -> int: ...

    async def spent_since(self, agent_id: str, since: float) -> tuple[int, float]:
        """Tokens (input + output) and US dollars charged to the agent since then."""

    async def usage_by_day(self, since: float, agent_id: str | None = None) -> list[UsageRow]:
        """Per UTC day, agent and model, oldest first."""

    async def recent_messages(self, limit: int) -> list[RecentMessage]:
        """The newest inbound messages, newest first (the dashboard)."""

    async def recent_tasks(self, limit: int) -> list[RecentTask]:
        """The newest tasks, newest first (the dashboard)."""

    async def outbox_depth(self) -> dict[str, int]:
        """Replies not yet delivered (pending), per channel (a metric)."""

    async def sync_config_pairings(self, pairings: Mapping[Address, str], now: float) -> None:
        """Make the config file's pairings exactly those with source 'config'."""

    async def pair(self, address: Address, agent_id: str, now: float) -> None: ...

    async def offer_pairing_code(
        self,
        message: InboundMessage,
        code_hash: str,
        answer: str,
        lease: Lease,
        now: float,
        ttl: float,
        every: float,
    ) -> bool:
        """Record a one-time code for the message's chat with the reply carrying it, unless the
        chat got one within ``every`` seconds (then False); the stranger's text is not kept."""

    async def approve_pairing_code(
        self, code_hash: str, agent_id: str, welcome: str, lease: Lease, now: float
    ) -> Address | None:
        """Pair the code's chat with ``agent_id`` and commit ``welcome`` to it; the chat, or
        None (unknown, used, expired)."""

    async def pending_pairing_codes(self, now: float) -> list[tuple[str, float]]:
        """(chat, expires_at) of the codes not approved yet."""

    async def unpair(self, address: Address) -> bool: ...

    async def pairings(self) -> dict[Address, str]: ...

    # -- scheduled jobs -------------------------------------------------------------------------

    async def sync_config_jobs(
        self, jobs: list[tuple[JobSpec, float | None]], now: float
    ) -> dict[str, list[str]]:
        """Make the config file's jobs exactly these (with their first runs, for new or changed
        ones); a job that stays keeps its history. Returns the names added, changed, removed."""

    async def add_job(self, job: JobSpec, next_run: float | None, now: float) -> bool:
        """False if the agent has a job of that name (another agent's name is no clash)."""

    async def remove_job(self, agent_id: str, name: str) -> bool:
        """Remove the agent's job and its finished runs."""

    async def jobs(self, agent_id: str | None = None) -> list[Job]: ...

    async def set_job_state(
        self, agent_id: str, name: str, state: str, next_run: float | None, reason: str = ""
    ) -> bool:
        """Pause or resume (which clears the failure count); ``next_run`` if given."""

    async def due_jobs(self, now: float, limit: int) -> list[Job]:
        """Active jobs due by ``now`` with no run going, the most overdue first."""

    async def next_due(self) -> float | None:
        """When the next active job without a run going is due."""

    async def fire_jobs(self, firings: list[JobFiring], now: float) -> list[tuple[str, str]]:
        """In one transaction, for each job still as decided: record the run, queue it as a
        message of the job's conversation, advance next_run. Returns (job, agent) fired. A job
        whose deliver_to is no longer paired with its agent is paused instead, saying why."""

    async def job_runs(self, agent_id: str, name: str, limit: int = 20) -> list[JobRun]:
        """The job's latest runs, newest first."""

    # -- approvals (issue 18) --------------------------------------------------------------------

    async def open_approval(
        self,
        request: Approval,
        cards: list[tuple[Address, str, tuple[Button, ...]]],
        lease: Lease,
        now: float,
    ) -> tuple[Approval, bool]:
        """The same task's request for the same action (a re-run finds its decision), else
        ``request`` committed with its cards (replies with buttons); True when new."""

    async def approval(self, approval_id: int) -> Approval | None: ...

    async def approval_by_code(self, code: str) -> Approval | None: ...

    async def approvals(self, pending_only: bool = True, limit: int = 100) -> list[Approval]:
        """Newest first."""

    async def decide_approval(
        self, approval_id: int, status: str, choice: str, by: str, how: str, now: float
    ) -> Approval | None:
        """Decide a pending request (a person's only before it expires); None: no change."""

    async def use_approval(self, approval_id: int, now: float) -> bool:
        """Mark an allowed request carried out; True only the first time."""

    async def approval_cards(self, approval_id: int) -> list[tuple[Address, str]]:
        """(chat, platform id of the card, "" if not yet sent) of a request's cards."""

    async def egress_allowed(self, agent_id: str | None = None) -> list[tuple[str, str, float]]:
        """(agent, host:port, since) allowed from now on."""

    async def revoke_egress(self, agent_id: str, host_port: str) -> bool: ...

    # -- reading, for status and tests ---------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Row counts by table and status, e.g. ``{"messages.queued": 3}``."""

    async def replies_for(self, address: Address) -> list[Reply]: ...

    async def take_unread(self, address: Address) -> list[str]:
        """The replies a chat session took while nobody was reading it (the CLI channel sent
        them with a platform id ``unread:...``), oldest first; marked read as they are taken."""

    async def close(self) -> None: ...


async def until_written(write: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry a write while the store is unavailable (a full disk) for as long as it takes: it
    records work already done, which must be neither lost nor done again. A write the store
    rejects for good is raised at once (``StoreRejected``)."""

    def report(exc: BaseException, delay: float) -> None:
        get_logger().error("store_unwritable", what=what, error=str(exc), retryIn=delay)

    return await until_done(write, StoreUnavailable, STORE, report)
