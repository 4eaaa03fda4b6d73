"""Approvals: an action that leaves the sandbox waits for a person's tap, bound to the exact
action (issue 18).

The tools that carry out an agent's actions (``tools/``), the egress proxy and the mounts call
``Approvals.request`` in the orchestrator, where the agent cannot skip it. A request is stored
with the hash of the exact action (agent, kind, canonical arguments) and the task that asked:
a re-run of the task finds its request and the decision, so what was allowed is carried out
once, and a changed argument is a new request. Its cards go to the approvers' chats through the
outbox (a reply with buttons: durable, retried, in order). The buttons carry an opaque code,
never the decision or the action; the code maps to (request, choice) here.

A decision counts only from an approver, by the platform's word on who tapped
(``may_decide``), only while the request is pending and before it expires; nothing an agent
sends is ever read as one. While a tool call waits, the task's deadline moves on and the chat
shows the card instead of "typing...".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from clawpen_agent.protocol import AGENT_UID

from ..channels.base import Channel, edit_card
from ..config import Settings
from ..errors import ClawpenError
from ..models import (
    JOB_CHANNEL,
    Address,
    Approval,
    Button,
    CardTap,
    ClaimedTask,
    TapOutcome,
    Verdict,
)
from ..obs.logging import get_logger
from ..runtime import staging
from ..runtime.mounts import MountRequest, resolve_request
from ..store import Store, until_written
from ..threads import run_in
from .board import Board, Leases
from .outbox import Outbox

STAGING_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="clawpen-staging")
CODE_LETTERS = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: a person may type it
CODE = re.compile(r"(ok|al|no)-([a-hjkmnp-z2-9]{8})")
CHOICES = {"ok": ("allowed", "once"), "al": ("allowed", "always"), "no": ("denied", "")}
PREVIEW = 300  # characters of a message's text on its card
ONCE = ("send_message", "jobs", "mounts", "egress", "mcp")  # carried out once per decision
ANSWERS = {"allowed": "Allowed.", "denied": "Denied.", "expired": "Expired."}


def canonical(args: Mapping[str, object]) -> str:
    """The one JSON of an action's arguments: its hash and what is carried out."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def action_hash(agent_id: str, kind: str, args: str) -> str:
    return hashlib.sha256(json.dumps([agent_id, kind, args]).encode()).hexdigest()


def new_code() -> str:
    return "".join(secrets.choice(CODE_LETTERS) for _ in range(8))


def buttons_for(kind: str, code: str) -> tuple[Button, ...]:
    """Each button its own data; egress offers "from now on" as well."""
    if kind == "egress":
        return (
            Button("Allow once", f"ok-{code}"),
            Button("Allow this host from now on", f"al-{code}"),
            Button("Deny", f"no-{code}"),
        )
    return (Button("Allow", f"ok-{code}"), Button("Deny", f"no-{code}"))


def may_decide(approvers: tuple[str, ...], tap: CardTap) -> str | None:
    """The approver a tap comes from, or None. The platform names who tapped
    (``tap.sender_id``): it counts when that is an approver's own chat id on the same
    platform (a private chat's id is its person's: Telegram, WhatsApp, e-mail). In the CLI the
    chat is the owner's terminal, reached over the owner-only admin socket."""
    for approver in approvers:
        chat = Address.parse(approver)
        if chat.channel != tap.address.channel:
            continue
        if tap.sender_id == chat.chat:
            return approver
        if chat.channel == "cli" and tap.address.chat == chat.chat:
            return approver
    return None


def card_text(agent_id: str, summary: str, chat: str, expires_at: float) -> str:
    when = time.strftime("%H:%M UTC", time.gmtime(expires_at))
    origin = f" (for {chat})" if chat else ""
    return f"Approval needed: {agent_id}{origin} wants to {summary}\nUnanswered by {when}: denied."


def decided_text(approval: Approval) -> str:
    card = card_text(approval.agent_id, approval.summary, approval.chat, approval.expires_at)
    head = card.rsplit("\n", 1)[0]
    if approval.status == "expired":
        return f"{head}\nExpired: nobody decided in time."
    how = " (from now on)" if approval.choice == "always" else ""
    verb = "Allowed" if approval.status == "allowed" else "Denied"
    return f"{head}\n{verb}{how} by {approval.decided_by}."


