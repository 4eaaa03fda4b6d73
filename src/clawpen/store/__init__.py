"""What the orchestrator records: the ``Store`` seam (``base.py``) and its SQLite backend."""

from .base import Lease, Store, StoreError, StoreRejected, StoreUnavailable, until_written
from .sqlite import SQLiteStore

__all__ = [
    "Lease",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "until_written",
]
