"""The `apixo-watcher` command: parses arguments, loads config, sets up logging, starts things.

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 75 the store is in use by another daemon
(EX_TEMPFAIL), 78 config error (EX_CONFIG). systemd's RestartPreventExitStatus=78 75 stops a
restart loop on either: restarting cannot fix them. Errors are one clear line on stderr (a
config error lists every problem), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from watcher import __version__
from watcher.cli import copy_store
from watcher.cli.common import (
    DEFAULT_CONFIG,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_STORE_IN_USE,
    EXIT_USAGE,
    default_config_path,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help="config file (default: $APIXO_WATCHER_CONFIG, then " + DEFAULT_CONFIG + ")",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="apixo-watcher",
        description="Watches APIXO generation tasks until they finish and delivers signed "
        "webhooks (Standard Webhooks) to your endpoints.",
    )
    parser.add_argument("--version", action="version", version=f"apixo-watcher {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "run",
        help="run the daemon in the foreground (the systemd ExecStart)",
        description="Run the daemon in the foreground until SIGTERM/SIGINT. SIGHUP reloads. "
        "Logs are JSON lines on stdout.",
    )
    _add_config_option(p)
    p.add_argument(
        "--grace",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="on stop, how long in-flight polls and deliveries may take (default: 10)",
    )

    p = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config file: exit 0 with a one-line summary, or exit 78 with "
        "every problem, its YAML path and line. The tasks file it names is read too: its bad "
        "entries are listed with their lines as warnings (the daemon skips them), which do not "
        "change the exit code.",
    )
    _add_config_option(p)

    p = sub.add_parser(
        "migrate",
        help="apply the store's schema (SQLite store.path or PostgreSQL store.url)",
        description="Bring the configured store to this version's schema and print what was "
        "done (`run` does the same when it starts on SQLite). Safe to run while other "
        "instances start or migrate: they take turns. Exit 0 when the schema is current; "
        "1 when the store cannot be reached, a migration fails, or the store is newer than "
        "this version; 78 for a config error.",
    )
    _add_config_option(p)

    copy_store.register(sub, _add_config_option)

    p = sub.add_parser(
        "reload",
        help="ask the running daemon to reload and wait for the outcome (systemd ExecReload)",
        description="Ask the running daemon (found through the config's intake section) to "
        "re-read its config, secrets, API key and tasks file. Exit 0 when applied; exit 78 "
        "with every problem when the new config is invalid (the old one stays); exit 1 when "
        "the daemon cannot be reached.",
    )
    _add_config_option(p)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default: 30)")

    p = sub.add_parser(
        "gen-secret",
        help="print a new whsec_... webhook secret",
        description="Print a new random webhook secret (whsec_ + base64 of 32 bytes).",
    )
    p.add_argument(
        "--file",
        metavar="PATH",
        help="keep the secret in PATH: the first time, create it there (mode 0600); after "
        "that, print the same secret again. Where it is and how to give it to a receiver "
        "goes to stderr (make run uses this with var/webhook-secret).",
    )

    p = sub.add_parser(
        "sandbox",
        help="run a local fake of the upstream status API (no credentials needed)",
        description="Serve a fake APIXO status API on 127.0.0.1 for trying the daemon and a "
        "receiver without credentials. Any task id is known: it is pending, then processing, "
        "then succeeds (task ids containing 'fail' fail; ids containing 'notfound' answer 404). "
        "Point upstream.base_url at "
        "http://127.0.0.1:PORT/api/v1.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    p.add_argument(
        "--finish-after",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="seconds from a task's first poll to its end (default: 5)",
    )
    p.add_argument(
        "--fail-ratio",
        type=float,
        default=0.0,
        help="share of tasks that fail, 0..1 (default: 0)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the fail ratio (default: 0)")

    try:
        from watcher.cli import client as cli_client
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        cli_client.register(sub, _add_config_option)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(_dispatch(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # the last line of defence: no traceback reaches a user
        from watcher.errors import ConfigError, StoreInUse, WatcherError

        if isinstance(exc, ConfigError):
            error_line(exc.message)
            return EXIT_CONFIG
        if isinstance(exc, StoreInUse):
            error_line(exc.message)
            return EXIT_STORE_IN_USE
        if isinstance(exc, WatcherError):
            error_line(exc.message)
            return EXIT_FAILURE
        error_line(f"internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE


def error_line(message: str) -> None:
    """Print an error on stderr; under systemd, each line carries journald's error priority
    (`<3>`), so `journalctl -p err` shows why a start failed."""
    from watcher.logs import stdout_is_journal

    prefix = "<3>" if stdout_is_journal(stream=sys.stderr) else ""
    for i, line in enumerate(message.splitlines() or [""]):
        head = "apixo-watcher: " if i == 0 else ""
        print(f"{prefix}{head}{line}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "gen-secret":
        from watcher.cli.secret_file import gen_secret_command

        return gen_secret_command(args)
    if command == "check-config":
        return _check_config(args)
    if command == "run":
        return _run(args)
    if command == "migrate":
        return _migrate(args)
    if command == "reload":
        from watcher.cli.client import reload_command

        return reload_command(args)
    if command == "sandbox":
        return _sandbox(args)
    func = getattr(args, "func", None)
    if func is None:  # pragma: no cover - argparse enforces a command
        return EXIT_USAGE
    return int(func(args))


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or default_config_path())


def _check_config(args: argparse.Namespace) -> int:
    from watcher.config.settings import load_config, summary
    from watcher.tasks.file import check_tasks_file

    config = load_config(_config_path(args))
    print(summary(config))
    # The tasks file's problems are warnings: the daemon starts all the same, skipping bad
    # entries (or the whole file) and importing the rest, so they do not change the exit code.
    tasks = check_tasks_file(config)
    if tasks is not None:
        print(tasks.summary)
        if tasks.problems:
            where = str(config.tasks_file)
            lines = "\n".join(f"  {p}" for p in tasks.problems)
            error_line(f"warning: {where}: {tasks.headline}:\n{lines}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from watcher.allocator import keep_freed_memory
    from watcher.config.settings import load_config
    from watcher.daemon import Daemon
    from watcher.logs import configure_logging

    path = _config_path(args)
    config = load_config(path)
    configure_logging(level=config.logging.level, fmt=config.logging.format)
    # A fatal signal (SIGBUS from a mapped file that shrank mid-call, SIGSEGV) kills the
    # process outside any Python code: say so, with the Python stack, on stderr (the journal).
    faulthandler.enable()
    if config.mirror is not None:
        # Freed download buffers kept at hand rather than faulted in again (see allocator).
        keep_freed_memory(os.environ)
    daemon = Daemon(config, config_path=path, grace_s=args.grace)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(daemon.run())


def _migrate(args: argparse.Namespace) -> int:
    from watcher.config.settings import load_config
    from watcher.logs import configure_logging
    from watcher.store.migrate import migrate_store

    config = load_config(_config_path(args))
    # What was done goes to stdout; only the store's warnings go to stderr, as log lines.
    configure_logging(level="warning", fmt=config.logging.format, stream=sys.stderr)
    result = asyncio.run(migrate_store(config.store))
    if result.applied:
        print(
            f"store {result.where}: schema version {result.before} -> {result.after} "
            f"(applied {', '.join(result.applied)})"
        )
    else:
        print(f"store {result.where}: schema version {result.after}, up to date")
    return EXIT_OK


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (less CPU per poll and webhook), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - it is a dependency on Linux
        return None
    return uvloop.new_event_loop


def _sandbox(args: argparse.Namespace) -> int:
    from watcher.logs import configure_logging
    from watcher.upstream.sandbox import run_sandbox

    configure_logging(level="info")
    print(
        f"sandbox: fake APIXO status API on http://{args.host}:{args.port}/api/v1 "
        "(any non-empty API key; Ctrl-C to stop)",
        file=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_sandbox(
                args.host,
                args.port,
                finish_after_s=args.finish_after,
                fail_ratio=args.fail_ratio,
                seed=args.seed,
            )
        )
    return EXIT_OK
