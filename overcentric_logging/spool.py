"""The durable spool: every event kept in a SQLite file until the server has accepted it.

With ``spool_path=`` (or ``OVERCENTRIC_SPOOL_PATH``) the client uses :class:`SpoolSender`
instead of the in-memory :class:`~overcentric_logging.sender.Sender`. The caller's thread maps
and encodes the event and INSERTs its JSON body into the spool (stdlib ``sqlite3``, WAL mode,
one connection per thread and process, a prepared statement) before the logging call returns.
Worker threads *claim* rows with a lease, POST them, and then DELETE a row on a 2xx, mark it
``failed`` on a permanent 4xx (kept for ``python -m overcentric_logging spool PATH
--retry-failed``), or reschedule it with backoff on a transient error. A transient error is
retried without a retry budget: the event stays in the spool until the server takes it; the
spool's bounds (``max_spool_bytes`` / ``max_spool_events``, failed rows included) are what
limits it. When the spool is full, new events are dropped and counted (reason
``"spool_full"``), never the oldest.

Guarantees. With the default ``spool_sync="normal"`` (``PRAGMA synchronous=NORMAL`` in WAL
mode) an event whose logging call has returned survives the process being killed (SIGKILL,
OOM kill, a deploy); ``spool_sync="full"`` also survives power loss and OS crashes, at the cost
of an fsync per event. Delivery is at least once: a process killed between the server's 2xx
and the DELETE sends that event again on the next start (normally exactly once).

Sharing. Several processes (gunicorn workers) may use one spool file. A claim is one atomic
``UPDATE ... WHERE id IN (SELECT ... LIMIT n)`` stamped with a unique claimer token (host, pid,
process token, thread, sequence); the lease expires after a while, and on the same host a
claim whose process is gone (killed) is released at once by the next housekeeping pass of any
process, so a killed worker's events are sent by its siblings. A process that starts first
retries the rows an earlier process left behind (they are the oldest, so they go first).

Counts. ``stats()`` keeps ``tracked == sent + failed + dropped + pending`` for the events this
process accepted. ``sent`` and ``failed`` are read from the spool (a small per-origin table
updated in the same transaction as the DELETE), so they include this process's events that a
sibling process sharing the spool delivered. ``pending`` is this process's events still in the
spool (queued, claimed, or waiting for a retry) plus any held in memory by the fallback below;
events left in the spool at exit stay ``pending``: they are not lost, the next process that
opens the spool sends them.

Failure. A corrupt or unreadable spool file is moved aside to ``PATH.corrupt-<timestamp>``
(with its ``-wal``/``-shm`` files), reported with a warning, and a new spool is started; other
processes sharing it notice the new file within seconds. When no spool can be opened at all
(a read-only directory, a full disk), events go through the in-memory sender instead, with a
warning: the application never sees an exception.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from typing import Any

from .config import Config
from .diagnostics import logger
from .errors import EventRejected
from .mapping import RawEvent
from .sender import (
    BODY_PREVIEW,
    Sender,
    _Item,
    _retry_after,
    _warner,
    capture_sinks,
    sender_thread_idents,
)

__all__ = ["SCHEMA", "SpoolSender", "connect_spool", "move_aside"]

SCHEMA_VERSION = 1
QUEUED = 0
FAILED = 1
CLAIM_BATCH = 8
POLL_SECONDS = 1.0
HOUSEKEEP_SECONDS = 2.0
IDLE_SECONDS = 5.0
BUSY_TIMEOUT = 5.0
REOPEN_SECONDS = 30.0
OUTCOME_TTL = 30 * 86400.0
_ITEM_GEN = -2  # never registered in Sender._unfinished

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    origin TEXT NOT NULL,
    created REAL NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    ready_at REAL NOT NULL DEFAULT 0,
    claimed_by TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_try REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_ready ON events (state, ready_at);
CREATE INDEX IF NOT EXISTS events_claimed ON events (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    n INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS events_count_ins AFTER INSERT ON events BEGIN
    UPDATE totals SET n = n + 1, bytes = bytes + length(NEW.body) WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS events_count_del AFTER DELETE ON events BEGIN
    UPDATE totals SET n = n - 1, bytes = bytes - length(OLD.body) WHERE id = 0;
END;
CREATE TABLE IF NOT EXISTS outcomes (
    origin TEXT PRIMARY KEY,
    sent INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_sent AFTER DELETE ON events WHEN OLD.state = 0 BEGIN
    UPDATE outcomes SET sent = sent + 1, updated = CAST(strftime('%s', 'now') AS REAL)
    WHERE origin = OLD.origin;
END;
CREATE TRIGGER IF NOT EXISTS events_failed AFTER UPDATE OF state ON events
WHEN OLD.state = 0 AND NEW.state = 1 BEGIN
    UPDATE outcomes SET failed = failed + 1, updated = CAST(strftime('%s', 'now') AS REAL)
    WHERE origin = OLD.origin;
END;
"""

