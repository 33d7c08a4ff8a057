"""glibc's malloc told to keep a few MiB of freed memory at hand (`keep_freed_memory`).

A download hands its bytes over in pieces of up to 256 KiB (a socket read), each copied into a
fresh object and freed a few MiB later, once hashed and written. With glibc's defaults the
freed top of the heap goes back to the kernel as soon as 2 x 256 KiB of it is free, and the
next pieces fault it in again, page by page: ~25,000 page faults per GiB mirrored (~100 MB of
fresh zeroed pages), about 0.1 s of the event loop's CPU per GiB on a VM. Keeping up to
`TRIM_BYTES` of it removes them; memory the daemon no longer uses beyond that still goes back.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Final

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
# Freed memory at the top of the heap kept rather than handed back, up to this much.
TRIM_BYTES: Final = 4 * 1024 * 1024
# Blocks from this size up get a mapping of their own (returned whole when freed); below it
# they come from the heap. Fixed, because setting either value ends glibc's own adjustment.
MMAP_BYTES: Final = 1024 * 1024
# Set by the operator, these win (glibc reads them at start; see mallopt(3)).
_OPERATOR_SETTINGS: Final = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory(environ: Mapping[str, str]) -> bool:
    """Set the thresholds above, unless `environ` sets malloc's own (`MALLOC_*_THRESHOLD_`,
    `GLIBC_TUNABLES` with `glibc.malloc`) or the C library is not glibc; True if set."""
    if any(name in environ for name in _OPERATOR_SETTINGS):
        return False
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)
    )
