"""The pytest plugin (entry point ``pytest11``): the ``overcentric_events`` fixture.

As ``caplog`` is for logs, ``overcentric_events`` is for events: while a test runs, every
client in the process (including handlers built at import time by ``dictConfig``) maps its
events synchronously into an in-memory list and sends nothing over the network. This module
imports nothing heavy; the capture machinery loads only when the fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import CapturedEvents


@pytest.fixture
def overcentric_events() -> Iterator[CapturedEvents]:
    """The events tracked during the test, as the exact JSON bodies that would be POSTed."""
    from .testing import capture_events

    with capture_events() as events:
        yield events
