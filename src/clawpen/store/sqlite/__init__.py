"""The SQLite store: the only package that speaks the application's SQL.

WAL mode with ``synchronous=FULL``: when a write's future resolves, what it wrote survives a
crash of the process or the machine. Writes and reads run on threads of their own
(``worker.py``: group commit, a savepoint per write), the schema is ``migrations.py``, and the
state machines are in ``base.py`` (each family's module repeats its own). Each write is a plain
function of a connection, run on the writer thread inside its own savepoint.

One module per family of tables, each a mixin on ``connection.Connection``:

    messages.py   inbound messages, commands, sessions, strangers
    pairings.py   pairings and pairing codes
    tasks.py      claimed agent turns, their leases, finishing with the reply
    replies.py    the outbox: pending replies, claims, chunks, failures, delivery statuses
    jobs.py       scheduled jobs and their runs
    approvals.py  requests for a person's decision, their cards, hosts allowed from now on
    usage.py      agents' state, tokens and cost
    views.py      reads for status and the dashboard
    rows.py       sqlite3.Row -> model mappers, and ``read_all``
"""

from __future__ import annotations

from .approvals import Approvals
from .jobs import Jobs
from .messages import Messages
from .pairings import Pairings
from .replies import Replies
from .tasks import Tasks
from .usage import Usage
from .views import Views

__all__ = ["SQLiteStore"]


class SQLiteStore(Messages, Pairings, Tasks, Replies, Jobs, Usage, Views, Approvals):
    """``Store`` on one SQLite file. Open it from the thread that runs the event loop."""
