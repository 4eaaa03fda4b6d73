"""A circuit breaker per channel: stop hammering a platform that keeps failing.

After ``threshold`` sends in a row fail with an error that says the platform is down (a 5xx, a
connection refused; not a 429, which is the platform working and asking us to slow down, nor a
permanent refusal of one message), the circuit *opens*: nothing is sent for ``cooldown``
seconds. Then it is *half-open*: one send is let through as a trial. Success closes it; failure
opens it again for twice as long (up to ``max_cooldown``). Replies wait in the store meanwhile,
in order, and go out when the platform is back. Pure: the caller passes the time.

    >>> circuit = Circuit(threshold=2, cooldown=10)
    >>> circuit.failure(0.0); circuit.failure(1.0)
    >>> circuit.state(2.0), circuit.wait(2.0)
    ('open', 9.0)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Circuit:
    threshold: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 300.0
    failures: int = 0  # in a row
    opened_at: float | None = None
    open_for: float = 0.0
    trial: bool = False  # a half-open trial send is under way
    last_error: str = ""

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if now < self.opened_at + self.open_for else "half-open"

    def wait(self, now: float) -> float:
        """Seconds before a send may go (0: now). In half-open, one trial at a time."""
        state = self.state(now)
        if state == "closed":
            return 0.0
        if state == "open":
            assert self.opened_at is not None
            return self.opened_at + self.open_for - now
        return 1.0 if self.trial else 0.0

    def begin(self, now: float) -> None:
        """A send is going out (counts as the trial when half-open)."""
        if self.state(now) == "half-open":
            self.trial = True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.open_for = 0.0
        self.trial = False
        self.last_error = ""

    def failure(self, now: float, error: str = "") -> bool:
        """Count a failure that says the platform is down; True when it opens the circuit."""
        self.failures += 1
        self.last_error = error
        half_open = self.state(now) == "half-open"
        self.trial = False
        if half_open:
            self.open_for = min(self.max_cooldown, max(self.cooldown, self.open_for * 2))
            self.opened_at = now
            return True
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = now
            self.open_for = self.cooldown
            return True
        return False

    def describe(self, now: float) -> dict[str, object]:
        """For ``clawpen status``."""
        state = self.state(now)
        found: dict[str, object] = {"state": state, "failures": self.failures}
        if state != "closed":
            found["retry_in"] = round(self.wait(now), 1)
            found["error"] = self.last_error
        return found
