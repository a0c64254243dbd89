"""How far this process's resident memory rose while a block ran (Linux, glibc): for tests that bound a
step's memory, never its time."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


@dataclass
class Rise:
    bytes: int = 0

    @property
    def mib(self) -> float:
        return self.bytes / MiB


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LookupError(key)


@contextmanager
def peak_rss_rise() -> Iterator[Rise]:
    """The most the resident memory rose above its level at the start (`Rise.bytes`, set on exit). Freed
    heap is given back first (`malloc_trim`, every arena), so memory an earlier test freed but glibc kept
    can't hide what the block allocates; then the kernel's high-water mark (VmHWM) is reset
    (`/proc/self/clear_refs`), and read at the end."""
    ctypes.CDLL(None).malloc_trim(0)
    start = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    rise = Rise()
    try:
        yield rise
    finally:
        rise.bytes = (_status_kib("VmHWM") - start) * 1024
