"""``python -m overcentric_logging check-config PATH``: build a logging config, explain it.

The file is a ``dictConfig`` in JSON or YAML (YAML needs PyYAML) or a ``fileConfig`` INI. It is
built for real (so a bad option fails exactly as it would in the application, with the same
message), then every :class:`OvercentricHandler` reachable from a logger is listed with its
effective settings (the project id masked) and which records it would track. Nothing is sent:
the handlers are built under :func:`~overcentric_logging.testing.capture_events`.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
from typing import Any, TextIO

from .handler import OvercentricHandler
from .testing import capture_events

__all__ = ["check_config_main", "describe_handler"]


def _load(path: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".ini", ".cfg", ".conf"):
        logging.config.fileConfig(path, disable_existing_loggers=False)
        return
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if ext in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ValueError("reading YAML needs PyYAML: pip install pyyaml") from exc
        data: Any = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, dict) and "LOGGING" in data and "version" not in data:
        data = data["LOGGING"]  # a Django-style settings excerpt
    if not isinstance(data, dict):
        raise ValueError("the file must hold a dictConfig mapping (with 'version': 1)")
    logging.config.dictConfig(data)


def _attached() -> dict[int, list[str]]:
    """Which logger names each handler is attached to."""
    where: dict[int, list[str]] = {}
    loggers: list[tuple[str, logging.Logger]] = [("root", logging.getLogger())]
    for name, obj in logging.Logger.manager.loggerDict.items():
        if isinstance(obj, logging.Logger):
            loggers.append((name, obj))
    for name, lg in loggers:
        for h in lg.handlers:
            where.setdefault(id(h), []).append(f"{name} ({logging.getLevelName(lg.level)})")
    return where


def describe_handler(handler: OvercentricHandler, attached: list[str]) -> list[str]:
    cfg = handler.client.config
    rules = []
    if cfg.prefix is not None:
        rules.append(f"messages starting with {cfg.prefix!r}")
    if cfg.events:
        rules.append(f"messages matching {list(cfg.events)!r}")
    rules.append(f"records with an extra {cfg.name_key!r}")
    lines = [
        f"OvercentricHandler level={logging.getLevelName(handler.level)}",
        f"  attached to: {', '.join(attached) or 'no logger'}",
        f"  project_id: {cfg.masked_project_id}   endpoint: {cfg.endpoint}",
        f"  enabled: {handler.client.enabled}   context: {cfg.context}   sync: {cfg.sync}",
        f"  max_queue_size: {cfg.max_queue_size}   max_workers: {cfg.max_workers}   "
        f"timeout: {cfg.timeout}s   max_retries: {cfg.max_retries}   "
        f"shutdown_timeout: {cfg.shutdown_timeout}s",
        f"  tracks: {'; '.join(rules)}",
    ]
    if cfg.device_id or cfg.session_id:
        lines.append(f"  default ids: device_id={cfg.device_id} session_id={cfg.session_id}")
    if cfg.field_map:
        lines.append(f"  field_map: {dict(cfg.field_map)!r}")
    if cfg.exclude_keys:
        lines.append(f"  exclude_keys: {sorted(cfg.exclude_keys)!r}")
    lines.append(f"  privacy filter: {'on' if cfg.deny_pattern is not None else 'off'}")
    if cfg.spool_path:
        lines.append(f"  spool: {cfg.spool_path}")
    return lines


def check_config_main(path: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with capture_events():
        try:
            _load(path)
        except (OSError, ValueError, TypeError, KeyError, AttributeError, ImportError) as exc:
            cause = exc.__cause__ or exc
            print(f"error: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            if cause is not exc:
                print(f"  caused by: {cause}", file=sys.stderr)
            return 1
        attached = _attached()
        handlers = [
            ref() for ref in list(logging._handlerList)  # type: ignore[attr-defined]
        ]
        found = [h for h in handlers if isinstance(h, OvercentricHandler)]
        if not found:
            print(f"{path}: no OvercentricHandler in this configuration: nothing is tracked",
                  file=out)
            return 1
        print(f"{path}: {len(found)} Overcentric handler(s)", file=out)
        for h in found:
            for line in describe_handler(h, attached.get(id(h), [])):
                print(line, file=out)
    return 0
