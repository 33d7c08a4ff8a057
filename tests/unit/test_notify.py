"""sd_notify against a real unix datagram socket, as systemd listens for it.

A unix datagram socket is local and instant, so these stay unit tests: what systemd would read
is exactly what arrives here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from watcher.notify import Notifier, notify_address, watchdog_interval_s


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="aw-notify-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def path_socket(sock_dir: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(sock_dir / "notify.sock")
    sock = _listener(path)
    yield path, sock
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"apixo-watcher-test-{os.getpid()}-{os.urandom(4).hex()}"
    sock = _listener("\0" + name)
    yield "@" + name, sock
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_every_message_arrives_as_one_datagram(which: str, request: pytest.FixtureRequest) -> None:
    address, sock = request.getfixturevalue(which)
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled

    assert notifier.ready("watching 3 tasks, 1 deliveries pending")
    assert _recv(sock) == "READY=1\nSTATUS=watching 3 tasks, 1 deliveries pending"
    assert notifier.ready()
    assert _recv(sock) == "READY=1"
    assert notifier.status("watching 0 tasks")
    assert _recv(sock) == "STATUS=watching 0 tasks"
    assert notifier.watchdog()
    assert _recv(sock) == "WATCHDOG=1"
    assert notifier.reloading(123_456_789)
    assert _recv(sock) == "RELOADING=1\nMONOTONIC_USEC=123456789"
    assert notifier.stopping()
    assert _recv(sock) == "STOPPING=1"
    notifier.close()


def test_close_then_send_opens_a_new_socket(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    notifier.close()  # closing before any send is fine
    assert notifier.status("a")
    notifier.close()
    assert notifier.status("b")
    assert [_recv(sock), _recv(sock)] == ["STATUS=a", "STATUS=b"]
    notifier.close()


@pytest.mark.parametrize("value", [None, "", "relative/notify.sock", "@", "vsock:2:1234"])
def test_without_a_usable_notify_socket_nothing_is_sent(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    notifier = Notifier(env)
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    notifier.close()


def test_a_missing_socket_never_raises_and_warns_once(sock_dir: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(sock_dir / "gone.sock")})
    assert notifier.enabled
    with capture_logs() as logs:
        assert notifier.ready("x") is False
        assert notifier.status("y") is False
        assert notifier.watchdog() is False
    warnings = [e for e in logs if e["event"] == "sd_notify_failed"]
    assert len(warnings) == 1
    notifier.close()


def test_sending_works_again_once_the_socket_is_back(sock_dir: Path) -> None:
    path = str(sock_dir / "late.sock")
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.status("early") is False
    sock = _listener(path)
    try:
        assert notifier.status("late")
        assert _recv(sock) == "STATUS=late"
    finally:
        sock.close()
        notifier.close()


def test_a_receiver_that_stopped_reading_costs_messages_not_a_blocked_sender(
    path_socket: tuple[str, socket.socket],
) -> None:
    # A full datagram queue would block a blocking sendto, and with it the event loop (the
    # watchdog ping included). The sender must drop the message and go on instead.
    address, sock = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    results: list[bool] = []
    sender = threading.Thread(
        target=lambda: results.extend(notifier.status(f"n{i}") for i in range(500)), daemon=True
    )
    with capture_logs() as logs:
        sender.start()
        sender.join(timeout=10)
    assert not sender.is_alive(), "sending to a receiver that does not read blocked"
    assert results[0] is True
    assert False in results  # the queue filled up: those were dropped
    assert [e["event"] for e in logs].count("sd_notify_failed") == 1
    # Once the receiver reads again, messages arrive again.
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while sock.recv(4096):
            pass
    sock.settimeout(2.0)
    assert notifier.status("after")
    assert _recv(sock) == "STATUS=after"
    notifier.close()


def test_the_process_environment_is_the_default(
    path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    assert notifier.watchdog_interval_s == 2.0
    assert notifier.watchdog()
    assert _recv(sock) == "WATCHDOG=1"
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),  # WatchdogSec=30s: ping every 15 s
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}, 1.0),  # ours
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4243"}, None),  # another process's
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": ""}, 1.0),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid(
    env: dict[str, str], expected: float | None
) -> None:
    assert watchdog_interval_s(env, 4242) == expected
    assert Notifier(env, pid=4242).watchdog_interval_s == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", "\0/org/freedesktop/systemd1/notify/123"),
        ("", None),
        ("@", None),
        ("notify.sock", None),
    ],
)
def test_notify_address(value: str, expected: str | None) -> None:
    assert notify_address(value) == expected
