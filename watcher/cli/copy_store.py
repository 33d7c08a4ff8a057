"""`apixo-watcher copy-store --from SQLITE_PATH -c FILE`: parses, loads the config, and runs
watcher/store/copy.py, printing its progress on stderr and what it did on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from watcher.cli.common import EXIT_FAILURE, EXIT_OK, default_config_path
from watcher.config.settings import Config, load_config
from watcher.config.yamlsrc import load_yaml_collecting
from watcher.errors import ConfigError, ConfigProblem
from watcher.store.bulk import Conflict, TableCounts

if TYPE_CHECKING:
    from watcher.store.copy import CopyReport

_PROGRESS_EVERY_S: Final = 1.0
EXIT_INTERRUPTED: Final = 130  # as the shell reports a SIGINT
_COUNTS: Final = ("new", "updated", "unchanged", "conflicts", "skipped")

DESCRIPTION = (
    "Copy an existing SQLite store (tasks with their state and history, events with their exact "
    "webhook bodies, deliveries with their status and webhook-ids, attempts, successes waiting "
    "for their result mirror, learned polling durations) into the "
    "PostgreSQL store named by store.url in the config. Stop the daemon that uses the SQLite "
    "file first: a running one is refused when it holds the file's lock. The SQLite file is "
    "opened read-only and never changed. Safe to interrupt and run again: records already "
    "there are left alone (updated only when the SQLite copy is further along), so a second "
    "run changes nothing. A record the database holds as something else (a task with another "
    "model) is a conflict: reported, not copied. Progress goes to stderr, a summary to stdout. "
    "Exit 0 when everything is copied; 1 when there were conflicts, the SQLite file cannot be "
    "read, or the database cannot be reached; 78 for a config error (or no store.url)."
)


def register(
    sub: argparse._SubParsersAction[Any],
    add_config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `copy-store` to the `apixo-watcher` parser."""
    p = sub.add_parser(
        "copy-store",
        help="copy a SQLite store into the PostgreSQL store (store.url)",
        description=DESCRIPTION,
    )
    p.add_argument(
        "--from",
        dest="source",
        metavar="SQLITE_PATH",
        required=True,
        help="the SQLite store to copy (the old config's store.path)",
    )
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=copy_store_command)


def copy_store_command(args: argparse.Namespace) -> int:
    from watcher.logs import configure_logging
    from watcher.store.copy import copy_store  # psycopg only for this command

    config = load_config(Path(args.config or default_config_path()))
    if config.store.url is None:
        raise _needs_url(config)
    # Only the store's warnings may log, and not on stdout, which is the summary's.
    configure_logging(level="warning", fmt=config.logging.format, stream=sys.stderr)
    printer = _Printer()
    try:
        report = asyncio.run(
            copy_store(Path(args.source), config.store.url.reveal(), observer=printer)
        )
    except KeyboardInterrupt:
        # The batch in flight was rolled back; every batch before it is whole.
        print(
            "apixo-watcher: interrupted: what was copied stays; run copy-store again to finish",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(_as_json(report), indent=2, ensure_ascii=False))
    else:
        print(summary(report))
    return EXIT_OK if report.complete else EXIT_FAILURE


def _needs_url(config: Config) -> ConfigError:
    line = None
    if config.source is not None:
        try:
            _, lines, _ = load_yaml_collecting(config.source.read_text("utf-8"), "")
            line = lines.line_for(("store", "url"))
        except (OSError, UnicodeDecodeError, ConfigError):
            line = None
    problem = ConfigProblem(
        "store.url",
        line,
        "copy-store copies into the PostgreSQL store that store.url (or url_file) names; "
        "this config has none. Give it the config that will run on PostgreSQL",
    )
    return ConfigError([problem], source=str(config.source) if config.source else None)


class _Printer:
    """Progress on stderr, at most about once a second, and each step's last count."""

    def __init__(self) -> None:
        self._last = 0.0

    def warning(self, message: str) -> None:
        print(f"apixo-watcher: warning: {message}", file=sys.stderr, flush=True)

    def conflict(self, conflict: Conflict) -> None:
        print(f"apixo-watcher: conflict: {conflict.message}", file=sys.stderr, flush=True)

    def progress(self, step: str, done: int, total: int, tables: Mapping[str, TableCounts]) -> None:
        now = time.monotonic()
        if done not in (0, total) and now - self._last < _PROGRESS_EVERY_S:
            return
        self._last = now
        share = f" ({100 * done // total}%)" if total else ""
        counts = ", ".join(f"{name} {c.read}" for name, c in tables.items())
        print(f"copy-store: {step} {done}/{total}{share}: {counts}", file=sys.stderr, flush=True)


def summary(report: CopyReport) -> str:
    """The one line printed when a copy ends."""
    parts = []
    for name, counts in report.tables.items():
        detail = ", ".join(_count(getattr(counts, k), k) for k in _COUNTS if getattr(counts, k))
        parts.append(f"{name} {counts.read}" + (f" ({detail})" if detail else ""))
    head = f"copied {report.source} into {report.target}: "
    tail = ""
    if report.conflicts_total:
        tail = f"; {_count(report.conflicts_total, 'conflicts')} not copied (listed on stderr)"
    return head + ", ".join(parts) + tail


def _count(n: int, what: str) -> str:
    # "conflicts" is the one noun among the counts; the others read as adjectives ("2 new").
    if what == "conflicts" and n == 1:
        what = "conflict"
    return f"{n} {what}"


def _as_json(report: CopyReport) -> dict[str, Any]:
    return {
        "source": report.source,
        "target": report.target,
        "complete": report.complete,
        "tables": {name: asdict(counts) for name, counts in report.tables.items()},
        "conflicts_total": report.conflicts_total,
        "conflicts": [asdict(c) for c in report.conflicts],
    }
