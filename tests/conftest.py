"""Shared pytest fixtures: a scriptable loopback HTTP server and a URL that refuses connections.

See ``tests/loopback.py`` for what the server records and the actions it can be scripted with.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loopback import LoopbackServer
from loopback import refused_url as _refused_url


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A started ``LoopbackServer`` on 127.0.0.1 answering 200 unless scripted otherwise."""
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """An event endpoint URL on 127.0.0.1 whose port refuses connections."""
    with _refused_url() as url:
        yield url
