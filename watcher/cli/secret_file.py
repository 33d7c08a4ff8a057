"""A webhook secret kept in a file, for `gen-secret --file` (what `make run` uses).

The first call creates the file (mode 0600, in a folder created 0700) with a new secret; later
calls read the same secret back, so a receiver configured once keeps working across restarts.
The file appears under its name only once it is complete: a crash never leaves an empty one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import stat
import sys
from pathlib import Path

from watcher.cli.common import EXIT_OK
from watcher.errors import InvalidSecret, WatcherError
from watcher.webhook_secret import SECRET_PREFIX, decode_secret, generate_secret


def gen_secret_command(args: argparse.Namespace) -> int:
    """`apixo-watcher gen-secret [--file PATH]`."""
    if args.file is None:
        print(generate_secret())
        return EXIT_OK
    path = Path(args.file)
    secret, created = keep_secret(path)
    # stderr only: stdout carries the secret to the caller (make run), and the daemon's logs
    # never hold it.
    where = shlex.quote(str(path))
    head = (
        f"created a webhook secret in {where} (mode 0600); later runs reuse it."
        if created
        else f"using the webhook secret in {where}."
    )
    note(
        f"{head}\n"
        "  Receivers verify webhooks with the same secret, e.g.\n"
        f"  APP_WEBHOOK_SECRET=$(cat {where}) python examples/receiver.py"
    )
    if readable_by_others(path):
        note(f"warning: {where} is readable by others: chmod 600 {where}")
    print(secret)
    return EXIT_OK


def note(message: str) -> None:
    """An informational message on stderr (not a log line)."""
    for i, line in enumerate(message.splitlines()):
        print(("apixo-watcher: " if i == 0 else "") + line, file=sys.stderr)


def keep_secret(path: Path) -> tuple[str, bool]:
    """The secret kept in `path`, creating it when absent: (secret, created)."""
    created = False
    if not path.exists():
        created = _create(path, generate_secret())
    secret = _read(path)
    return secret, created


def readable_by_others(path: Path) -> bool:
    """Whether group or others may read the file (a secret should be 0600)."""
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def _create(path: Path, secret: str) -> bool:
    """Write `secret` to `path` unless another process got there first; True if written."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secret + "\n")
                out.flush()
                os.fsync(out.fileno())
            # link() fails if the name exists: two first runs at once agree on one secret.
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    except OSError as exc:
        raise WatcherError(f"cannot create the secret file {path}: {exc.strerror}") from exc
    return True


def _read(path: Path) -> str:
    try:
        secret = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise WatcherError(f"cannot read the secret file {path}: {reason}") from exc
    try:
        if not secret.startswith(SECRET_PREFIX):
            raise InvalidSecret()
        decode_secret(secret)
    except InvalidSecret as exc:
        raise WatcherError(
            f"{path} does not hold a webhook secret ({exc.message}); "
            "remove it to have a new one created"
        ) from exc
    return secret
