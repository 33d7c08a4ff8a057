"""systemd's notify protocol (sd_notify(3)): one datagram to `$NOTIFY_SOCKET`.

Does nothing when `NOTIFY_SOCKET` is unset (not under systemd, or Type= is not notify), handles
abstract sockets (a leading `@`), and never raises: a failed notification must not take the
daemon down. The watchdog interval comes from `WATCHDOG_USEC` (and `WATCHDOG_PID`, when set,
must be ours).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends sd_notify messages; a no-op without NOTIFY_SOCKET.

    `environ` defaults to the process environment; `pid` (default: ours) is compared with
    `WATCHDOG_PID`, which systemd sets to the main process so a child doesn't ping for it.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = notify_address(env.get("NOTIFY_SOCKET", ""))
        self._socket: socket.socket | None = None
        # After one failure we stay quiet until a send works again: a STATUS every few
        # seconds to a vanished socket must not flood the log.
        self._failing = False
        self.watchdog_interval_s = watchdog_interval_s(env, os.getpid() if pid is None else pid)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self._address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines as one datagram. True if it was sent; never raises."""
        if self._address is None:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._socket is None:
                # Non-blocking: a receiver that stopped reading (its queue full) must cost us
                # a dropped message, never a blocked event loop.
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._socket.sendto(message, self._address)
        except (OSError, ValueError) as exc:
            if not self._failing:
                log.warning("sd_notify_failed", error=str(exc))
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (start-up or a reload finished), with an optional STATUS= line."""
        fields = ["READY=1"] + ([f"STATUS={status}"] if status else [])
        return self.send(*fields)

    def status(self, text: str) -> bool:
        """STATUS=text, shown by `systemctl status`."""
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: we are alive (see `watchdog_interval_s`)."""
        return self.send("WATCHDOG=1")

    def reloading(self, monotonic_usec: int) -> bool:
        """RELOADING=1: a reload started; `ready()` ends it."""
        # MONOTONIC_USEC is required with RELOADING=1 for Type=notify-reload, harmless otherwise.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.send("STOPPING=1")

    def close(self) -> None:
        """Close the socket; a later send opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def notify_address(value: str) -> str | None:
    """The socket address for a `NOTIFY_SOCKET` value, or None when there is none we support.

    `@name` is an abstract socket (a leading NUL byte); `/path` a socket file. Anything else
    (e.g. `vsock:` of newer systemd versions) is not for us to guess at.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """How often to send WATCHDOG=1: half of `WATCHDOG_USEC` (as sd_watchdog_enabled(3)
    advises), or None when the watchdog is off or `WATCHDOG_PID` names another process."""
    usec = env.get("WATCHDOG_USEC", "")
    watchdog_pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if watchdog_pid and (not watchdog_pid.isdigit() or int(watchdog_pid) != pid):
        return None
    return int(usec) / 1_000_000 / 2
