"""Processes the bench drives: the fakes (upstream, receiver, reference loops) and the daemon.

The daemon runs as `python -m watcher run -c FILE` with a NOTIFY_SOCKET owned by the bench, so
READY=1 is observed exactly as systemd would; CPU and RSS are read from outside with psutil.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import yaml

if TYPE_CHECKING:
    from bench.cpucap import CpuCap


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the final JSON."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Server:
    """A `python -m bench.upstream|receiver` child that prints `PORT n` once listening."""

    def __init__(self, module: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{module} did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def get_json(url: str, *, timeout: float = 60.0) -> Any:
    """GET `url` (a fake server's `/_bench/...` route, a daemon's API) and decode its JSON."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def post_empty(url: str) -> None:
    """POST an empty body to `url` (a fake server's reset or mark route)."""
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


def write_config(
    directory: Path,
    *,
    db: Path,
    upstream_url: str,
    receiver_url: str,
    upstream: dict[str, Any] | None = None,
    polling: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    tasks_file: Path | None = None,
    store: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """A daemon config for one scenario: a SQLite store at `db`, or `store` (e.g. a PostgreSQL
    `url` and `lease`); the file is named after `name` (default: the store file's)."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    config = {
        "upstream": {
            "base_url": upstream_url,
            "api_key": "sk-bench-0123456789abcdef",
            "timeout": "10s",
            "max_concurrency": 32,
            "max_requests_per_second": 20,
            **(upstream or {}),
        },
        "polling": {
            "initial_delay": "0s",
            "initial_interval": "1h",
            "max_interval": "1h",
            "backoff": 1.0,
            "jitter": 0.0,
            "deadline": "6h",
            "not_found_grace": "2m",
            **(polling or {}),
        },
        "store": store if store is not None else {"path": str(db.resolve())},
        "intake": {"listen": "127.0.0.1:0"},
        "endpoints": [
            {"name": "bench", "url": f"{receiver_url}/hooks", "secret": secret, "timeout": "10s"}
        ],
        "delivery": {
            "retry_schedule": ["0s", "1s", "5s", "30s"],
            "max_concurrency": 16,
            **(delivery or {}),
        },
        "logging": {"format": "json", "level": "info"},
    }
    if tasks_file is not None:
        config["tasks_file"] = str(tasks_file.resolve())
    path = directory / f"config-{name or db.stem}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class DaemonProcess:
    """One `apixo-watcher run` child, its notify socket and its log file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self._sockdir = Path(tempfile.mkdtemp(prefix="awb-", dir="/tmp"))
        self._notify_path = self._sockdir / "notify.sock"
        self.started_at = 0.0  # Unix seconds just before exec
        self.ready_at: float | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self._sock: socket.socket | None = None

    async def start(self, *, timeout: float = 60.0, cpu_cap: CpuCap | None = None) -> None:
        """Start the daemon and wait for READY=1; `cpu_cap`: run it in that capped cgroup."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self._notify_path))
        sock.setblocking(False)
        self._sock = sock
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env["NOTIFY_SOCKET"] = str(self._notify_path)
        # For measuring an alternative event loop without making it a dependency:
        # BENCH_DAEMON_PYTHONPATH=DIR puts DIR (e.g. one with uvloop and a sitecustomize.py
        # calling uvloop.install()) on the daemon's path only; the references are unchanged.
        # It can also hold another version's `watcher` package (A/B runs against a copy of a
        # commit): `-P` keeps `python -m` from putting the current directory (this checkout,
        # with its own `watcher`) before it on sys.path.
        extra = os.environ.get("BENCH_DAEMON_PYTHONPATH")
        flags: list[str] = []
        if extra:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
            flags = ["-P"]
        log_file = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        self.started_at = time.time()
        argv = ["-m", "watcher", "run", "-c", str(self.config_path), "--grace", "5"]
        self.proc = subprocess.Popen(
            [sys.executable, *flags, *argv],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log_file.close()
        if cpu_cap is not None:
            cpu_cap.add(self.proc.pid)  # its threads, now and later, are in the group too
        self.ps = psutil.Process(self.proc.pid)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise RuntimeError(
                    f"daemon not ready (exit {self.proc.poll()}); see {self.log_path}"
                )
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), min(remaining, 0.5))
                if b"READY=1" in data:
                    self.ready_at = time.time()
                    # Keep reading what the daemon sends (a STATUS= every 5 s): a datagram
                    # socket nobody reads fills up (10 messages by default), and the daemon's
                    # next notification would then block its event loop.
                    loop.add_reader(sock.fileno(), self._drain, sock)
                    self._maybe_profile()
                    return

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while sock.recv(4096):
                pass

    def _maybe_profile(self) -> None:
        # For profiling sessions only: BENCH_PYSPY=SECONDS samples the daemon with py-spy
        # (installed by hand, not a project dependency) into bench/out/<log name>.pyspy.txt.
        seconds = os.environ.get("BENCH_PYSPY")
        if not seconds or self.proc is None:
            return
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(self.proc.pid),
                "--duration",
                seconds,
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(self.log_path.with_suffix(".pyspy.txt")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def cpu_s(self) -> float:
        assert self.ps is not None
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def children_cpu_s(self) -> float:
        """CPU of the daemon's finished child processes (e.g. the tasks file reader)."""
        assert self.ps is not None
        t = self.ps.cpu_times()
        return float(t.children_user + t.children_system)

    def rss_mb(self) -> float:
        assert self.ps is not None
        return float(self.ps.memory_info().rss) / (1024 * 1024)

    def intake_url(self) -> str:
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "daemon_ready":
                    return f"http://{event['intake']}"
        raise RuntimeError(f"no daemon_ready in {self.log_path}")

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """The daemon's log events called `name`, oldest first."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    events.append(event)
        return events

    async def wait_log(self, name: str, count: int = 1, timeout: float = 60.0) -> dict[str, Any]:
        """The `count`-th log event called `name`, once it is written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.log_events(name)
            if len(events) >= count:
                return events[count - 1]
            if not self.alive():
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no {name} #{count} in {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def stop(self, timeout: float = 20.0) -> int | None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        with contextlib.suppress(OSError):
            self._notify_path.unlink()
            self._sockdir.rmdir()
        return None if proc is None else proc.returncode


async def run_json(args: list[str], *, stdin: str | None = None, timeout: float = 300) -> Any:
    """Run `python -m ...` and parse the JSON it prints last."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), timeout
    )
    return json.loads(out.decode().strip().splitlines()[-1])
