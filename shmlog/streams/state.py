"""Local state of one task (one input partition of a sub-topology): every store of the task in
one SQLite file, changed inside one SQLite transaction per processed batch.

Why SQLite: it ships with Python (no dependency), is crash-safe (WAL), and a batch of changes
commits or vanishes as one; docs/dependencies.md says more.

Each store is backed by a compacted changelog topic (App.changelog_topic), partition = the
task's partition (a co-partitioned table's store by the table's own topic: streams/ktable.py
has its rules). The rule that keeps local state and changelog consistent, whatever crashes
when: local changes commit only *after* the changelog records that carry them are in the log
(at-least-once: after the producer flushed; exactly-once: after the transaction committed), and
restoring applies changelog records from the local checkpoint on. Replaying a record that is
already applied is harmless (each carries the key's whole new value), so a local state that is
behind the changelog (a crash between the two commits, a lost file) catches up, and one ahead of
it cannot exist.

Changelog records: key = kind byte + fields, value = pickled state (None: deleted).
    b"k" + key                          a key's value in a key-value store
    b"w" + >qq(start, end) + key        a window's (or session's) aggregate
    b"m" + name                         task metadata (stream time)
"""
from __future__ import annotations

import os
import pickle
import sqlite3
import struct
from collections.abc import Iterator
from typing import Any

_WINDOW = struct.Struct(">qq")
STREAM_TIME = "stream_time"
KV_CACHE_ENTRIES = 100_000   # committed key-value entries read and kept in memory (then the cache starts over)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (store TEXT, key BLOB, value BLOB, PRIMARY KEY (store, key));
CREATE TABLE IF NOT EXISTS win (store TEXT, key BLOB, start INTEGER, end INTEGER, value BLOB,
                                PRIMARY KEY (store, key, start));
