"""The intake journal: a first notification is on disk before its 202 leaves the receiver.

SQLite in WAL mode. `accept` commits with `synchronous=FULL`, so it is fsynced before the
202 (0.4 ms on a quiet disk; accepts that arrive during a commit share the next one, and
bench/alert_storm.py measured no latency gained by skipping the fsync); a receiver killed after
answering starts the run at its next start (`pending()`). `started`/`failed` commit without
an fsync: losing one costs only a replay, which Prefect's idempotency key turns into the run
that exists. Several replicas may share one file (SQLite locks it) or keep their own. Rows
that started are kept for `keep_s` (a week) so a restart still answers repeats from disk.
Calls are serialised by a lock: the dispatcher makes them from one I/O thread.

Bounded: `prune()` (at open, and hourly from the dispatcher) deletes rows started or refused more
than `keep_s` ago, episodes resolved more than `keep_s` ago, and episodes still open that were
opened more than `episode_keep_s` ago (30 days: a group that never sends `resolved` must not stay
forever; one still firing after that opens a new incident). Only admitted groups are journaled at all
(`limits.py`), so rows grow at most at the admitted rate.

It also keeps each alert group's current episode (`episode_start`): the start that names its
incident, fixed when the group first fires and kept until the group resolves — so the oldest
alert resolving and dropping out of later notifications does not rename the incident. Replicas
that must agree on names share the journal file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from remediation.alerts.starter import AlertRecord, CaptureRequest

__all__ = ["IntakeJournal", "JournalEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS intake (
    key          TEXT PRIMARY KEY,
    incident_id  TEXT NOT NULL,
    request      TEXT NOT NULL,
    record       TEXT,
    accepted_at  REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_id       TEXT,
    started_at   REAL,
    failed       TEXT
)"""


_EPISODES = """
CREATE TABLE IF NOT EXISTS episode (
    fingerprint  TEXT PRIMARY KEY,
    started      TEXT NOT NULL,
    resolved_at  REAL,
    opened_at    REAL
)"""


@dataclass(frozen=True)
class JournalEntry:
    request: CaptureRequest
    #: The `remediation.alert.firing` event to send once the run exists (None: send none).
    record: AlertRecord | None


def _dump_request(request: CaptureRequest) -> str:
    return json.dumps({**asdict(request), "tags": list(request.tags)})


def _load_request(text: str) -> CaptureRequest:
    data = json.loads(text)
    return CaptureRequest(**{**data, "tags": tuple(data["tags"])})


def _dump_record(record: AlertRecord | None) -> str | None:
    return None if record is None else json.dumps({**asdict(record), "flow_run_id": None})


def _load_record(text: str | None) -> AlertRecord | None:
    return None if text is None else AlertRecord(**json.loads(text))


