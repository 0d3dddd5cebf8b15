"""The sender: a bounded queue, background workers, one keep-alive pool, retries, outcomes.

The caller's thread only calls :meth:`Sender.submit`, which appends to a ``deque`` under a
lock held for a few operations and never does I/O. Worker threads (daemons, started lazily on
the first event, growing with the backlog up to ``max_workers`` and shrinking back to one when
idle) finish the mapping, encode JSON, POST one event per request over a single urllib3
connection pool, and retry transient failures with exponential backoff and jitter; a 429 or a
``Retry-After`` pauses the whole sender. Every event accepted by ``submit`` ends counted as
``sent``, ``failed`` or ``dropped`` (``pending`` until then), and each loss is reported through
``on_error`` and a rate-limited warning. The sender re-initialises itself in a forked child,
bounds every wait, and at interpreter exit sends late events inline within the deadline.
"""

from __future__ import annotations

import email.utils

# Imported here, not by a sender thread's first connection: a fork that catches that import
# half-done leaves the child unable to resolve any host ("LookupError: unknown encoding: idna").
import encodings.idna  # noqa: F401
import heapq
import itertools
import json
import math
import os
import random
import sys
import threading
import time
import urllib.request
import uuid
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable
from urllib.parse import urlsplit

import urllib3

from ._version import __version__
from .config import Config, is_loopback
from .diagnostics import RateLimiter, logger
from .errors import EventDropped, EventRejected, RetriesExhausted
from .mapping import PayloadError, RawEvent, build_payload
from .schema import RESERVED_NAMES, closest_reserved, validate_payload
from .values import encode
from .wire import build_head, exchange

__all__ = ["Sender", "capture_sinks", "live_senders", "sender_thread_idents"]

IDLE_SECONDS = 5.0
BREAKER_AFTER = 3  # network errors in a row that pause the whole sender
BODY_PREVIEW = 512

# Threads that belong to a sender: records they emit are never events (no recursion).
sender_thread_idents: set[int] = set()
# Every sender alive in this process, for module-level flush(), testing capture and fork.
live_senders: weakref.WeakSet[Sender] = weakref.WeakSet()
# While non-empty, events are mapped synchronously and handed to these sinks instead of being
# sent: (sender the sink is for, or None for every sender; callback receiving the decoded body).
capture_sinks: list[tuple[Sender | None, Callable[[dict[str, Any]], None]]] = []

_warner = RateLimiter()
_typo_warned: set[str] = set()


_process_uuids: dict[int, str] = {}


def process_uuid() -> str:
    """The fallback device/session id: one UUID per process, shared by every client, new
    in a forked child (SPEC §3, "Fallback ids"). ``setdefault`` keeps it one under races."""
    pid = os.getpid()
    current = _process_uuids.get(pid)
    return current if current is not None else _process_uuids.setdefault(pid, str(uuid.uuid4()))


class _Item:
    """One event on its way: the raw snapshot, then its encoded body, and its attempts."""

    __slots__ = ("attempts", "body", "done", "first_try", "gen", "payload", "raw")

    def __init__(self, raw: RawEvent, gen: int) -> None:
        self.raw = raw
        self.gen = gen
        self.payload: dict[str, Any] | None = None
        self.body: bytes | None = None
        self.attempts = 0
        self.first_try = 0.0
        self.done = False


