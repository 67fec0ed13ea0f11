"""The daemon's pinned mmap threshold: big buffers read and freed do not stay in its RSS."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from bridge.malloc import pin_mmap_threshold

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the adjustment is glibc's"
)

# What a start does to the heap: a file read whole and freed, then smaller files read and freed
# while something long-lived is allocated. Prints how much the process grew, in MB.
PATTERN = """
import sys
from bridge.malloc import pin_mmap_threshold

def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

if sys.argv[1] == "pinned":
    assert pin_mmap_threshold()
kept = []
before = rss()
for _ in range(3):
    whole = bytes(10 * 1024 * 1024)
    del whole
    data = bytearray(b"x" * (6 * 1024 * 1024))
    kept.append([object() for _ in range(1000)])
    kept.append(bytes(200_000))
    del data
print(rss() - before)
"""


def grown_mb(mode: str) -> float:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_MMAP_THRESHOLD_ from the caller's environment
    out = subprocess.run(
        [sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, check=True, env=env
    )
    return float(out.stdout)


def test_freed_big_buffers_are_given_back_once_the_threshold_is_pinned() -> None:
    """Without the pin the same pattern keeps 6 MB per round (18 MB here): the control shows the
    test can tell the two apart on this machine."""
    assert grown_mb("default") > 10
    assert grown_mb("pinned") < 3


def test_an_owners_own_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert pin_mmap_threshold() is False
