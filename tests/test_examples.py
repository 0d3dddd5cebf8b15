"""Smoke tests: every example (and the README demo) runs against the local receiver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["demo.py", "stdlib_dictconfig.py", "structlog_processor.py",
            "structlog_stdlib_bridge.py", "direct_client.py"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_and_delivers(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "'failed': 0" in out and "'dropped': 0" in out, out
    assert "REJECTED" not in out, out
