"""``KVStore`` (``fal.toolkit.kv``): fal's key-value store, kept on this machine.

fal's is a service (``kv.fal.media``) reached with the app's credentials; here each
store is a namespace in one SQLite database in falkit's cache directory
(``$FALKIT_CACHE_DIR/kv.sqlite3``), so values outlive the kernel and every process of the
user sees the same ones: writes are transactions, and a busy database is waited on (a
bounded wait) rather than failed. The methods, their arguments and their answers are
fal's; so is the ``ttl`` rule (60 seconds to 30 days, 30 days when omitted), checked here
so an App that breaks it fails in the notebook and not first on fal.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from .cache import cache_dir
from .exceptions import KVStoreException

__all__ = ["KVStore"]

MIN_TTL_S = 60
MAX_TTL_S = 30 * 24 * 3600
#: How long an operation waits for another process's write to finish.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    db TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (db, key)
);
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires);
"""


class KVStore:
    """A key-value store named ``db_name``: ``get``, ``set`` (with an optional ``ttl`` in
    seconds) and ``delete``, all of strings."""

    def __init__(self, db_name: str) -> None:
        self.db_name = db_name

    def get(self, key: str) -> str | None:
        """The value under ``key``, or ``None`` if there is none (or it expired)."""
        with self._database() as db:
            row = db.execute(
                "SELECT value FROM kv WHERE db = ? AND key = ? AND expires > ?",
                (self.db_name, _checked_key(key), time.time()),
            ).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (60 to 2592000; 30 days when
        omitted), replacing what was there."""
        if not isinstance(value, str):
            raise KVStoreException(f"a KVStore value is a str, not {type(value).__name__}")
        expires = time.time() + _checked_ttl(ttl)
        with self._database() as db:
            db.execute("DELETE FROM kv WHERE expires <= ?", (time.time(),))
            db.execute(
                "INSERT INTO kv (db, key, value, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (db, key) DO UPDATE SET value = excluded.value, "
                "expires = excluded.expires",
                (self.db_name, _checked_key(key), value, expires),
            )

    def delete(self, key: str) -> None:
        """Remove ``key``; nothing happens if it is not there."""
        with self._database() as db:
            db.execute("DELETE FROM kv WHERE db = ? AND key = ?", (self.db_name, _checked_key(key)))

    @contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        path = database_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # One connection per operation: safe across threads and processes, and
            # nothing is left open between calls (a kernel may fork, or never close us).
            with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
                with db:
                    db.executescript(_SCHEMA)
                with db:  # a transaction: committed on success, rolled back on error
                    yield db
        except (sqlite3.Error, OSError) as exc:
            raise KVStoreException(f"the KV store at {path} failed: {exc}") from exc


def database_path() -> Path:
    """Where every ``KVStore`` of this user lives."""
    return cache_dir() / "kv.sqlite3"


def _checked_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise KVStoreException(f"a KVStore key is a non-empty str, not {key!r}")
    return key


def _checked_ttl(ttl: int | None) -> int:
    if ttl is None:
        return MAX_TTL_S
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise KVStoreException(
            f"ttl must be a whole number of seconds from {MIN_TTL_S} to {MAX_TTL_S} "
            f"(30 days), as fal's KV store requires; got {ttl!r}"
        )
    return ttl