CREATE INDEX IF NOT EXISTS win_end ON win (store, end);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
"""


def changelog_key_kv(key: bytes) -> bytes:
    return b"k" + key


def changelog_key_window(key: bytes, start: int, end: int) -> bytes:
    return b"w" + _WINDOW.pack(start, end) + key


def changelog_key_meta(name: str) -> bytes:
    return b"m" + name.encode()


class TaskState:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")   # the changelog, not fsync, is what survives a host crash
        self.db.executescript(_SCHEMA)
        self.changed: dict[str, set] = {}     # store -> changelog keys changed in this batch
        self.in_batch = False
        # Key-value stores are read and written through two dicts of pickled values (None: no
        # value): the batch's writes, flushed into SQLite at commit and dropped at rollback, and
        # committed values already read. Pickled, so a caller mutating what get() returned can
        # never change what the store holds.
        self.kv_dirty: dict[tuple[str, bytes], bytes | None] = {}
        self.kv_clean: dict[tuple[str, bytes], bytes | None] = {}

    def close(self) -> None:
        if self.in_batch:
            self.rollback()
        self.db.close()

    # ---------------------------------------------------------------- batches

    def begin(self) -> None:
        if not self.in_batch:
            self.db.execute("BEGIN")
            self.in_batch = True

    def commit(self) -> None:
        if self.in_batch:
            self._flush_kv()
            self.db.execute("COMMIT")
            self.in_batch = False
        self.changed.clear()

    def rollback(self) -> None:
        if self.in_batch:
            self.db.execute("ROLLBACK")
            self.in_batch = False
        self.kv_dirty.clear()
        self.changed.clear()

    def _flush_kv(self) -> None:
        if not self.kv_dirty:
            return
        self.db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                            [(s, k, v) for (s, k), v in self.kv_dirty.items() if v is not None])
        self.db.executemany("DELETE FROM kv WHERE store=? AND key=?",
                            [(s, k) for (s, k), v in self.kv_dirty.items() if v is None])
        if len(self.kv_clean) > KV_CACHE_ENTRIES:
            self.kv_clean.clear()
        self.kv_clean.update(self.kv_dirty)
        self.kv_dirty.clear()

    def _touch(self, store: str, changelog_key: bytes) -> None:
        self.changed.setdefault(store, set()).add(changelog_key)

    # ---------------------------------------------------------------- key-value stores

    def _kv_bytes(self, store: str, key: bytes) -> bytes | None:
        entry = (store, key)
        if entry in self.kv_dirty:
            return self.kv_dirty[entry]
        if entry in self.kv_clean:
            return self.kv_clean[entry]
        row = self.db.execute("SELECT value FROM kv WHERE store=? AND key=?", entry).fetchone()
        value = self.kv_clean[entry] = None if row is None else row[0]
        return value

    def get(self, store: str, key: bytes, default: Any = None) -> Any:
        value = self._kv_bytes(store, key)
        return default if value is None else pickle.loads(value)

    def put(self, store: str, key: bytes, value: Any) -> None:
        self.kv_dirty[(store, key)] = pickle.dumps(value)
        self._touch(store, changelog_key_kv(key))

    def delete(self, store: str, key: bytes) -> None:
        self.kv_dirty[(store, key)] = None
        self._touch(store, changelog_key_kv(key))

    # ---------------------------------------------------------------- window stores

    def window_get(self, store: str, key: bytes, start: int) -> tuple[int, Any] | None:
        row = self.db.execute("SELECT end, value FROM win WHERE store=? AND key=? AND start=?",
                              (store, key, start)).fetchone()
        return None if row is None else (row[0], pickle.loads(row[1]))

    def window_put(self, store: str, key: bytes, start: int, end: int, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO win VALUES (?, ?, ?, ?, ?)",
                        (store, key, start, end, pickle.dumps(value)))
        self._touch(store, changelog_key_window(key, start, end))

    def window_delete(self, store: str, key: bytes, start: int, end: int) -> None:
        self.db.execute("DELETE FROM win WHERE store=? AND key=? AND start=?", (store, key, start))
        self._touch(store, changelog_key_window(key, start, end))

    def windows_touching(self, store: str, key: bytes, low_ms: int, high_ms: int) -> list[tuple[int, int, Any]]:
        """Windows (sessions) of key with start <= high_ms and end >= low_ms."""
        rows = self.db.execute("SELECT start, end, value FROM win WHERE store=? AND key=? AND start<=? AND end>=? "
                               "ORDER BY start", (store, key, high_ms, low_ms)).fetchall()
        return [(s, e, pickle.loads(v)) for s, e, v in rows]

    def windows_ending_by(self, store: str, end_ms: int) -> list[tuple[bytes, int, int, Any]]:
        """Windows with end <= end_ms, oldest end first: those that closed."""
        rows = self.db.execute("SELECT key, start, end, value FROM win WHERE store=? AND end<=? "
                               "ORDER BY end, start, key", (store, end_ms)).fetchall()
        return [(k, s, e, pickle.loads(v)) for k, s, e, v in rows]

    def delete_store(self, store: str) -> None:
        """Every entry of store gone (a store rebuilt from its changelog's start)."""
        self.db.execute("DELETE FROM kv WHERE store=?", (store,))
        self.db.execute("DELETE FROM win WHERE store=?", (store,))
        for cache in (self.kv_dirty, self.kv_clean):
            for entry in [entry for entry in cache if entry[0] == store]:
                del cache[entry]

    def count(self, store: str) -> int:
        self._flush_kv()
        return (self.db.execute("SELECT COUNT(*) FROM kv WHERE store=?", (store,)).fetchone()[0]
                + self.db.execute("SELECT COUNT(*) FROM win WHERE store=?", (store,)).fetchone()[0])

    # ---------------------------------------------------------------- task metadata

    def meta(self, name: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, name: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    # ---------------------------------------------------------------- changelog

    def changes(self, store: str) -> Iterator[tuple[bytes, bytes | None]]:
        """(changelog key, value or None for deleted) for every key of `store` changed in this batch."""
        for ckey in sorted(self.changed.get(store, ())):
            kind = ckey[:1]
            if kind == b"k":
                yield ckey, self._kv_bytes(store, ckey[1:])
                continue
            start, _ = _WINDOW.unpack_from(ckey, 1)
            row = self.db.execute("SELECT value FROM win WHERE store=? AND key=? AND start=?",
                                  (store, ckey[1 + _WINDOW.size:], start)).fetchone()
            yield ckey, (None if row is None else row[0])

    def apply(self, store: str, ckey: bytes, value: bytes | None) -> None:
        """Replay one changelog record (restoring): the key's whole value, or its deletion."""
        kind = ckey[:1]
        if kind == b"k":
            self.kv_clean.pop((store, ckey[1:]), None)
            self.kv_dirty.pop((store, ckey[1:]), None)
            if value is None:
                self.db.execute("DELETE FROM kv WHERE store=? AND key=?", (store, ckey[1:]))
            else:
                self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (store, ckey[1:], value))
        elif kind == b"w":
            start, end = _WINDOW.unpack_from(ckey, 1)
            key = ckey[1 + _WINDOW.size:]
            if value is None:
                self.db.execute("DELETE FROM win WHERE store=? AND key=? AND start=?", (store, key, start))
            else:
                self.db.execute("INSERT OR REPLACE INTO win VALUES (?, ?, ?, ?, ?)", (store, key, start, end, value))
        elif kind == b"m" and value is not None:
            name = ckey[1:].decode()
            if name == STREAM_TIME:
                current = self.meta(STREAM_TIME)
                restored = pickle.loads(value)
                if current is None or restored > current:
                    self.set_meta(STREAM_TIME, restored)
        else:
            raise ValueError(f"{self.path}: changelog record of store {store!r} with an unknown key kind {kind!r}")
