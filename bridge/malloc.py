"""Freed big buffers go back to the system: glibc's mmap threshold, pinned for the daemon.

glibc serves a request over 128 KiB with its own mmap and unmaps it on free, until the first
such block is freed: it then raises the threshold to that block's size (up to 32 MiB), and later
blocks below it come from the heap, which keeps them once freed. A start reads the audit log's
current file whole (up to `audit.rotate_bytes`, 10 MiB) a few times, so a daemon that started
beside a long log stayed about 6 MB larger for good, and 44 MB larger after a start that read
the whole log (the first after an upgrade). Setting the threshold turns that adjustment off.
Where there is no glibc (musl, macOS) nothing is done, as when the owner set
`MALLOC_MMAP_THRESHOLD_` themselves.
"""

from __future__ import annotations

import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD = 128 * 1024  # glibc's own starting value


def pin_mmap_threshold() -> bool:
    """Pin the threshold for this process (call it before the work starts). False where it
    could not be, or was not ours to set."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    import ctypes  # here, not at the top: only the daemon pays for it (0.3 MB)

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to ask, or one without mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
