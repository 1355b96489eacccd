"""Keeping the build's heap warm and its memory flat on glibc."""

from __future__ import annotations

import os

from ..heap import glibc

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Larger than any tensor of a batch of 64 (conv1's output is 50 MB), so they all come from the heap.
_MMAP_THRESHOLD = 256 << 20
_TRIM_THRESHOLD = 1 << 30


def resident_bytes() -> int | None:
    """This process's resident memory, where /proc tells it."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class WarmHeap:
    """Keeps the memory of each batch's tensors for the next batch, within a ceiling.

    Each batch allocates a few hundred MB of tensors and frees them. By default glibc gives
    blocks over 32 MB back to the OS on free, and the next batch pays a page fault for every 4 KB
    of them again: 1.2 million faults and about 1.5 s of CPU over 1,200 photos, measured on 2
    cores. Inside this context manager those blocks stay in the heap and are reused (0.4 million
    faults). Should the process grow ``slack`` past its base, the free memory is handed back
    (``malloc_trim``, which costs the next batch its faults again); it is handed back on exit too.
    Elsewhere than glibc, this does nothing.

    The base is the largest size over the first ``settle`` checks: the process grows until the
    pipeline is full (the encoder busy with one batch while the model runs the next), to about
    1.13 times its size after the first batch. A base taken after the first batch, with a 12 %
    slack, put nearly every later batch past the ceiling. Two cold builds of 20,000 photos on 2
    cores, one after the other: with that base, 290 trims in 313 batches, 20.8 million page faults,
    56.5 s of system time, 240.0 s; with the base settled over the first four batches and a 4 %
    slack, 107 trims, 9.1 million faults, 34.5 s, 232.6 s. Both peaked at 1,410 MB.

    The slack bounds the build's peak memory however many photos it runs, since glibc's heap
    creeps up between trims (about 12 MB a batch of 64): at 8 % over the settled base the same
    build trimmed 37 times, but peaked at 1,492 MB, 1.19 times a build of 300 photos.
    """

    def __init__(self, slack: float = 0.04, *, settle: int = 1) -> None:
        self.slack = slack
        self.settle = settle
        self.base: int | None = None
        self.trims = 0
        self.checks = 0
        self._libc = glibc()

    def __enter__(self) -> WarmHeap:
        if self._libc is not None:
            # A glibc that refuses a value (mallopt returns 0) keeps its own: only slower.
            self._libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            self._libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        return self

    def check(self) -> None:
        """Call once per batch."""
        if self._libc is None:
            return
        rss = resident_bytes()
        if rss is None:
            return
        self.checks += 1
        if self.checks <= self.settle:
            self.base = max(self.base or 0, rss)
        elif self.base is not None and rss > self.base * (1 + self.slack):
            self._libc.malloc_trim(0)
            self.trims += 1

    def __exit__(self, *exc_info: object) -> None:
        if self._libc is not None:
            # glibc's dynamic thresholds cannot be switched back on: these are where they end up.
            self._libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            self._libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
            self._libc.malloc_trim(0)
