"""Helpers shared by the delivery, queue/callback and hostile-input suites.

``make_client`` builds a client with small timeouts and backoffs aimed at a loopback server;
``ErrorLog`` is a thread-safe ``on_error`` recorder; ``assert_invariant`` checks the promise
``tracked == sent + failed + dropped + pending`` (every suite calls it after every scenario);
``seq_counts`` reads the unique ``seq`` property of every body the server accepted, so a test
can assert "every event exactly once"; ``wait_until`` is a bounded wait for a condition that
has no event of its own to await.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Callable

from loopback import LoopbackServer

import overcentric_logging
from overcentric_logging.schema import validate_payload

PROJECT = "proj_test"
WATCHDOG = 15.0

FAST: dict[str, Any] = {
    "backoff_base": 0.01,
    "backoff_max": 0.05,
    "timeout": 0.5,
    "shutdown_timeout": 2.0,
    "retry_budget": 10.0,
}


def make_client(endpoint: str, **options: Any) -> overcentric_logging.Client:
    """A client for ``endpoint`` with fast retries; ``options`` override the defaults."""
    merged = {**FAST, **options}
    return overcentric_logging.Client(project_id=PROJECT, endpoint=endpoint, **merged)


def assert_invariant(source: Any) -> dict[str, int]:
    """Assert ``tracked == sent + failed + dropped + pending``; returns the stats."""
    stats: Mapping[str, int] = source if isinstance(source, Mapping) else source.stats()
    total = stats["sent"] + stats["failed"] + stats["dropped"] + stats["pending"]
    assert stats["tracked"] == total, f"stats invariant broken: {dict(stats)}"
    assert min(stats.values()) >= 0, f"negative count: {dict(stats)}"
    return dict(stats)


def assert_settled(client: overcentric_logging.Client, timeout: float = WATCHDOG
                   ) -> dict[str, int]:
    """Flush (bounded), then assert nothing is pending and the invariant holds."""
    assert client.flush(timeout), f"flush did not finish: {client.stats()}"
    stats = assert_invariant(client)
    assert stats["pending"] == 0, stats
    return stats


class ErrorLog:
    """A thread-safe ``on_error(payload, error)`` recorder."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, BaseException]] = []
        self._lock = threading.Lock()
        self.called = threading.Event()

    def __call__(self, payload: Any, error: BaseException) -> None:
        with self._lock:
            self.calls.append((payload, error))
        self.called.set()

    def snapshot(self) -> list[tuple[Any, BaseException]]:
        with self._lock:
            return list(self.calls)

    def errors_of(self, kind: type[BaseException]) -> list[tuple[Any, BaseException]]:
        return [(p, e) for p, e in self.snapshot() if isinstance(e, kind)]


def seq_of(body: Any) -> Any:
    try:
        return body["event"]["properties"]["seq"]
    except (KeyError, TypeError):
        return None


def seq_counts(server: LoopbackServer) -> Counter[Any]:
    """How many times the server accepted (2xx) a body with each ``seq``."""
    return Counter(seq_of(body) for body in server.events)


def assert_sent_once(server: LoopbackServer, seqs: Iterable[Any]) -> None:
    """Every ``seq`` in ``seqs`` was accepted exactly once, and nothing else was accepted."""
    counts = seq_counts(server)
    expected = Counter(seqs)
    assert counts == expected, (
        f"missing={sorted(set(expected) - set(counts), key=str)[:20]} "
        f"twice={[s for s, n in counts.items() if n > 1][:20]} "
        f"unexpected={sorted(set(counts) - set(expected), key=str)[:20]}"
    )


def assert_schema_ok(server: LoopbackServer) -> None:
    """Every request the server read is strict JSON that passes ``validate_payload``."""
    problems = server.schema_errors()
    assert not problems, problems[:10]


def assert_body_ok(body: Any) -> None:
    problems = validate_payload(body)
    assert not problems, problems[:10]


def track_seqs(client: overcentric_logging.Client, seqs: Iterable[Any],
               name: str = "$signup") -> None:
    """Track one event per ``seq``; the calls must return normally."""
    for seq in seqs:
        client.track(name, {"seq": seq})


def wait_until(predicate: Callable[[], bool], timeout: float = WATCHDOG,
               interval: float = 0.005) -> bool:
    """Poll ``predicate`` until it holds; False when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        pause.wait(interval)
    return True


def run_bounded(fn: Callable[[], Any], timeout: float = WATCHDOG) -> Any:
    """Run ``fn`` in a thread; fail (instead of hanging) if it does not return in time.

    Re-raises what ``fn`` raised, so "the caller never sees an exception" can be asserted.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the test thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn!r} blocked for more than {timeout}s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "overcentric-sender" and t.is_alive()]
