"""A CPU cap for one bench process: a cgroup whose CFS quota is a fraction of a core.

The cluster row compares three instances with one. On a machine with fewer free cores than
instances (plus the fake upstream and PostgreSQL), three uncapped instances share the cores one
instance alone had, and the comparison measures the machine, not the daemon. Capping each
instance at the same fraction of a core makes them equal hosts, like separate machines of the
same size (what `docker run --cpus` does): then three against one says whether the shared
store lets the work scale.

Needs a writable cgroup cpu controller (root; cgroup v1 `cpu`, or v2 with `cpu` enabled for the
root's children). Where there is none, `CpuCap.create` says why and the bench reports that
instead of the figure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

# The quota is granted per period: with the kernel's default of 100 ms, an instance capped at
# 0.3 core runs 30 ms and then stalls 70 ms, which no host of that size does (its polls' answers
# pile up and are handled in bursts). 10 ms keeps the stalls short, closer to a slower CPU.
PERIOD_US = 10_000


def _v1_cpu_root() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, super_fields = left.split(), right.split()
        if super_fields[:1] == ["cgroup"] and "cpu" in super_fields[-1].split(","):
            return Path(fields[4])
    return None


def _v2_root() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            root = Path(left.split()[4])
            controls = root / "cgroup.subtree_control"
            if controls.exists() and "cpu" in controls.read_text().split():
                return root
    return None


class CpuCap:
    """One cgroup limited to `cores` of CPU; processes join it with `add(pid)`."""

    def __init__(self, path: Path, cores: float, version: int) -> None:
        self.path = path
        self.cores = cores
        self.version = version

    @classmethod
    def create(cls, cores: float) -> CpuCap | str:
        """A new capped cgroup, or why there cannot be one here."""
        quota = max(1000, round(cores * PERIOD_US))
        name = f"apixo-bench-{secrets.token_hex(4)}"
        try:
            v1 = _v1_cpu_root()
            if v1 is not None:
                path = v1 / name
                path.mkdir()
                (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(quota))
                return cls(path, cores, 1)
            v2 = _v2_root()
            if v2 is not None:
                path = v2 / name
                path.mkdir()
                (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
                return cls(path, cores, 2)
        except OSError as exc:
            return f"no writable cgroup cpu controller: {exc.strerror or exc}"
        return "no cgroup cpu controller mounted"

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """Seconds the group's processes were held back by the quota so far."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":  # v1, nanoseconds
                return int(value) / 1e9
            if key == "throttled_usec":  # v2
                return int(value) / 1e6
        return 0.0

    def remove(self) -> None:
        """Remove the group (its processes have exited: an empty group only can go)."""
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


def default_cores(instances: int, cpu_count: int | None = None) -> float:
    """A per-instance cap that leaves room on this machine for `instances` capped daemons plus
    the fake upstream and PostgreSQL (each poll costs them together about 0.45 of what it costs
    a daemon) and the bench itself: at most one core, at least a tenth."""
    cores = cpu_count or os.cpu_count() or 1
    share = (cores - 0.6) / (instances * 1.45)
    return max(0.1, min(1.0, round(round(share / 0.05) * 0.05, 2)))


__all__ = ["CpuCap", "default_cores"]
