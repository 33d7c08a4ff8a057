"""Run the real daemon as a subprocess for end-to-end tests.

The daemon is started with `python -m watcher run -c FILE`, with `NOTIFY_SOCKET` pointing at a
real unix datagram socket owned by the test, so tests know READY=1 (and see STATUS=, STOPPING=1,
WATCHDOG=1) exactly as systemd would. Its stdout (JSON log lines) goes to a file the test can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

API_KEY = "sk-test-key-0123456789abcdef"


def write_config(
    directory: Path,
    *,
    upstream_url: str,
    endpoints: list[dict[str, Any]] | None = None,
    intake_listen: str = "127.0.0.1:0",
    polling: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    tasks: list[dict[str, Any]] | None = None,
    api_key: str = API_KEY,
    extra: Mapping[str, Any] | None = None,
    extra_store: Mapping[str, Any] | None = None,
    extra_upstream: Mapping[str, Any] | None = None,
) -> Path:
    """Write a config (and tasks file) for a test daemon; returns the config path."""
    config: dict[str, Any] = {
        "upstream": {
            "base_url": upstream_url,
            "api_key": api_key,
            "timeout": "2s",
            "max_concurrency": 8,
            "max_requests_per_second": 200,
            **(extra_upstream or {}),
        },
        "polling": {
            "initial_delay": "0s",
            "initial_interval": "50ms",
            "max_interval": "200ms",
            "backoff": 1.5,
            "jitter": 0.1,
            "deadline": "1h",
            "not_found_grace": "2m",
            **(polling or {}),
        },
        "store": {"path": str(directory / "watcher.db"), **(extra_store or {})},
        "intake": {"listen": intake_listen},
        "endpoints": endpoints or [],
        "delivery": {"retry_schedule": ["0s", "100ms", "200ms", "400ms"], **(delivery or {})},
        "logging": {"format": "json", "level": "debug"},
    }
    if tasks is not None:
        write_tasks_file(directory / "tasks.yaml", tasks)
        config["tasks_file"] = str(directory / "tasks.yaml")
    if extra:
        config.update(extra)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_tasks_file(
    path: Path, tasks: list[dict[str, Any]] | str, *, settled: bool = True
) -> None:
    """Write a tasks file (a list of entries, or the YAML text itself). `settled` dates it a
    minute back, as a file written and then left alone."""
    text = tasks if isinstance(tasks, str) else yaml.safe_dump({"tasks": tasks})
    path.write_text(text)
    if settled:
        past = time.time() - 60
        os.utime(path, (past, past))


class DaemonProcess:
    """One `apixo-watcher run` subprocess."""

    def __init__(
        self,
        config_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        grace_s: float = 5.0,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self._env = dict(env or {})
        # A command the daemon runs under, e.g. ("prlimit", "--nofile=64:128", "--").
        self._wrapper = tuple(wrapper)
        self._grace_s = grace_s
        # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer.
        self._sockdir = Path(tempfile.mkdtemp(prefix="aw-", dir="/tmp"))
        self.notify_path = self._sockdir / "notify.sock"
        self.log_path = config_path.parent / f"daemon-{os.getpid()}-{id(self)}.log"
        self.messages: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_message = asyncio.Event()

    async def start(self, *, timeout: float = 20.0, wait_ready: bool = True) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.notify_path))
        self._sock.setblocking(False)
        self._reader = asyncio.create_task(self._read_notifications())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.update({"NOTIFY_SOCKET": str(self.notify_path), "PYTHONUNBUFFERED": "1"})
        env.update(self._env)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = await asyncio.create_subprocess_exec(
            *self._wrapper,
            sys.executable,
            "-m",
            "watcher",
            "run",
            "-c",
            str(self.config_path),
            "--grace",
            str(self._grace_s),
            stdout=self._log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        if wait_ready:
            try:
                await self.wait_message(lambda m: "READY=1" in m, timeout=timeout)
            except BaseException:
                await self.close()
                raise

    async def _read_notifications(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 4096)
            self.messages.append(data.decode())
            self._new_message.set()

    async def wait_message(self, predicate: Callable[[str], bool], *, timeout: float) -> str:
        """Wait for a notify datagram matching predicate (already received ones count)."""

        async def waiter() -> str:
            seen = 0
            while True:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.messages)
                self._new_message.clear()
                if self.proc is not None and self.proc.returncode is not None:
                    raise AssertionError(
                        f"daemon exited with {self.proc.returncode}; log:\n{self.log_text()}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_message.wait(), 0.2)

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no matching notification in {timeout}s; got {self.messages}; "
                f"log:\n{self.log_text()}"
            ) from None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("<") and ">" in line[:4]:
                line = line[line.index(">") + 1 :]
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    async def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait for a log event matching predicate (already written ones count)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.log_events():
                if predicate(event):
                    return event
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}; log:\n{self.log_text()}"
                )
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no matching log event in {timeout}s:\n{self.log_text()}")
            await asyncio.sleep(0.05)

    def intake_address(self) -> str:
        """The intake's bound address, from the daemon_ready log line."""
        for event in self.log_events():
            if event.get("event") == "daemon_ready":
                return str(event["intake"])
        raise AssertionError(f"no daemon_ready in log:\n{self.log_text()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"daemon did not exit in {timeout}s; log:\n{self.log_text()}"
            ) from None

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._sock is not None:
            self._sock.close()
        if hasattr(self, "_log_file"):
            self._log_file.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)
