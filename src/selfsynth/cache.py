"""A small persistent key -> bytes store in one SQLite file, for caches that must survive a kill.

Embeddings and expert answers are expensive (model time, paid API calls), so both are stored
under a hash of what produced them and looked up before any work is done. SQLite (stdlib, WAL
journal) gives atomic commits, so a crash mid-run keeps every row committed before it. It is
meant for one writer process at a time; readers may run alongside.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from selfsynth.errors import DataError


def default_cache_root() -> Path:
    """Where per-machine caches live (base models, measured CPU choices): ``$SELFSYNTH_CACHE`` or ``~/.cache/selfsynth``."""
    env = os.environ.get("SELFSYNTH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "selfsynth"


# SQLite's default limit on bound parameters is 999 in older builds; stay well under it.
_MAX_VARS = 500


class SqliteStore:
    """Namespaced key -> bytes rows; ``ns`` separates e.g. encoder identities sharing one file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
                " PRIMARY KEY (ns, key)) WITHOUT ROWID"
            )
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise DataError(
                f"cannot open the cache database ({e}); delete the file to start an empty cache",
                file=str(self.path),
            ) from None

    def get(self, ns: str, key: str) -> bytes | None:
        return self.get_many(ns, [key]).get(key)

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored values of those ``keys`` that are present (missing keys are simply absent)."""
        out: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _MAX_VARS):
                part = unique[start : start + _MAX_VARS]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT key, value FROM kv WHERE ns = ? AND key IN ({marks})", [ns, *part]
                )
                out.update((k, bytes(v)) for k, v in rows)
        return out

    def put(self, ns: str, key: str, value: bytes) -> None:
        self.put_many(ns, [(key, value)])

    def put_many(self, ns: str, items: Iterable[tuple[str, bytes]]) -> None:
        """Insert or replace rows in one transaction: all of them are committed, or none."""
        rows = [(ns, k, sqlite3.Binary(v)) for k, v in items]
        if not rows:
            return
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)", rows)

    def count(self, ns: str | None = None) -> int:
        with self._lock:
            if ns is None:
                return int(self._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM kv WHERE ns = ?", (ns,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
