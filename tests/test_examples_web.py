"""Smoke tests: each web framework example runs its self-contained demo and exits 0.

Every example starts a local receiver on 127.0.0.1, sends a request with the two browser-id
headers through the framework's test client, and checks itself that the received event carries
the request's ids and URL (its exit status says so); here we also check the printed output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEVICE_ID = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"


@pytest.mark.parametrize(
    ("script", "framework"),
    [
        ("flask_app.py", "flask"),
        ("fastapi_app.py", "fastapi"),
        ("django_app/app.py", "django"),
    ],
)
def test_example_runs_and_prints_the_event(script: str, framework: str) -> None:
    pytest.importorskip(framework)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(EXAMPLES.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(EXAMPLES.parent),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert '"name": "$signup"' in result.stdout, output
    assert f'"device_id": "{DEVICE_ID}"' in result.stdout, output
    assert '"url": "https://app.example.com/signup?ref=pricing"' in result.stdout, output