def _as_item(entry: _Item | tuple[Any, int]) -> _Item:
    """A queue entry as a work item: retries are already _Items; fresh events are
    ``(RawEvent or its fields as a tuple, flush generation)``."""
    if isinstance(entry, _Item):
        return entry
    event, gen = entry
    raw = event if isinstance(event, RawEvent) else RawEvent(*event)
    return _Item(raw, gen)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Sender:
    """Delivers events for one client. Thread-safe; see the module docstring."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"overcentric-logging/{__version__}",
            **config.headers,
        }
        self._closed = False
        self._exit_hook_due = False  # set in a forked child: see _hook_multiprocessing_exit
        self._reset_state()
        live_senders.add(self)
        parts = urlsplit(config.endpoint)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            _warner.warn(
                "plain-http",
                f"endpoint {config.endpoint!r} uses plain http to a non-loopback host; "
                "events (and user emails) travel unencrypted",
                once=True,
            )

    # -- state ----------------------------------------------------------------------------

    def _reset_state(self) -> None:
        """(Re)build everything that must not cross a fork: locks, queues, pool, threads."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Fresh events wait as (event, flush generation) and become _Items only in a worker:
        # fewer allocations on the caller's thread.
        self._queue: deque[_Item | tuple[Any, int]] = deque()
        self._delayed: list[tuple[float, int, _Item]] = []
        self._seq = itertools.count()
        self._inflight: set[_Item] = set()
        self._inline = 0
        self._workers = 0
        self._idle = 0
        self._paused_until = 0.0
        # Circuit breaker: after BREAKER_AFTER network errors in a row (no answer of any kind
        # in between), the sender pauses and then sends one probe at a time (the others wait)
        # until an answer comes back. A lone reset among answers trips nothing.
        self._net_failures = 0  # network errors since the last answer
        self._trips = 0  # failed probes in a row while tripped (0: closed breaker)
        self._probe: _Item | None = None
        # Requests in flight that pay off: wall time over CPU time per request (Little's law
        # with the GIL as the one core). 0 ms latency needs ~2 workers, 20 ms needs dozens.
        self._ewma_wall = 0.0
        self._ewma_cpu = 0.0
        self._target = min(8, self.config.max_workers)  # until the first answers come back
        # flush() waits per generation: events accepted before it was called. The current
        # generation's count is a plain int (cheap for the caller); flush() files it in
        # _unfinished under its number and starts the next generation.
        self._gen = 0
        self._cur_pending = 0
        self._unfinished: dict[int, int] = {}
        self.tracked = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.retries = 0
        self.dropped_reasons: dict[str, int] = {}
        self._unreported: dict[str, int] = {}
        self._exit_deadline: float | None = None
        self._threads_unavailable = False
        # One flag for "not the plain in-memory path" (sync, exit, no threads, a spool).
        self._slow = bool(self.config.sync) or not self.queues_in_memory
        self._pool: Any = None
        self._head: bytes | None = None  # prebuilt request head: the direct (no proxy) path
        self._url = ""
        self.process_id = process_uuid()

    def _after_fork(self) -> None:
        # The parent still owns (and will send) what it had queued; the child starts empty.
        self._reset_state()
        self._exit_hook_due = True

    def stats(self) -> dict[str, int]:
        with self._lock:
            pending = (
                len(self._queue) + len(self._delayed) + len(self._inflight) + self._inline
            )
            return {
                "tracked": self.tracked,
                "sent": self.sent,
                "failed": self.failed,
                "dropped": self.dropped,
                "retries": self.retries,
                "pending": pending,
            }

    # -- the caller's side ----------------------------------------------------------------

    # A subclass that keeps events elsewhere (the spool) sets this False, so that enqueue()
    # hands it a RawEvent through submit().
    queues_in_memory = True

    def enqueue(
        self,
        name: Any,
        fields: Mapping[str, Any],
        bound: Mapping[str, Any],
        kind: str,
        exc: Any = None,
        extra_bound: Mapping[str, Any] | None = None,
    ) -> None:
        """The adapters' fast path: accept one event without building a RawEvent in the
        caller's thread (a tuple is cheaper; the worker builds the RawEvent). Never raises."""
        try:
            if self._slow or capture_sinks or self._pid != os.getpid():
                self.submit(RawEvent(name, fields, bound, kind, exc, extra_bound))
            else:
                self._accept((name, fields, bound, kind, exc, extra_bound))
        except Exception:  # pragma: no cover - last line of defence for the caller
            try:
                logger.exception("overcentric_logging: internal error while accepting an event")
            except Exception:
                pass

    def submit(self, raw: RawEvent) -> None:
        """Accept one event. Never blocks on I/O, never raises."""
        try:
            if self._pid != os.getpid():
                self._after_fork()
            if capture_sinks and self._capture(raw):
                return
            if self.config.sync or self._exit_deadline is not None or self._threads_unavailable:
                self._send_inline(raw)
                return
            self._accept(raw)
        except Exception:  # pragma: no cover - last line of defence for the caller
            try:
                logger.exception("overcentric_logging: internal error while accepting an event")
            except Exception:
                pass

    def _accept(self, entry: RawEvent | tuple[Any, ...]) -> None:
        """Queue one event (a RawEvent, or the tuple of its fields) for the workers."""
        start = False
        with self._lock:
            self.tracked += 1
            if self._closed:
                self._drop_locked("closed")
                return
            queue = self._queue
            if len(queue) + len(self._delayed) + len(self._inflight) >= self.config.max_queue_size:
                self._drop_locked("queue_full")
                return
            gen = self._gen
            self._cur_pending += 1
            queue.append((entry, gen))
            if self._idle:
                # One wake-up per empty-to-busy transition: a worker that wakes to a backlog
                # wakes the next one itself, so a burst costs the caller no futex per event.
                if len(queue) == 1:
                    self._cond.notify()
            elif self._workers < self._target and (
                len(queue) > self._workers - len(self._inflight)
            ):
                # Every worker is busy (a slow request must not hold up the backlog).
                self._workers += 1
                start = True
        if start:
            self._start_worker()

    def reject(self, reason: str) -> None:
        """Count one event that an adapter refused (for example a closed handler)."""
        with self._lock:
            self.tracked += 1
            self._drop_locked(reason)

    def nudge(self) -> None:
        """Wake the workers and report pending drops; never waits for delivery."""
        with self._lock:
            self._cond.notify_all()
        self._report_drops()

    def _drop_locked(self, reason: str, count: int = 1) -> None:
        self.dropped += count
        self.dropped_reasons[reason] = self.dropped_reasons.get(reason, 0) + count
        self._unreported[reason] = self._unreported.get(reason, 0) + count

    def _report_drops(self) -> None:
        """Report drops counted in the caller's thread, from a thread where that is safe."""
        if not self._unreported:
            return
        with self._lock:
            pending, self._unreported = self._unreported, {}
        for reason, count in pending.items():
            error = EventDropped(reason, count)
            _warner.warn(f"drop:{reason}", f"overcentric_logging: {error}")
            self._call_on_error(None, error)

    def _start_worker(self) -> None:
        if self._exit_hook_due:
            self._exit_hook_due = False
            _hook_multiprocessing_exit(self)
        try:
            thread = threading.Thread(
                target=self._worker, name="overcentric-sender", daemon=True
            )
            thread.start()
        except RuntimeError:
            # Python 3.12+ refuses new threads at interpreter shutdown: send inline instead.
            with self._lock:
                self._workers -= 1
                self._threads_unavailable = True
                self._slow = True
            self._drain_inline()

    # -- workers --------------------------------------------------------------------------

    def _next_item(self) -> _Item | None:
        """Wait for work; ``None`` tells the calling worker to exit. Holds the lock."""
        idle_since = time.monotonic()
        while True:
            if self._pid != os.getpid():
                return None
            now = time.monotonic()
            delayed = self._delayed
            while delayed and delayed[0][0] <= now:
                # Retries go first: they are the oldest events.
                self._queue.appendleft(heapq.heappop(delayed)[2])
            wait: float | None = None
            if self._workers > max(self._target, 1) and not self._closed:
                # More workers than requests in flight can use: retire, and pass a wake-up
                # meant for this worker on to the next one.
                if self._queue:
                    self._cond.notify()
                return None
            if self._paused_until > now:
                wait = self._paused_until - now
            elif self._trips and self._probe is not None:
                wait = self.config.timeout  # a probe is out; its outcome wakes us
            elif self._queue:
                item = _as_item(self._queue.popleft())
                if self._trips:
                    self._probe = item
                return item
            elif delayed:
                wait = delayed[0][0] - now
            if wait is None:
                if self._closed and not self._inflight:
                    return None
                idle_for = now - idle_since
                if idle_for >= IDLE_SECONDS and self._workers > 1:
                    return None
                wait = IDLE_SECONDS if self._workers == 1 else IDLE_SECONDS - idle_for
            self._idle += 1
            try:
                self._cond.wait(max(wait, 0.001))
            finally:
                self._idle -= 1

    def _worker(self) -> None:
        ident = threading.get_ident()
        sender_thread_idents.add(ident)
        pid = self._pid
        try:
            while True:
                self._report_drops()
                spawn = False
                with self._lock:
                    item = self._next_item()
                    if item is None:
                        if self._pid == pid:
                            self._workers -= 1
                        return
                    self._inflight.add(item)
                    if self._queue and self._idle:
                        self._cond.notify()
                    if (
                        self._queue
                        and not self._idle
                        and not self._trips
                        and self._workers < self._target
                    ):
                        self._workers += 1
                        spawn = True
                if spawn:
                    self._start_worker()
                try:
                    self._process(item)
                except BaseException as exc:  # a worker outlives any surprise
                    self._finish(item, "failed", exc)
        finally:
            sender_thread_idents.discard(ident)

    def _process(self, item: _Item) -> None:
        if item.body is None and not self._prepare(item):
            return
        if not item.attempts:
            item.first_try = time.monotonic()
        outcome = self._attempt(item)
        if outcome is None:
            return
        delay, pause = outcome
        with self._lock:
            if item.done:
                return
            self.retries += 1
            self._inflight.discard(item)
            due = time.monotonic() + delay
            if pause:
                self._paused_until = max(self._paused_until, time.monotonic() + pause)
            heapq.heappush(self._delayed, (due, next(self._seq), item))
            self._cond.notify()

    def _prepare(self, item: _Item) -> bool:
        """Finish the mapping and encode; on failure the item is finished as dropped/failed."""
        config = self.config
        raw = item.raw
        try:
            payload: dict[str, Any] | None = build_payload(
                raw, config, self.process_id, _warner.warn
            )
        except PayloadError as exc:
            self._finish(item, "dropped", EventDropped("invalid", detail=str(exc)))
            return False
        except Exception as exc:
            self._finish(item, "dropped", EventDropped("invalid", detail=repr(exc)))
            return False
        assert payload is not None
        name = payload["event"]["name"]
        if (
            name.startswith("$")
            and name not in RESERVED_NAMES
            and name not in _typo_warned
            and len(_typo_warned) < 1000
        ):
            _typo_warned.add(name)
            near = closest_reserved(name)
            hint = f"; did you mean {near!r}?" if near else ""
            _warner.warn(
                f"typo:{name}",
                f"event {name!r} starts with '$' but is not a reserved Overcentric name"
                f"{hint} (it is sent anyway)",
                once=True,
            )
        if config.before_send is not None:
            original = payload
            try:
                payload = config.before_send(payload)
            except BaseException as exc:  # even SystemExit from a hook
                # Sending what a privacy hook failed to scrub would be worse than losing it.
                self._finish(item, "failed", exc, original)
                return False
            if payload is None:
                self._finish(item, "dropped", EventDropped("before_send"), original)
                return False
        item.payload = payload
        try:
            body = encode(payload, config.max_event_bytes)
        except Exception:
            body = None
        if body is None:
            self._finish(
                item,
                "dropped",
                EventDropped("too_large", detail=f"over max_event_bytes={config.max_event_bytes}"),
                payload,
            )
            return False
        if config.before_send is not None:
            # The hook may return anything: never put a body on the wire that the API
            # would not understand.
            problems = validate_payload(json.loads(body))
            if problems:
                detail = f"before_send returned an invalid payload: {problems[0]}"
                self._finish(item, "dropped", EventDropped("invalid", detail=detail), original)
                return False
        item.body = body
        return True

    def _ensure_pool(self) -> None:
        config = self.config
        kw: dict[str, Any] = {"maxsize": config.max_workers, "block": False}
        if config.ca_certs:
            kw["ca_certs"] = config.ca_certs
        parts = urlsplit(config.endpoint)
        proxy = config.proxy
        if proxy is None and not is_loopback(parts.hostname or ""):
            proxies = urllib.request.getproxies()
            candidate = proxies.get(parts.scheme)
            if candidate and not urllib.request.proxy_bypass(parts.netloc):
                proxy = candidate
        self._timeout = urllib3.Timeout(total=config.timeout, connect=config.timeout)
        if proxy:
            self._pool = urllib3.ProxyManager(proxy, **kw)
            self._url = config.endpoint
            self._head = None
        else:
            kw["timeout"] = urllib3.Timeout(connect=config.timeout, read=config.timeout)
            self._pool = urllib3.connection_from_url(config.endpoint, **kw)
            self._url = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            self._head = build_head(config.endpoint, self._headers)

    def _post(self, body: bytes) -> tuple[int | None, bytes, str | None, str]:
        """One POST. Returns (status, body preview, Retry-After, error text)."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._ensure_pool()
        if self._head is not None:
            try:
                status, data, retry_after = exchange(
                    self._pool, self._head, body, self.config.timeout, BODY_PREVIEW
                )
            except Exception as exc:
                return None, b"", None, f"{type(exc).__name__}: {exc}"
            return status, data, retry_after, ""
        try:
            resp = self._pool.urlopen(
                "POST",
                self._url,
                body=body,
                headers=self._headers,
                retries=False,
                redirect=False,
                timeout=self._timeout,
                assert_same_host=False,
                preload_content=False,
            )
            try:
                data = resp.read(BODY_PREVIEW, decode_content=False)
                resp.drain_conn()
            finally:
                resp.release_conn()
            return resp.status, data, resp.headers.get("Retry-After"), ""
        except Exception as exc:
            return None, b"", None, f"{type(exc).__name__}: {exc}"

    def _attempt(self, item: _Item, deadline: float | None = None) -> tuple[float, float] | None:
        """POST once; finish the item, or return (its delay, seconds to pause everything)."""
        assert item.body is not None
        wall0 = time.monotonic()
        cpu0 = time.thread_time()
        status, data, retry_after_raw, error = self._post(item.body)
        self._after_request(
            item, status, time.monotonic() - wall0, time.thread_time() - cpu0
        )
        item.attempts += 1
        if status is not None and 200 <= status < 300:
            self._finish(item, "sent")
            return None
        transient = status is None or status in (408, 429) or status >= 500
        if not transient:
            assert status is not None
            self._finish(item, "failed", EventRejected(status, data))
            return None
        config = self.config
        retry_after = _retry_after(retry_after_raw)
        backoff = min(config.backoff_max, config.backoff_base * (2 ** (item.attempts - 1)))
        delay = backoff * (0.5 + random.random() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        last = f"HTTP {status}" if status is not None else error
        elapsed = time.monotonic() - item.first_try
        limit = config.retry_budget
        if deadline is not None:
            limit = min(limit, deadline - item.first_try)
        if item.attempts > config.max_retries or elapsed + delay > limit:
            if status is not None:
                last += f": {data[:BODY_PREVIEW].decode('utf-8', 'replace')!r}"
            self._finish(item, "failed", RetriesExhausted(item.attempts, last, status))
            return None
        _warner.warn(
            "transient",
            f"overcentric_logging: delivery failed ({last}); retrying in {delay:.1f}s",
        )
        # The whole sender pauses for what the server asked (Retry-After; the backoff for a
        # bare 429), never for this event's own backoff: "Retry-After: 0" pauses nothing.
        pause = retry_after if retry_after is not None else (delay if status == 429 else 0.0)
        return delay, pause

    def _after_request(self, item: _Item, status: int | None, wall: float, cpu: float) -> None:
        """Feed the circuit breaker and the concurrency estimate with one request's outcome."""
        config = self.config
        wake = False
        with self._lock:
            if status is None:
                self._net_failures += 1
                if self._probe is item or (
                    not self._trips and self._net_failures >= BREAKER_AFTER
                ):
                    self._trips += 1
                    exp = min(self._trips - 1, 16)
                    pause = min(config.backoff_max, config.backoff_base * 2**exp)
                    pause *= 0.5 + random.random() / 2
                    self._paused_until = max(self._paused_until, time.monotonic() + pause)
            else:
                self._net_failures = 0
                if self._trips:
                    self._trips = 0
                    wake = True
                if cpu > 0:
                    self._record_timing(wall, cpu)
                    self._retarget(len(self._inflight))
            if self._probe is item:
                self._probe = None
                wake = True
            if wake:
                self._cond.notify_all()

    def _record_timing(self, wall: float, cpu: float) -> None:
        """Fold one request's wall and CPU time into the moving averages. Holds the lock."""
        if self._ewma_cpu:
            self._ewma_wall += 0.2 * (wall - self._ewma_wall)
            self._ewma_cpu += 0.2 * (cpu - self._ewma_cpu)
        else:
            self._ewma_wall, self._ewma_cpu = wall, cpu

    def _retarget(self, concurrent: int) -> None:
        """Choose how many requests in flight pay off. Holds the lock.

        With ``k`` requests in flight and the GIL as the one core, a request whose wall time
        is about ``k`` times its CPU time spent its life waiting for the GIL, not for the
        server: more threads would only add contention (0 ms loopback: one or two). A wall
        time well above that is network latency, which more requests in flight hide
        (Little's law: wall ÷ CPU of them; 20 ms: all of ``max_workers``).
        """
        wall, cpu = self._ewma_wall, self._ewma_cpu
        busy = cpu * max(concurrent, 1)
        # Hysteresis: the application's own threads share the GIL too, so a wall time of
        # up to ~2x the busy time is still contention, not latency.
        if wall > 2.5 * busy:
            useful = math.ceil(wall / cpu)
            self._target = max(self._target, min(self.config.max_workers, useful))
        elif wall < 1.5 * busy and self._target > 1:
            self._target -= 1

    def _finish(
        self,
        item: _Item,
        outcome: str,
        error: BaseException | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            if item.done:
                return
            item.done = True
            self._inflight.discard(item)
            if self._probe is item:
                self._probe = None
                self._cond.notify_all()
            if outcome == "sent":
                self.sent += 1
            elif outcome == "failed":
                self.failed += 1
            else:
                self.dropped += 1
                reason = getattr(error, "reason", "dropped")
                self.dropped_reasons[reason] = self.dropped_reasons.get(reason, 0) + 1
        try:
            if error is not None:
                if not isinstance(error, EventDropped) or error.reason != "before_send":
                    _warner.warn(
                        f"lost:{outcome}", f"overcentric_logging: event {outcome}: {error}"
                    )
                self._call_on_error(payload if payload is not None else item.payload, error)
        finally:
            # Only now may flush() return: a loss is reported before it counts as finished.
            with self._lock:
                self._settle_locked(item.gen)

    def _settle_locked(self, gen: int) -> None:
        """One event of flush generation ``gen`` is finished; wake flush() when it was the last."""
        if gen == self._gen:
            self._cur_pending -= 1
            return  # nobody waits for the current generation
        left = self._unfinished.get(gen, 1) - 1
        if left:
            self._unfinished[gen] = left
        else:
            self._unfinished.pop(gen, None)
            self._cond.notify_all()

    def _call_on_error(self, payload: Mapping[str, Any] | None, error: BaseException) -> None:
        callback = self.config.on_error
        if callback is None:
            return
        try:
            callback(payload, error)
        except BaseException:  # even SystemExit must not kill a worker
            _warner.warn("on_error", "overcentric_logging: the on_error callback raised")

    # -- inline sending: sync=True, capture, interpreter exit -----------------------------

    def _capture(self, raw: RawEvent) -> bool:
        """Testing capture: map and encode now, hand the decoded body to the sinks."""
        sinks = [cb for target, cb in capture_sinks if target is None or target is self]
        if not sinks:
            return False
        item = _Item(raw, -1)
        with self._lock:
            self.tracked += 1
            self._inline += 1
            self._unfinished[-1] = self._unfinished.get(-1, 0) + 1
        try:
            if self._prepare(item):
                assert item.body is not None
                decoded = json.loads(item.body)
                for sink in sinks:
                    sink(decoded)
                self._finish(item, "sent")
        finally:
            with self._lock:
                self._inline -= 1
        return True

    def _send_inline(self, raw: RawEvent) -> None:
        item = _Item(raw, -1)
        with self._lock:
            self.tracked += 1
            if self._closed and self._exit_deadline is None:
                self._drop_locked("closed")
                return
            self._inline += 1
            self._unfinished[-1] = self._unfinished.get(-1, 0) + 1
        try:
            self._run_inline(item)
        finally:
            with self._lock:
                self._inline -= 1
        self._report_drops()

    def _run_inline(self, item: _Item) -> None:
        deadline = self._exit_deadline
        if deadline is None and self._threads_unavailable:
            deadline = time.monotonic() + self.config.shutdown_timeout
        if deadline is not None and time.monotonic() >= deadline:
            self._finish(item, "dropped", EventDropped("shutdown", detail="exit deadline passed"))
            return
        if not self._prepare(item):
            return
        item.first_try = time.monotonic()
        while True:
            outcome = self._attempt(item, deadline)
            if outcome is None:
                return
            with self._lock:
                self.retries += 1
            time.sleep(outcome[0])

    def _drain_inline(self) -> None:
        """Send what is queued from this thread (no threads can be started)."""
        while True:
            with self._lock:
                if not self._queue:
                    return
                item = _as_item(self._queue.popleft())
                self._inflight.add(item)
            self._run_inline(item)

    # -- flush / close / exit -------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far is sent or has failed (or been dropped)."""
        if self._pid != os.getpid():
            self._after_fork()
        self._report_drops()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            target = self._gen
            if self._cur_pending:
                self._unfinished[target] = self._cur_pending
                self._cur_pending = 0
            self._gen += 1
            self._cond.notify_all()
            while any(gen <= target for gen in self._unfinished):
                if self._workers == 0 and (self._queue or self._delayed):
                    # Nobody would ever take them (threads unavailable or all exited).
                    break
                if deadline is None:
                    self._cond.wait(1.0)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 1.0))
            done = not any(gen <= target for gen in self._unfinished)
        if not done and self._workers == 0 and self._queue:
            self._drain_inline()
            with self._lock:
                done = not any(gen <= target for gen in self._unfinished)
        self._report_drops()
        return done

    def close(self, timeout: float | None = None, *, wait: bool = True) -> bool:
        """Stop intake; with ``wait``, flush within ``timeout`` and drop what is left."""
        with self._lock:
            already = self._closed
            self._closed = True
            self._cond.notify_all()
        if not wait:
            return not already
        if timeout is None:
            timeout = self.config.shutdown_timeout
        ok = self.flush(timeout)
        if not ok:
            self._abandon("shutdown")
        return ok

    def _abandon(self, reason: str) -> None:
        """Count everything still pending as dropped and report it once."""
        with self._lock:
            items = [_as_item(q) for q in self._queue]
            items += [d[2] for d in self._delayed] + list(self._inflight)
            self._queue.clear()
            self._delayed.clear()
        lost = 0
        for item in items:
            with self._lock:
                if item.done:
                    continue
            lost += 1
            self._finish_quietly(item, reason)
        if lost:
            error = EventDropped(reason, lost, "not delivered within shutdown_timeout")
            _warner.warn(f"abandon:{reason}", f"overcentric_logging: {error}")
            self._call_on_error(None, error)

    def _finish_quietly(self, item: _Item, reason: str) -> None:
        with self._lock:
            if item.done:
                return
            item.done = True
            self._inflight.discard(item)
            self.dropped += 1
            self.dropped_reasons[reason] = self.dropped_reasons.get(reason, 0) + 1
            self._settle_locked(item.gen)

    def at_exit(self) -> None:
        """Interpreter exit: flush within ``shutdown_timeout``; late events go inline."""
        if self._pid != os.getpid():
            return
        timeout = self.config.shutdown_timeout
        self._exit_deadline = time.monotonic() + timeout
        self._slow = True
        if not self.flush(timeout):
            self._abandon("shutdown")


def _hook_multiprocessing_exit(sender: Sender) -> None:
    """A multiprocessing child (Process, Pool worker) leaves through ``os._exit()``, so no
    atexit flush runs there; its ``multiprocessing.util`` finalizers do, just before. Called on
    the first event of a forked child (after ``Process._bootstrap`` cleared the inherited
    finalizers), it registers the same bounded exit flush as a finalizer."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    try:
        util.Finalize(None, _exit_flush_ref, args=(weakref.ref(sender),), exitpriority=10)
    except Exception:  # pragma: no cover - a changed multiprocessing API must not hurt
        pass


def _exit_flush_ref(ref: weakref.ref[Sender]) -> None:
    sender = ref()
    if sender is not None:
        try:
            sender.at_exit()
        except Exception:  # pragma: no cover
            pass


def _after_fork_in_child() -> None:
    for sender in list(live_senders):
        sender._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