def describe_approval(approval: Approval) -> dict[str, object]:
    """A request as the CLI and the dashboard show it (plain JSON)."""
    return {
        "id": approval.id,
        "agent": approval.agent_id,
        "kind": approval.kind,
        "summary": approval.summary,
        "chat": approval.chat,
        "approvers": list(approval.approvers),
        "status": approval.status,
        "choice": approval.choice,
        "decided_by": approval.decided_by,
        "how": approval.how,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_at": approval.decided_at,
        "carried_out": approval.used_at is not None,
    }


def verdict(approval: Approval, first: bool = True) -> Verdict:
    outcome = {"allowed": "approved", "denied": "denied"}.get(approval.status, "expired")
    return Verdict(outcome, approval.decided_by, approval.choice, approval.id, first)


def _card_chat(approver: str, origin: Address | None) -> Address:
    """Where an approver's card goes: the task's own conversation (its thread, the CLI's
    session) when the approver is the chat the task came from."""
    if origin is not None and approver == origin.chat_only.chat_address:
        return origin
    return Address.parse(approver)


class Approvals:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        outbox: Outbox,
        channels: Mapping[str, Channel],
        board: Board,
        leases: Leases,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.channels = channels
        self.board = board
        self.leases = leases
        self.clock = clock
        self.log = get_logger()
        self._decided: dict[int, asyncio.Event] = {}
        self._waiters: dict[int, int] = {}
        self._edits: set[asyncio.Task[None]] = set()

    def asks(self, agent_id: str, kind: str) -> bool:
        """Whether ``kind`` of the agent's actions waits for a person."""
        try:
            return kind in self.settings.agent(agent_id).approvals.ask
        except KeyError:
            return False

    # -- asking --------------------------------------------------------------------------------

    async def request(
        self,
        agent_id: str,
        kind: str,
        args: Mapping[str, object],
        summary: str,
        task_id: int | None = None,
    ) -> Verdict:
        """Ask the approvers about this exact action and wait for their decision (up to the
        agent's ``approvals.timeout``). The same task asking again about the same action gets
        the same request, and its decision. ``task_id``: the task that asks (its chat is the
        default approver); without it (egress), the agent's oldest task at work."""
        config = self.settings.agent(agent_id).approvals
        running = self._task_of(agent_id, task_id)
        origin = running.address if running is not None else None
        if origin is not None and origin.channel == JOB_CHANNEL:
            origin = None  # a job's run: its deliver_to is no person's chat to ask
        approvers = tuple(config.approvers) or (
            (origin.chat_only.chat_address,) if origin is not None else ()
        )
        if not approvers:
            self.log.warning("approval_unaskable", agentId=agent_id, kind=kind)
            return Verdict("denied", "nobody (no approver to ask: set approvals.approvers)")
        now = self.clock()
        args_json = canonical(args)
        code = new_code()
        request = Approval(
            id=0,
            code=code,
            agent_id=agent_id,
            task_id=running.id if running is not None else None,
            kind=kind,
            args=args_json,
            action_hash=action_hash(agent_id, kind, args_json),
            summary=summary,
            chat=origin.chat_address if origin is not None else "",
            approvers=approvers,
            status="pending",
            created_at=now,
            expires_at=now + config.timeout,
        )
        text = card_text(agent_id, summary, request.chat, request.expires_at)
        buttons = buttons_for(kind, code)
        cards = [
            (
                origin
                if origin is not None and chat == origin.chat_only.chat_address
                else Address.parse(chat),
                text,
                buttons,
            )
            for chat in approvers
        ]
        approval, new = await until_written(
            lambda: self.store.open_approval(request, cards, self.leases.lease(now), now),
            "approval",
        )
        if new:
            self.log.info(
                "approval_requested",
                approvalId=approval.id,
                agentId=agent_id,
                kind=kind,
                approvers=list(approvers),
                expiresAt=approval.expires_at,
            )
            for chat, _, _ in cards:
                self.outbox.notify(chat.channel)
        approval = await self._wait(approval, running.id if running is not None else None)
        first = True
        if approval.status == "allowed" and kind in ONCE:
            first = await until_written(
                lambda: self.store.use_approval(approval.id, self.clock()), "approval use"
            )
        return verdict(approval, first)

    def _task_of(self, agent_id: str, task_id: int | None) -> ClaimedTask | None:
        tasks = self.board.running.get(agent_id, {})
        if task_id is not None and task_id in tasks:
            return tasks[task_id]
        at_work = self.board.at_work(agent_id)
        return at_work[0] if at_work else None

    async def _wait(self, approval: Approval, task_id: int | None) -> Approval:
        """Wait for the decision; meanwhile the waiting task (``task_id``) shows the card
        instead of "typing...", and its deadline moves by the time it waits."""
        if approval.status != "pending":
            return approval
        event = self._decided.setdefault(approval.id, asyncio.Event())
        self._waiters[approval.id] = self._waiters.get(approval.id, 0) + 1
        task = -1 if task_id is None else task_id  # -1: no task of ours (nothing to move)
        self.board.awaiting[task] = self.board.awaiting.get(task, 0) + 1
        began = self.clock()
        allowance = max(0.0, approval.expires_at - began)
        self.board.extend(task, allowance)
        try:
            while approval.status == "pending":
                left = approval.expires_at - self.clock()
                try:
                    async with asyncio.timeout(max(0.0, left)):
                        await event.wait()
                except TimeoutError:
                    await self._expire(approval)
                event.clear()
                found = await until_written(partial(self.store.approval, approval.id), "approval")
                assert found is not None
                approval = found
            return approval
        finally:
            self.board.awaiting[task] -= 1
            if not self.board.awaiting[task]:
                del self.board.awaiting[task]
            self._waiters[approval.id] -= 1
            if not self._waiters[approval.id]:  # the last one waiting on it (two connections
                del self._waiters[approval.id]  # may wait on one egress request)
                self._decided.pop(approval.id, None)
            self.board.extend(task, -max(0.0, allowance - (self.clock() - began)))

    async def _expire(self, approval: Approval) -> None:
        expired = await until_written(
            lambda: self.store.decide_approval(
                approval.id, "expired", "", "", "timeout", self.clock()
            ),
            "approval",
        )
        if expired is not None:
            self._announce(expired, skip=None)

    # -- deciding ------------------------------------------------------------------------------

    async def tap(self, tap: CardTap) -> TapOutcome:
        """A button pressed (or its code typed) in a chat: a decision if it is an approver's on
        a request still open, else a notice for the tapper and nothing changed."""
        found = CODE.fullmatch(tap.data.strip())
        approval = None if found is None else await self.store.approval_by_code(found[2])
        context = {"channel": tap.address.channel, "chat": tap.address.chat}
        if found is None or approval is None:
            return TapOutcome("This card is not known here.", "")
        who = may_decide(approval.approvers, tap)
        if who is None:
            self.log.warning(
                "approval_tap_refused", approvalId=approval.id, sender=tap.sender_id, **context
            )
            return TapOutcome("Not yours to decide.", "")
        if approval.status == "pending" and approval.expires_at <= self.clock():
            await self._expire(approval)
            approval = await self.store.approval(approval.id) or approval
        if approval.status != "pending":
            return TapOutcome(f"Already decided: {approval.status}.", "")
        status, choice = CHOICES[found[1]]
        if choice == "always" and approval.kind != "egress":
            choice = "once"
        how = "code" if not tap.platform_id else "tap"
        decided = await self.store.decide_approval(
            approval.id, status, choice, who, f"{tap.address.channel} {how}", self.clock()
        )
        if decided is None:
            return TapOutcome("Already decided.", "")
        self._announce(decided, skip=tap.address.chat_only)
        return TapOutcome(ANSWERS[decided.status], decided_text(decided))

    async def decide(self, approval_id: int, allow: bool, by: str, how: str) -> Approval:
        """A decision from the CLI or the dashboard (the owner's, behind their own guards)."""
        approval = await self.store.approval(approval_id)
        if approval is None:
            raise ClawpenError(f"no approval request {approval_id}", "see: clawpen approvals list")
        if approval.status == "pending" and approval.expires_at <= self.clock():
            await self._expire(approval)
        status = "allowed" if allow else "denied"
        decided = await self.store.decide_approval(
            approval_id, status, "once" if allow else "", by, how, self.clock()
        )
        if decided is None:
            now = await self.store.approval(approval_id)
            state = now.status if now is not None else "gone"
            raise ClawpenError(f"approval {approval_id} is {state} already", "nothing to do")
        self._announce(decided, skip=None)
        return decided

    async def pending(self) -> list[Approval]:
        """The requests still waiting (overdue ones expired on the way)."""
        waiting = []
        for approval in await self.store.approvals(pending_only=True):
            if approval.expires_at <= self.clock():
                await self._expire(approval)
            else:
                waiting.append(approval)
        return waiting

    def _announce(self, approval: Approval, skip: Address | None) -> None:
        """Log the decision, wake the tool call waiting for it, and show it on every card
        (but the tapper's, which its answer shows)."""
        self.log.info(
            "approval_decided",
            approvalId=approval.id,
            agentId=approval.agent_id,
            kind=approval.kind,
            status=approval.status,
            choice=approval.choice,
            by=approval.decided_by,
            how=approval.how,
        )
        event = self._decided.get(approval.id)
        if event is not None:
            event.set()
        task = asyncio.create_task(self._edit_cards(approval, skip))
        self._edits.add(task)
        task.add_done_callback(self._edits.discard)

    async def _edit_cards(self, approval: Approval, skip: Address | None) -> None:
        text = decided_text(approval)
        with contextlib.suppress(Exception):
            cards = await self.store.approval_cards(approval.id)
            for address, platform_id in cards:
                if not platform_id or address.chat_only == skip:  # the tapper's: answered
                    continue
                channel = self.channels.get(address.channel)
                if channel is None:
                    continue
                try:
                    await edit_card(channel, address, platform_id, text)
                except Exception as exc:  # the decision stands; only its display failed
                    self.log.warning("approval_card_not_updated", error=str(exc))

    async def ask_egress(self, agent_id: str, host: str, port: int) -> str | None:
        """The egress proxy's question about a target off ``egress.allow``: None when it may
        go (on the agent's from-now-on list, or allowed now), else why not."""
        target = f"{host}:{port}"
        if any(h == target for _, h, _ in await self.store.egress_allowed(agent_id)):
            return None
        decided = await self.request(
            agent_id, "egress", {"host": host, "port": port}, f"connect to {target}"
        )
        return None if decided.approved else str(decided)

    async def review_mounts(self, agent_id: str, task_id: int | None = None) -> list[str]:
        """After a task: the changes the agent made in each staged mount, asked about (one
        card per mount, listing the files), then applied to the host folder or thrown away.
        Returns a line per mount for the task's reply."""
        agent = self.settings.agent(agent_id)
        if "mounts" not in agent.approvals.ask:
            return []
        notes = []
        for mount in agent.mounts:
            if mount.read_only:
                continue
            staged = staging.staging_dir(self.settings.data_dir, agent_id, mount.container)
            if not staged.is_dir():
                continue  # never started with it: nothing written
            request = MountRequest(mount.host, mount.container, False, staged=True)
            try:
                host = await run_in(STAGING_THREADS, resolve_request, request)
                found = await run_in(STAGING_THREADS, staging.changes, host, staged)
            except (OSError, ClawpenError) as exc:
                notes.append(f"{mount.container}: changes not reviewed ({exc})")
                continue
            if not found:
                continue
            args = {
                "mount": mount.container,
                "changes": [[c.path, c.kind, c.digest] for c in found],
            }
            summary = (
                f"write {len(found)} file(s) to {mount.host} ({mount.container}):\n"
                + staging.card_lines(found)
            )
            decided = await self.request(agent_id, "mounts", args, summary, task_id)
            if decided.approved:
                stale = await run_in(STAGING_THREADS, staging.apply, host, staged, found)
                left = f"; not applied, changed after the card: {', '.join(stale)}" if stale else ""
                done = sum(1 for c in found if c.kind != "skipped") - len(stale)
                notes.append(f"{mount.container}: {done} change(s) applied{left}")
            else:
                await run_in(STAGING_THREADS, staging.discard, host, staged, AGENT_UID)
                notes.append(f"{mount.container}: changes {decided}; thrown away")
        return notes

    async def allowed_hosts(self, agent_id: str | None = None) -> list[tuple[str, str, float]]:
        return await self.store.egress_allowed(agent_id)