_INSERT = "INSERT INTO events (body, origin, created, ready_at) VALUES (?, ?, ?, ?)"
# The bounds, checked in the INSERT's own transaction (so they hold exactly across processes):
# a TEMP trigger per connection with this sender's limits, which makes the INSERT a no-op
# (rowcount 0) when the spool is full. An ``INSERT ... SELECT ... WHERE (SELECT ... FROM
# totals)`` does the same but makes SQLite materialise the SELECT first, because the
# ``events_count_ins`` trigger writes ``totals``: a temporary b-tree per event, a third of
# the INSERT's cost.
_BOUND_TRIGGER = (
    "CREATE TEMP TRIGGER IF NOT EXISTS spool_bound BEFORE INSERT ON main.events "
    "WHEN (SELECT n >= {events} OR bytes + length(NEW.body) > {bytes} FROM main.totals "
    "WHERE id = 0) BEGIN SELECT RAISE(IGNORE); END"
)
# Checkpoints. SQLite's automatic checkpoint (every 1000 WAL pages) runs inside the commit
# that crosses the threshold, in whatever thread made it, and syncs the WAL and the database:
# milliseconds, while that thread holds the process's write lock. Here the sender's threads
# run a PASSIVE checkpoint instead (which waits for no writer and holds no lock of ours) every
# CHECKPOINT_WRITES commits of this process or every HOUSEKEEP_SECONDS, server down or not;
# the automatic one stays as a backstop, far above that, for when no sender thread runs.
BACKSTOP_CHECKPOINT_PAGES = 16384
# The adaptive worker count (SpoolSender._observe): the process's CPU time over wall time,
# measured over LOAD_WINDOW seconds, above which the GIL is the bottleneck.
LOAD_WINDOW = 0.25
BUSY_SHARE = 0.8
CHECKPOINT_WRITES = 256
_CLAIM = (
    "UPDATE events SET claimed_by = ?, ready_at = ? WHERE id IN ("
    "SELECT id FROM events WHERE state = 0 AND ready_at <= ? ORDER BY ready_at, id LIMIT ?)"
)

_HOST = socket.gethostname().replace("|", "_")
_token_lock = threading.Lock()
_token: list[Any] = [0, ""]  # [pid, token]: regenerated in a forked child
# Connections inherited across a fork are never used nor closed in the child (SQLite forbids
# both); they are kept here so that garbage collection does not close them either.
_orphans: list[sqlite3.Connection] = []
_live: dict[int, sqlite3.Connection] = {}
# One write lock per spool file and process: threads of one process queue here (a fast
# handoff) instead of in SQLite's busy handler, which sleeps a millisecond or more per try.
_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(path: str) -> threading.Lock:
    key = os.path.abspath(path)
    lock = _write_locks.get(key)
    if lock is None:
        with _write_locks_guard:
            lock = _write_locks.setdefault(key, threading.Lock())
    return lock


# Held by a sender thread for the whole of a checkpoint (milliseconds: it syncs files).
_checkpoint_guard = threading.Lock()
_held_at_fork: list[threading.Lock] = []


def _before_fork() -> None:
    # A fork while another thread is inside SQLite can leave the child with one of SQLite's
    # own mutexes held forever (its next sqlite3.connect() hangs). The long calls (commits,
    # checkpoints) run under these locks: wait for them to end. Short reads are not covered.
    _checkpoint_guard.acquire()
    _held_at_fork.append(_checkpoint_guard)
    _write_locks_guard.acquire()
    _held_at_fork.append(_write_locks_guard)
    for key in sorted(_write_locks):
        lock = _write_locks[key]
        lock.acquire()
        _held_at_fork.append(lock)


def _after_fork_in_parent() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


def _reset_write_locks() -> None:
    global _write_locks_guard, _checkpoint_guard
    _held_at_fork.clear()
    _write_locks.clear()
    _write_locks_guard = threading.Lock()
    _checkpoint_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_reset_write_locks,
    )


