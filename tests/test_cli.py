"""The command line: send-test-event against the local receiver and a scripted server,
check-config on JSON and INI files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from overcentric_logging.receiver import Receiver


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "overcentric_logging", *args],
                          capture_output=True, text=True, timeout=60)


def test_help_for_every_command() -> None:
    for cmd in ([], ["serve"], ["send-test-event"], ["check-config"]):
        proc = _run(*cmd, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "usage:" in proc.stdout


def test_send_test_event_to_local_receiver() -> None:
    with Receiver(quiet=True) as receiver:
        proc = _run("send-test-event", "--project-id", "proj_cli", "--endpoint", receiver.url)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "HTTP 200" in proc.stdout and "ok: the server accepted the event" in proc.stdout
        assert receiver.wait_for(1, timeout=5)
        body = receiver.events[0]
        assert body["event"]["project_id"] == "proj_cli"
        # What was printed is exactly what was sent.
        printed = proc.stdout.split("\n", 1)[1].split("\nHTTP ")[0]
        assert json.loads(printed) == body


def test_send_test_event_diagnoses_failures(server, refused_url: str) -> None:  # type: ignore[no-untyped-def]
    from loopback import status

    proc = _run("send-test-event", "--project-id", "p", "--endpoint", refused_url)
    assert proc.returncode == 1
    assert "refused" in proc.stderr

    server.script(status(422, b'{"error":"bad name"}'))
    proc = _run("send-test-event", "--project-id", "p", "--endpoint", server.url)
    assert proc.returncode == 1
    assert "HTTP 422" in proc.stderr and "bad name" in proc.stderr

    server.script(status(503))
    proc = _run("send-test-event", "--project-id", "p", "--endpoint", server.url)
    assert proc.returncode == 1 and "server error" in proc.stderr

    proc = _run("send-test-event", "--endpoint", server.url, "--project-id", "")
    assert proc.returncode == 2 and "project_id" in proc.stderr


def test_check_config_json_and_ini(tmp_path: Path) -> None:
    # In a subprocess: building a config rewires the process's logging.
    cfg = {
        "version": 1,
        "handlers": {"oc": {"class": "overcentric_logging.OvercentricHandler",
                            "project_id": "proj_secret_123", "events": ["invite_*"],
                            "endpoint": "http://127.0.0.1:9/api/v1/event"}},
        "loggers": {"billing": {"level": "INFO", "handlers": ["oc"]}},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(cfg))
    proc = _run("check-config", str(path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "1 Overcentric handler(s)" in out
    assert "billing (INFO)" in out and "invite_*" in out
    assert "proj_secret_123" not in out and "pro…" in out

    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root\n[handlers]\nkeys=oc\n[formatters]\nkeys=\n"
        "[logger_root]\nlevel=INFO\nhandlers=oc\n"
        "[handler_oc]\nclass=overcentric_logging.OvercentricHandler\nlevel=INFO\n"
        "args=('proj_ini',)\nkwargs={'endpoint': 'http://127.0.0.1:9/api/v1/event'}\n"
    )
    proc = _run("check-config", str(ini))
    assert proc.returncode == 0, proc.stderr
    assert "root (INFO)" in proc.stdout

    bad = tmp_path / "bad.json"
    cfg["handlers"]["oc"]["context"] = "web"  # type: ignore[index]
    bad.write_text(json.dumps(cfg))
    proc = _run("check-config", str(bad))
    assert proc.returncode == 1
    assert "context must be 'website' or 'product'" in proc.stderr


def test_check_config_yaml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "logging.yaml"
    path.write_text(
        "version: 1\n"
        "handlers:\n"
        "  oc:\n"
        "    class: overcentric_logging.OvercentricHandler\n"
        "    project_id: proj_yaml_42\n"
        "    endpoint: http://127.0.0.1:9/api/v1/event\n"
        "    prefix: null\n"
        "    name_key: analytics_event\n"
        "root:\n"
        "  level: INFO\n"
        "  handlers: [oc]\n"
    )
    proc = _run("check-config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "records with an extra 'analytics_event'" in proc.stdout
    assert "messages starting with" not in proc.stdout  # prefix turned off
    assert "proj_yaml_42" not in proc.stdout
