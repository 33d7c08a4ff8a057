"""glibc's malloc keeps freed download buffers at hand: page faults per MiB handed over stay
near zero instead of one per 4 KiB page."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from watcher.allocator import keep_freed_memory

# As a download hands its bytes over: 256 KiB pieces copied into fresh objects (the socket
# read, then the HTTP parser), in batches of 4 dropped once used; 1 GiB in all.
_CHURN = """
import resource, sys
from watcher.allocator import keep_freed_memory
tuned = keep_freed_memory({}) if sys.argv[1] == "tuned" else False
read = bytearray(256 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
batch = []
for _ in range(4096):
    batch.append(bytes(bytes(read)))
    if len(batch) == 4:
        batch = []
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@glibc
def test_freed_buffers_are_kept_rather_than_faulted_in_again() -> None:
    tuned, faults = _faults("tuned")
    assert tuned == "True"
    assert faults < 5_000  # glibc's defaults: ~300,000 here (one per page of 1 GiB)


@glibc
def test_the_defaults_fault_the_same_buffers_in_again() -> None:
    # The measurement above is meaningful: without the thresholds it counts many faults.
    _, faults = _faults("default")
    assert faults > 50_000


@pytest.mark.parametrize(
    "environ",
    [
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
)
def test_the_operators_own_settings_win(environ: dict[str, str]) -> None:
    assert keep_freed_memory(environ) is False