def _process_token() -> str:
    pid = os.getpid()
    with _token_lock:
        if _token[0] != pid:
            _token[0] = pid
            _token[1] = uuid.uuid4().hex[:12]
        return str(_token[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def claimer_is_dead(token: str) -> bool:
    """Whether the process that made claim ``token`` is certainly gone (same host only)."""
    parts = token.split("|")
    if len(parts) < 3 or parts[0] != _HOST:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        # The same pid with another process token: an earlier process whose pid was reused.
        return parts[2] != _process_token()
    return not _pid_alive(pid)


def is_corrupt_error(exc: BaseException, path: str) -> bool:
    """A spool error that moving the file aside would cure (corrupt, unreadable, read-only)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc).lower()
    if any(s in text for s in ("malformed", "not a database", "encrypted", "disk image",
                               "corrupt")):
        return True
    try:
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            return True
        # Another error (a "disk I/O error" when the file was overwritten in place while
        # this process still had it open, its WAL index shared with the new connection): a
        # non-empty file without SQLite's header is not a spool, whatever the error said.
        with open(path, "rb") as fh:
            head = fh.read(16)
        return bool(head) and head != b"SQLite format 3\x00"
    except OSError:
        return False


def connect_spool(
    path: str,
    sync: str = "normal",
    create: bool = True,
    checkpoint_pages: int = 1000,
) -> sqlite3.Connection:
    """Open (and with ``create``, initialise) a spool database in WAL mode, autocommit."""
    if create:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        target = path
        uri = False
    else:
        target = "file:" + os.path.abspath(path) + "?mode=rw"
        uri = True
    conn = sqlite3.connect(
        target, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False, uri=uri
    )
    try:
        # Small pages: each commit appends whole pages to the WAL (a new file only).
        conn.execute("PRAGMA page_size=1024")
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=" + ("FULL" if sync == "full" else "NORMAL"))
        conn.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and create:
            conn.executescript(
                "BEGIN IMMEDIATE;" + SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
        elif version == 0:
            raise sqlite3.DatabaseError("not an overcentric-logging spool (no schema)")
    except BaseException:
        conn.close()
        raise
    return conn


def move_aside(path: str) -> str | None:
    """Rename a bad spool (and its WAL files) to ``PATH.corrupt-<timestamp>``; the new name."""
    if not os.path.exists(path):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = f"{path}.corrupt-{stamp}"
    n = 1
    while os.path.exists(dest):
        n += 1
        dest = f"{path}.corrupt-{stamp}-{n}"
    os.replace(path, dest)
    for suffix in ("-wal", "-shm"):
        try:
            os.replace(path + suffix, dest + suffix)
        except OSError:
            pass
    return dest


class _Handle:
    """One thread's connection; closes it when the thread goes, never in a forked child."""

    __slots__ = ("__weakref__", "conn", "gen", "pid")

    def __init__(self, conn: sqlite3.Connection, pid: int, gen: int) -> None:
        self.conn = conn
        self.pid = pid
        self.gen = gen
        _live[id(conn)] = conn

    def close(self) -> None:
        try:
            if self.pid == os.getpid():
                _live.pop(id(self.conn), None)
                self.conn.close()
        except Exception:
            pass

    def __del__(self) -> None:
        self.close()


class SpoolSender(Sender):
    """A :class:`Sender` whose queue is a SQLite file; see the module docstring."""

    queues_in_memory = False  # every event goes through submit() into the file

    def __init__(self, config: Config) -> None:
        assert config.spool_path
        self.path: str = config.spool_path
        self._lease = 30.0 + 2 * CLAIM_BATCH * config.timeout
        super().__init__(config)
        self._open_at_start()

    # -- state ----------------------------------------------------------------------------

    def _reset_state(self) -> None:
        old = getattr(self, "_local", None)
        if old is not None:
            handle = getattr(old, "handle", None)
            if isinstance(handle, _Handle) and handle.pid != os.getpid():
                _orphans.append(handle.conn)
        super()._reset_state()
        # Who inserted a row: one id per sender and process (Sender.process_id is per process
        # only, and two clients in one process may share a spool).
        self._origin = uuid.uuid4().hex
        self._local = threading.local()
        self._db_gen = 0
        self._file_id: tuple[int, int] | None = None
        self._file_gen = -1
        self._last_id = 0
        self._adopt_upto = 0
        self._next_due: float | None = None
        self._wake = False
        self._stopped = False
        self._next_housekeep = 0.0
        self._flushers = 0
        self._done_cond = threading.Condition(self._lock)
        self._origin_ready = False
        self._memory: Sender | None = None
        self._broken: str | None = None
        self._reopen_at = 0.0
        self._recover_lock = threading.Lock()
        self._own_sent = 0
        self._own_failed = 0
        self._fail_streak = 0
        self._wlock_cached: threading.Lock | None = None
        # The first time-based checkpoint: not at once (a short-lived process needs none).
        self._next_checkpoint = time.monotonic() + HOUSEKEEP_SECONDS
        self._writes = 0  # commits since the last checkpoint (this process)
        self._posting = 0  # requests in flight, for the adaptive worker count
        # One worker until the first LOAD_WINDOW has been measured (the backlog waits on disk,
        # so a slow start costs nothing); then _observe adapts it.
        self._target = 1
        self._busy = True  # the process kept a core busy over the last LOAD_WINDOW
        self._load_next = 0.0
        self._load_wall = 0.0
        self._load_cpu = 0.0
        self.spool_resets = 0

    def _after_fork(self) -> None:
        # The parent keeps sending what it claimed; the child opens its own connection lazily.
        self._reset_state()

    # -- the database ---------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """This thread's connection to the current spool file (opened on first use)."""
        local = self._local
        handle: _Handle | None = getattr(local, "handle", None)
        if handle is not None:
            if handle.gen == self._db_gen and handle.pid == self._pid:
                return handle.conn
            if handle.pid != os.getpid():
                _orphans.append(handle.conn)
            else:
                handle.close()
            local.handle = None
        gen = self._db_gen
        conn = connect_spool(
            self.path, self.config.spool_sync, checkpoint_pages=BACKSTOP_CHECKPOINT_PAGES
        )
        try:
            conn.execute(_BOUND_TRIGGER.format(
                events=int(self.config.max_spool_events), bytes=int(self.config.max_spool_bytes)
            ))
        except BaseException:
            conn.close()
            raise
        try:
            st = os.stat(self.path)
            with self._lock:
                if self._file_id is None or gen != self._file_gen:
                    self._file_id = (st.st_dev, st.st_ino)
                    self._file_gen = gen
        except OSError:
            pass
        local.handle = _Handle(conn, self._pid, gen)
        return conn

    def _recover(self, exc: BaseException, gen: int) -> bool:
        """Move a corrupt spool aside and start a new one; False when that is not the cure."""
        if not is_corrupt_error(exc, self.path):
            return False
        with self._recover_lock:
            if self._db_gen != gen:
                return True  # another thread already did it
            try:
                dest = move_aside(self.path)
            except OSError as err:
                logger.warning("overcentric_logging: cannot move the bad spool %s aside: %s",
                               self.path, err)
                return False
            self._db_gen += 1
            self.spool_resets += 1
            self._origin_ready = False
        logger.warning(
            "overcentric_logging: the spool %s was unreadable or corrupt (%s); moved it to %s "
            "and started a new one", self.path, exc, dest,
        )
        return True

    def _ensure_origin(self, conn: sqlite3.Connection) -> None:
        if not self._origin_ready:
            with self._wlock:
                conn.execute(
                    "INSERT OR IGNORE INTO outcomes (origin, updated) VALUES (?, ?)",
                    (self._origin, time.time()),
                )
            self._origin_ready = True

    def _open_at_start(self) -> None:
        """Open the spool, release dead claims, and send what earlier processes left first."""
        for _ in range(2):
            gen = self._db_gen
            try:
                conn = self._db()
                now = time.time()
                self._ensure_origin(conn)
                with self._wlock:
                    conn.execute(
                        "DELETE FROM outcomes WHERE updated < ?", (now - OUTCOME_TTL,)
                    )
                    # Backoffs scheduled by an earlier process: try again now.
                    conn.execute(
                        "UPDATE events SET ready_at = 0 WHERE state = 0 AND claimed_by IS NULL "
                        "AND ready_at > ?", (now,),
                    )
                self._housekeep(force=True)
                row = conn.execute("SELECT MAX(id) FROM events WHERE state = 0").fetchone()
                self._adopt_upto = int(row[0] or 0)
                break
            except Exception as exc:
                if self._recover(exc, gen):
                    continue
                self._mark_broken(exc)
                return
        if self._adopt_upto:
            self._start_if_idle()

    def _mark_broken(self, exc: BaseException) -> None:
        self._broken = f"{type(exc).__name__}: {exc}"
        self._reopen_at = time.monotonic() + REOPEN_SECONDS
        _warner.warn(
            "spool-broken",
            f"overcentric_logging: cannot use the spool {self.path!r} ({self._broken}); "
            "events are kept in memory instead (not durable) until it can be opened",
        )

    def _housekeep(self, force: bool = False) -> None:
        """Every few seconds: follow a replaced spool file, release claims of dead processes."""
        now = time.monotonic()
        with self._lock:
            if not force and now < self._next_housekeep:
                return
            self._next_housekeep = now + HOUSEKEEP_SECONDS
        try:
            st = os.stat(self.path)
            ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            ident = None
        if self._file_id is not None and ident != self._file_id:
            # Moved aside (or deleted) by another process: reopen, which creates a new one.
            with self._recover_lock:
                self._db_gen += 1
                self._origin_ready = False
                self._file_id = None
        conn = self._db()
        self._ensure_origin(conn)
        tokens = conn.execute(
            "SELECT DISTINCT claimed_by FROM events WHERE claimed_by IS NOT NULL"
        ).fetchall()
        for (token,) in tokens:
            if claimer_is_dead(str(token)):
                with self._wlock:
                    conn.execute(
                        "UPDATE events SET claimed_by = NULL, ready_at = 0 WHERE claimed_by = ?",
                        (token,),
                    )

    # -- counts ---------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        sent_db = failed_db = 0
        if self._broken is None:
            try:
                row = self._db().execute(
                    "SELECT sent, failed FROM outcomes WHERE origin = ?", (self._origin,)
                ).fetchone()
                if row is not None:
                    sent_db, failed_db = int(row[0]), int(row[1])
            except Exception:
                pass
        with self._lock:
            sent_db = max(sent_db, self._own_sent)
            failed_db = max(failed_db, self._own_failed)
            tracked = self.tracked
            sent = self.sent + sent_db
            failed = self.failed + failed_db
            dropped = self.dropped
            retries = self.retries
        memory = self._memory
        if memory is not None:
            mem = memory.stats()
            tracked += mem["tracked"]
            sent += mem["sent"]
            failed += mem["failed"]
            dropped += mem["dropped"]
            retries += mem["retries"]
        return {
            "tracked": tracked,
            "sent": sent,
            "failed": failed,
            "dropped": dropped,
            "retries": retries,
            "pending": tracked - sent - failed - dropped,
        }

    @property
    def dropped_reasons_all(self) -> dict[str, int]:
        out = dict(self.dropped_reasons)
        if self._memory is not None:
            for k, v in self._memory.dropped_reasons.items():
                out[k] = out.get(k, 0) + v
        return out

    # -- the caller's side ----------------------------------------------------------------

    def submit(self, raw: RawEvent) -> None:
        """Persist one event in the spool before returning. Never raises."""
        try:
            if self._pid != os.getpid():
                self._after_fork()
            if capture_sinks:
                self._capture(raw)
                return
            with self._lock:
                self.tracked += 1
                if self._closed:
                    self._drop_locked("closed")
                    return
            if self._broken is not None and not self._try_reopen():
                with self._lock:
                    self.tracked -= 1
                self._to_memory(raw)
                return
            item = _Item(raw, _ITEM_GEN)
            if not self._prepare(item):
                return
            assert item.body is not None
            rid = self._persist(item.body)
            if rid is None:
                with self._lock:
                    self.tracked -= 1
                self._to_memory(raw)
                return
            if rid == 0:
                with self._lock:
                    self._drop_locked("spool_full")
                    self._wake = True
                    self._cond.notify()
                return
            if self.config.sync and self._exit_deadline is None:
                with self._lock:
                    if rid > self._last_id:
                        self._last_id = rid
                self._send_now(rid)
                self._start_if_idle()
            else:
                self._spooled(rid)
        except Exception:  # pragma: no cover - last line of defence for the caller
            try:
                logger.exception("overcentric_logging: internal error while spooling an event")
            except Exception:
                pass

    def _persist(self, body: bytes) -> int | None:
        """INSERT the body: its row id, 0 when the spool is full, None when it failed."""
        for _ in range(2):
            gen = self._db_gen
            try:
                conn = self._db()
                if not self._origin_ready:
                    self._ensure_origin(conn)
                now = time.time()
                with self._wlock:
                    cur = conn.execute(_INSERT, (body, self._origin, now, now))
                if cur.rowcount != 1:
                    return 0
                return int(cur.lastrowid or 0) or None
            except Exception as exc:
                if self._recover(exc, gen):
                    continue
                _warner.warn(
                    "spool-write",
                    f"overcentric_logging: cannot write to the spool {self.path!r} "
                    f"({type(exc).__name__}: {exc}); this event is kept in memory instead",
                )
                return None
        return None

    def _try_reopen(self) -> bool:
        if time.monotonic() < self._reopen_at:
            return False
        self._reopen_at = time.monotonic() + REOPEN_SECONDS
        try:
            self._db_gen += 1
            self._db()
        except Exception:
            return False
        self._broken = None
        logger.warning("overcentric_logging: the spool %s is usable again", self.path)
        return True

    def _to_memory(self, raw: RawEvent) -> None:
        memory = self._memory
        if memory is None:
            with self._lock:
                if self._memory is None:
                    self._memory = Sender(dataclasses.replace(self.config, spool_path=None))
                memory = self._memory
        memory.submit(raw)

    def _spooled(self, rid: int) -> None:
        """After an INSERT in the caller's thread: note it, and wake a worker if one is needed.

        One lock, and a wake-up only when it would find a worker with nothing to do: not when
        one is already pending (``_wake`` is cleared by a worker when it looks for rows), and
        not while the workers pause (the server is down; they look when the pause ends). Each
        needless wake-up costs the caller a context switch and the GIL back from the worker.
        """
        start = False
        with self._lock:
            if rid > self._last_id:
                self._last_id = rid
            self._writes += 1
            if self._stopped:
                return
            if self._idle:
                if self._writes == CHECKPOINT_WRITES or (
                    not self._wake and self._paused_until <= time.monotonic()
                ):
                    # (A checkpoint is due: a paused worker wakes for it, then waits again.)
                    self._cond.notify()
                self._wake = True
            elif self._workers == 0 and not self._threads_unavailable:
                self._wake = True
                self._workers = 1
                start = True
            else:
                self._wake = True
        if start:
            self._start_worker()

    def _start_if_idle(self) -> None:
        start = False
        with self._lock:
            self._wake = True
            if self._stopped:
                return
            if self._idle:
                self._cond.notify()
            elif self._workers == 0 and not self._threads_unavailable:
                self._workers = 1
                start = True
        if start:
            self._start_worker()

    def _start_worker(self) -> None:
        try:
            thread = threading.Thread(
                target=self._spool_worker, name="overcentric-spool", daemon=True
            )
            thread.start()
        except RuntimeError:
            # No threads at interpreter shutdown: the events stay in the spool for next time.
            with self._lock:
                self._workers -= 1
                self._threads_unavailable = True

    # -- workers --------------------------------------------------------------------------

    def _claim(self, token: str) -> list[tuple[int, bytes, str, int]]:
        conn = self._db()
        now = time.time()
        with self._wlock:
            cur = conn.execute(_CLAIM, (token, now + self._lease, now, CLAIM_BATCH))
        if cur.rowcount <= 0:
            return []
        rows = conn.execute(
            "SELECT id, body, origin, attempts FROM events WHERE claimed_by = ? ORDER BY id",
            (token,),
        ).fetchall()
        return [(int(r[0]), bytes(r[1]), str(r[2]), int(r[3])) for r in rows]

    def _spool_worker(self) -> None:
        ident = threading.get_ident()
        sender_thread_idents.add(ident)
        pid = self._pid
        seq = itertools.count()
        prefix = f"{_HOST}|{pid}|{_process_token()}|{self._origin[:8]}.{ident}|"
        idle_since = time.monotonic()
        try:
            while True:
                self._report_drops()
                if self._pid != pid:
                    return
                with self._lock:
                    if self._stopped:
                        self._workers -= 1
                        return
                    self._wake = False
                    wait = self._paused_until - time.monotonic()
                    due = self._next_due
                    if due is not None and due <= time.monotonic():
                        self._next_due = None
                batch: list[tuple[int, bytes, str, int]] = []
                if wait <= 0:
                    gen = self._db_gen
                    token = prefix + str(next(seq))
                    try:
                        self._housekeep()
                        batch = self._claim(token)
                        wait = POLL_SECONDS
                    except Exception as exc:
                        if not self._recover(exc, gen):
                            _warner.warn(
                                "spool-read",
                                f"overcentric_logging: cannot read the spool {self.path!r} "
                                f"({type(exc).__name__}: {exc}); retrying",
                            )
                        wait = 0.5
                    if batch:
                        idle_since = time.monotonic()
                        spawn = False
                        with self._lock:
                            if (
                                len(batch) == CLAIM_BATCH
                                and not self._idle
                                and not self._fail_streak
                                and self._workers < self._target
                            ):
                                self._workers += 1
                                spawn = True
                        if spawn:
                            self._start_worker()
                        self._send_batch(batch, token)
                        self._checkpoint_if_due()
                        with self._lock:
                            # More workers than requests in flight pay off (Sender._retarget:
                            # on loopback one or two; the others only compete for the GIL
                            # with the application's threads).
                            if self._workers > max(self._target, 1) and not self._stopped:
                                self._workers -= 1
                                return
                        continue
                else:
                    # Paused (the server is down): the application keeps writing, and its
                    # threads leave checkpoints to this one.
                    self._checkpoint_if_due()
                    wait = min(wait, HOUSEKEEP_SECONDS)
                with self._lock:
                    if self._stop_requested():
                        self._workers -= 1
                        return
                    now = time.monotonic()
                    if now - idle_since >= IDLE_SECONDS and self._workers > 1:
                        self._workers -= 1
                        return
                    if self._wake:
                        continue
                    if self._next_due is not None:
                        wait = min(wait, self._next_due - now)
                    self._idle += 1
                    try:
                        self._cond.wait(max(wait, 0.001))
                    finally:
                        self._idle -= 1
        finally:
            sender_thread_idents.discard(ident)
            handle = getattr(self._local, "handle", None)
            if isinstance(handle, _Handle):
                handle.close()

    def _checkpoint_if_due(self) -> None:
        """Checkpoint the WAL when due, in two PASSIVE passes (they wait for no one).

        The first copies the bulk while the application keeps writing; the second, holding
        this process's write lock, copies what was appended meanwhile (a few pages), so that
        the WAL is wholly copied and the next commit starts it over instead of growing it
        (an ever longer WAL costs disk, and with ``synchronous=FULL`` an fsync that extends
        a file costs more than one that overwrites). The application waits for the second
        pass only, if it writes at that moment.
        """
        now = time.monotonic()
        if self._writes < CHECKPOINT_WRITES and (not self._writes or now < self._next_checkpoint):
            return
        with self._lock:
            self._writes = 0
            self._next_checkpoint = now + HOUSEKEEP_SECONDS
        try:
            conn = self._db()
            wlock = self._wlock
            with _checkpoint_guard:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                with wlock:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:
            pass  # the next pass, or a commit past the threshold, tries again

    @property
    def _wlock(self) -> threading.Lock:
        # Looked up once per process (after a fork, again: _reset_state clears it).
        lock = self._wlock_cached
        if lock is None:
            lock = self._wlock_cached = _write_lock(self.path)
        return lock

    def _stop_requested(self) -> bool:
        return self._stopped

    def _send_batch(self, batch: list[tuple[int, bytes, str, int]], token: str) -> None:
        for rid, body, origin, attempts in batch:
            with self._lock:
                paused = self._paused_until > time.monotonic()
                stopped = self._stopped
            if paused or stopped:
                self._release(token, time.time() + max(0.0, self._paused_until - time.monotonic()))
                return
            self._deliver(rid, body, origin, attempts, token)

    def _release(self, token: str, ready_at: float) -> None:
        try:
            conn = self._db()
            with self._wlock:
                conn.execute(
                    "UPDATE events SET claimed_by = NULL, ready_at = ? WHERE claimed_by = ?",
                    (ready_at, token),
                )
        except Exception:
            pass  # the lease expires; another claim picks them up

    def _deliver(self, rid: int, body: bytes, origin: str, attempts: int, token: str) -> None:
        """POST one claimed row and record its outcome in the spool."""
        with self._lock:
            self._posting += 1
        status: int | None = None
        wall0 = time.monotonic()
        cpu0 = time.thread_time()
        try:
            status, data, retry_after_raw, error = self._post(body)
        finally:
            wall = time.monotonic() - wall0
            cpu = time.thread_time() - cpu0
            with self._lock:
                if status is not None and cpu > 0:
                    self._observe(wall, cpu)
                self._posting -= 1
        try:
            if status is not None and 200 <= status < 300:
                if self._fail_streak:
                    with self._lock:
                        self._fail_streak = 0
                self._settle(rid, origin, "sent", "")
                return
            transient = status is None or status in (408, 429) or status >= 500
            if not transient:
                assert status is not None
                rejected = EventRejected(status, data)
                self._settle(rid, origin, "failed", str(rejected)[:BODY_PREVIEW])
                self._report_rejected(body, rejected)
                return
            self._reschedule(rid, attempts, token, status, data, retry_after_raw, error)
        except Exception as exc:
            _warner.warn(
                "spool-write",
                f"overcentric_logging: cannot record a delivery in the spool {self.path!r} "
                f"({type(exc).__name__}: {exc}); the event may be sent again",
            )
        finally:
            with self._lock:
                if self._flushers:
                    self._done_cond.notify_all()

    def _observe(self, wall: float, cpu: float) -> None:
        """Adapt the number of workers to one request's timing. Holds the lock.

        The estimate of :meth:`Sender._retarget` (requests in flight that pay off: wall time
        over CPU time), except while the process keeps a core busy: then a request's wall time
        is mostly its wait for the GIL, which the application's threads hold, not the server's
        latency, and each worker more only makes the application wait longer for the GIL
        after every INSERT (on loopback, 32 workers cost the caller 3-5 times what one does).
        So while busy, the target only comes down (halved once per window).
        """
        self._record_timing(wall, cpu)
        now = time.monotonic()
        if now >= self._load_next:
            process = time.process_time()
            if self._load_next:
                span = now - self._load_wall
                self._busy = span > 0 and (process - self._load_cpu) / span >= BUSY_SHARE
                if self._busy:
                    self._target = max(1, self._target // 2)
            self._load_wall, self._load_cpu = now, process
            self._load_next = now + LOAD_WINDOW
        if not self._busy:
            self._retarget(self._posting)

    def _settle(self, rid: int, origin: str, outcome: str, error: str) -> None:
        """One statement: DELETE on a 2xx, mark failed on a 4xx (triggers count them)."""
        conn = self._db()
        with self._wlock:
            if outcome == "sent":
                cur = conn.execute("DELETE FROM events WHERE id = ?", (rid,))
            else:
                cur = conn.execute(
                    "UPDATE events SET state = 1, claimed_by = NULL, attempts = attempts + 1, "
                    "last_try = ?, last_error = ? WHERE id = ? AND state = 0",
                    (time.time(), error, rid),
                )
        with self._lock:
            self._writes += 1
            if cur.rowcount == 1 and origin == self._origin:
                if outcome == "sent":
                    self._own_sent += 1
                else:
                    self._own_failed += 1

    def _report_rejected(self, body: bytes, error: EventRejected) -> None:
        _warner.warn("lost:failed", f"overcentric_logging: event failed: {error}")
        if self.config.on_error is None:
            return
        try:
            payload: dict[str, Any] | None = json.loads(body)
        except ValueError:
            payload = None
        self._call_on_error(payload, error)

    def _reschedule(
        self,
        rid: int,
        attempts: int,
        token: str,
        status: int | None,
        data: bytes,
        retry_after_raw: str | None,
        error: str,
    ) -> None:
        config = self.config
        retry_after = _retry_after(retry_after_raw)
        backoff = min(config.backoff_max, config.backoff_base * (2 ** min(attempts, 30)))
        delay = backoff * (0.5 + random.random() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        last = f"HTTP {status}" if status is not None else error
        if status is not None and data:
            last += f": {data[:200].decode('utf-8', 'replace')!r}"
        now = time.time()
        conn = self._db()
        with self._wlock:
            conn.execute(
                "UPDATE events SET claimed_by = NULL, ready_at = ?, attempts = attempts + 1, "
                "last_try = ?, last_error = ? WHERE id = ? AND claimed_by = ?",
                (now + delay, now, last, rid, token),
            )
        due = time.monotonic() + delay
        with self._lock:
            self.retries += 1
            if self._next_due is None or due < self._next_due:
                self._next_due = due
            if status == 429 or retry_after is not None:
                self._paused_until = max(self._paused_until, due)
            elif status is None or status in (502, 503, 504):
                # The server is unreachable or unavailable: the next events would fail the
                # same way, so the whole sender backs off (growing while it lasts); the events
                # wait in the spool meanwhile.
                self._fail_streak += 1
                pause = min(config.backoff_max,
                            config.backoff_base * (2 ** min(self._fail_streak - 1, 30)))
                pause *= 0.5 + random.random() / 2
                self._paused_until = max(self._paused_until, time.monotonic() + pause)
        _warner.warn(
            "transient",
            f"overcentric_logging: delivery failed ({last}); retrying in {delay:.1f}s "
            f"(the event is kept in the spool {self.path!r})",
        )

    def _send_now(self, rid: int) -> None:
        """sync=True: one attempt in the caller's thread; a retry is left to the workers."""
        token = f"{_HOST}|{self._pid}|{_process_token()}|sync.{threading.get_ident()}|{rid}"
        try:
            conn = self._db()
            now = time.time()
            with self._wlock:
                cur = conn.execute(
                    "UPDATE events SET claimed_by = ?, ready_at = ? WHERE id = ? AND state = 0 "
                    "AND claimed_by IS NULL",
                    (token, now + self._lease, rid),
                )
            if cur.rowcount != 1:
                return
            row = conn.execute(
                "SELECT body, origin, attempts FROM events WHERE id = ?", (rid,)
            ).fetchone()
        except Exception:
            return
        if row is not None:
            self._deliver(rid, bytes(row[0]), str(row[1]), int(row[2]), token)

    # -- flush / close / exit -------------------------------------------------------------

    def _unfinished_in_spool(self, target: int, adopt: int) -> bool:
        row = self._db().execute(
            "SELECT 1 FROM events WHERE state = 0 AND id <= ? AND (origin = ? OR id <= ?) "
            "LIMIT 1",
            (max(target, adopt), self._origin, adopt),
        ).fetchone()
        return row is not None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until this process's events so far (and the leftovers found at start) have
        left the spool (sent or failed); ``False`` at the deadline. With the server down the
        events stay in the spool, so ``flush(None)`` waits until it is back."""
        if self._pid != os.getpid():
            self._after_fork()
        self._report_drops()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            target = self._last_id
            adopt = self._adopt_upto
        done = True
        if (target or adopt) and self._broken is None:
            self._start_if_idle()
            done = self._wait_spool(target, adopt, deadline)
            if done and adopt:
                with self._lock:
                    if self._adopt_upto == adopt:
                        self._adopt_upto = 0
        memory = self._memory
        if memory is not None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = memory.flush(left) and done
        self._report_drops()
        return done

    def _wait_spool(self, target: int, adopt: int, deadline: float | None) -> bool:
        while True:
            try:
                if not self._unfinished_in_spool(target, adopt):
                    return True
            except Exception:
                pass
            with self._lock:
                if self._workers == 0 and (
                    self._stopped or (self._threads_unavailable and self._exit_deadline)
                ):
                    return False
                left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._flushers += 1
                try:
                    self._done_cond.wait(left)
                finally:
                    self._flushers -= 1

    def _report_left(self, when: str) -> None:
        try:
            row = self._db().execute(
                "SELECT COUNT(*) FROM events WHERE state = 0 AND origin = ?", (self._origin,)
            ).fetchone()
            left = int(row[0])
        except Exception:
            return
        if left:
            _warner.warn(
                f"spool-left:{when}",
                f"overcentric_logging: {left} event(s) not delivered yet at {when} stay in the "
                f"spool {self.path!r}; the next process that opens it sends them",
            )

    def close(self, timeout: float | None = None, *, wait: bool = True) -> bool:
        """Stop intake; with ``wait``, flush within ``timeout``. What is left stays spooled."""
        with self._lock:
            already = self._closed
            self._closed = True
        if not wait:
            if self._memory is not None:
                self._memory.close(wait=False)
            return not already
        if timeout is None:
            timeout = self.config.shutdown_timeout
        deadline = time.monotonic() + timeout
        ok = self.flush(timeout)
        with self._lock:
            self._stopped = True
            self._cond.notify_all()
        if not ok:
            self._report_left("close")
        if self._memory is not None:
            ok = self._memory.close(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def at_exit(self) -> None:
        """Interpreter exit: flush within ``shutdown_timeout``; the rest stays in the spool."""
        if self._pid != os.getpid():
            return
        timeout = self.config.shutdown_timeout
        deadline = time.monotonic() + timeout
        self._exit_deadline = deadline
        if not self.flush(timeout):
            self._report_left("exit")
        with self._lock:
            self._stopped = True
            self._cond.notify_all()
        if self._memory is not None:
            self._memory.at_exit()