class IntakeJournal:
    def __init__(self, path: str | Path, *, keep_s: float = 7 * 86400, episode_keep_s: float = 30 * 86400) -> None:
        self.path = str(path)
        self.keep_s = keep_s
        self.episode_keep_s = episode_keep_s
        memory = self.path == ":memory:"
        if not memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = self._connect("FULL")
        self._db.execute(_SCHEMA)
        self._db.execute(_EPISODES)
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(episode)")]
        if "opened_at" not in columns:  # a journal written before episodes were pruned
            self._db.execute("ALTER TABLE episode ADD COLUMN opened_at REAL")
            self._db.execute("UPDATE episode SET opened_at = ? WHERE opened_at IS NULL", (time.time(),))
        # A second connection on one file; in memory there is only one database per connection.
        self._lazy = self._db if memory else self._connect("NORMAL")
        self._reader = self._db if memory else self._connect("NORMAL")
        self.prune()

    def prune(self) -> int:
        """Delete closed rows past their keep time; returns how many went."""
        now = time.time()
        with self._lock:
            gone = self._lazy.execute(
                "DELETE FROM intake WHERE (started_at IS NOT NULL AND started_at < ?)"
                " OR (failed IS NOT NULL AND accepted_at < ?)", (now - self.keep_s, now - self.keep_s)).rowcount
            gone += self._lazy.execute(
                "DELETE FROM episode WHERE resolved_at < ? OR (resolved_at IS NULL AND opened_at < ?)",
                (now - self.keep_s, now - self.episode_keep_s)).rowcount
        return gone

    def _reading(self) -> contextlib.AbstractContextManager[object]:
        # A file's reader is its own connection (WAL: never waits for the writer's fsync, so the
        # event loop's reads do not block on a commit); in memory it is the writer itself.
        return self._lock if self._reader is self._db else contextlib.nullcontext()

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        return db

    def accept(self, entry: JournalEntry, incident_id: str) -> UUID | None:
        """Journal `entry` (committed on return). Returns the run id if its key already has one."""
        known = self.run_id(entry.request.idempotency_key)
        if known is None:
            self.accept_many([(entry, incident_id)])
        return known

    def accept_many(self, batch: list[tuple[JournalEntry, str]]) -> None:
        """Group commit: the batch in one multi-row INSERT and one COMMIT (one fsync).

        One statement, not `executemany`: CPython releases the GIL around every SQLite step, and
        on the receiver's I/O thread each re-acquisition can wait a switch interval (5 ms) behind
        the busy event loop, so a row-by-row batch of 40 took 200 ms.
        """
        now = time.time()
        rows = [(e.request.idempotency_key, inc, _dump_request(e.request), _dump_record(e.record), now)
                for e, inc in batch]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(rows), 500):
                    chunk = rows[i:i + 500]
                    self._db.execute(
                        "INSERT INTO intake (key, incident_id, request, record, accepted_at) VALUES "
                        + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
                        + " ON CONFLICT (key) DO UPDATE SET failed = NULL WHERE run_id IS NULL",
                        [v for row in chunk for v in row],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def current_episode(self, fingerprint: str) -> dt.datetime | None:
        """The group's open episode's start, if it has one (a read: opens nothing)."""
        with self._reading():
            row = self._reader.execute("SELECT started FROM episode WHERE fingerprint = ? AND resolved_at IS NULL",
                                       (fingerprint,)).fetchone()
        return dt.datetime.fromisoformat(row[0]) if row else None

    def admitted(self, key: str) -> bool:
        """The key was journaled before and not refused: a repeat, whatever this process remembers."""
        with self._reading():
            row = self._reader.execute("SELECT 1 FROM intake WHERE key = ? AND (run_id IS NOT NULL OR failed IS NULL)",
                                       (key,)).fetchone()
        return row is not None

    def accepted_since(self, since: float) -> list[tuple[str, float]]:
        """(target, seconds ago) of every group accepted since `since`: the run cap survives a restart."""
        with self._reading():
            rows = self._reader.execute("SELECT request, accepted_at FROM intake WHERE accepted_at >= ?",
                                        (since,)).fetchall()
        now = time.time()
        return [(str(json.loads(r[0])["parameters"].get("target")), now - r[1]) for r in rows]

    def episode_start(self, fingerprint: str, seen: dt.datetime | None, *, resolved: bool) -> dt.datetime | None:
        """The start naming the group's current episode. Firing: the open episode's start if there is
        one (whatever the notification's earliest alert is now), else `seen` opens a new episode. Resolved:
        the open episode's start, and the episode is closed (the next firing opens a new one)."""
        current = self.current_episode(fingerprint)
        if resolved:
            if current is not None:
                self.close_episode(fingerprint)
            return current or seen
        if current is not None or seen is None:
            return current or seen
        return self.open_episode(fingerprint, seen)

    def open_episode(self, fingerprint: str, seen: dt.datetime) -> dt.datetime:
        """Open an episode starting at `seen` unless one is open; returns the open episode's start."""
        with self._lock:
            # Two requests opening one episode at once: the first insert wins, both read it back.
            self._lazy.execute(
                "INSERT INTO episode (fingerprint, started, opened_at) VALUES (?, ?, ?) ON CONFLICT (fingerprint)"
                " DO UPDATE SET started = excluded.started, resolved_at = NULL, opened_at = excluded.opened_at"
                " WHERE episode.resolved_at IS NOT NULL",
                (fingerprint, seen.isoformat(), time.time()))
            row = self._lazy.execute("SELECT started FROM episode WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return dt.datetime.fromisoformat(row[0])

    def close_episode(self, fingerprint: str) -> None:
        with self._lock:
            self._lazy.execute("UPDATE episode SET resolved_at = ? WHERE fingerprint = ? AND resolved_at IS NULL",
                               (time.time(), fingerprint))

    def run_id(self, key: str) -> UUID | None:
        """From a reader connection: in WAL mode it never waits for the writer's fsync."""
        with self._reading():
            row = self._reader.execute("SELECT run_id FROM intake WHERE key = ?", (key,)).fetchone()
        return UUID(row[0]) if row and row[0] else None

    def started(self, key: str, run_id: UUID) -> None:
        with self._lock:
            self._lazy.execute("UPDATE intake SET run_id = ?, started_at = ?, failed = NULL WHERE key = ?",
                               (str(run_id), time.time(), key))

    def failed(self, key: str, why: str) -> None:
        """Prefect refused the request for good: kept for the record, not replayed."""
        with self._lock:
            self._lazy.execute("UPDATE intake SET failed = ? WHERE key = ?", (why[:500], key))

    def pending(self) -> list[JournalEntry]:
        """Accepted, not started, not refused: what a restart must still start (oldest first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT request, record FROM intake WHERE run_id IS NULL AND failed IS NULL ORDER BY accepted_at"
            ).fetchall()
        return [JournalEntry(_load_request(r[0]), _load_record(r[1])) for r in rows]

    def counts(self) -> dict[str, Any]:
        with self._reading():
            row = self._reader.execute(
                "SELECT count(*) FILTER (WHERE run_id IS NULL AND failed IS NULL),"
                " count(*) FILTER (WHERE failed IS NOT NULL), count(*) FILTER (WHERE run_id IS NOT NULL),"
                " min(accepted_at) FILTER (WHERE run_id IS NULL AND failed IS NULL) FROM intake"
            ).fetchone()
        oldest = None if row[3] is None else round(time.time() - row[3], 1)
        return {"pending": row[0], "refused": row[1], "started": row[2], "oldest_pending_s": oldest}

    def close(self) -> None:
        with self._lock:
            if self._lazy is not self._db:
                self._lazy.close()
                self._reader.close()
            self._db.close()
