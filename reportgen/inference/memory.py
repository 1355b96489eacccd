"""Keeping the build's heap warm and its memory flat on glibc."""

from __future__ import annotations

import os

from ..heap import glibc

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Larger than any tensor of a batch (conv1's output, the largest, is 50 MB for 64 photos at once),
# so they all come from the heap.
_MMAP_THRESHOLD = 256 << 20
_TRIM_THRESHOLD = 1 << 30


BATCH_PHOTO_BYTES = 1_500_000
"""Memory a batch takes on the CPU for each photo in it, conv1 drawn: measured on 1,200 photos,
peaks of 1.12, 1.40 and 2.40 GB at batches of 64, 256 and 1,024 (1.3 to 1.5 MB a photo)."""
LAYER_PHOTO_BYTES = 750_000
"""And for each photo, with conv2 to conv5 drawn as well (1.59 against 1.40 GB at 256)."""


BUILD_BYTES = 1_000_000_000
"""The rest of a CPU build's peak, beside its batches' share (1.03 GB in those builds)."""


def photo_bytes(layers: int) -> int:
    """About how much memory each photo of a batch takes on the CPU, ``layers`` drawn."""
    return BATCH_PHOTO_BYTES + (LAYER_PHOTO_BYTES if layers > 1 else 0)


def available_bytes() -> int | None:
    """Memory the system can give without swapping (Linux's MemAvailable), where it tells."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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
    faults). Measured over 19 batches of 64, the main process then settles at 1.13 times its size
    after the first batch and stays flat; without the fixed thresholds glibc's heap grew by 25-50%.
    Should it grow ``slack`` past its size after the first batch, the free memory is handed back
    (``malloc_trim``); it is handed back on exit too. Elsewhere than glibc, this does nothing.

    The slack bounds the build's peak memory however many photos it runs: at 25% a build of 2,000
    photos peaked at 1.38 GB against 1.22 GB for 300 (the heap creeps up between trims); at 15%,
    1.30 GB; at 10%, 1.24 GB but 3% slower (a trim every few batches). At 20,000 photos, two cold
    builds back to back: at 15%, 1,507 MB (1.22 times a build of 300; 1.10 to 1.16 in other runs)
    in 221.0 s; at 12%, 1,389 MB in 223.5 s (1.7% more CPU time).

    At 12% the heap is in fact handed back after nearly every batch, once the pipeline is full
    (the encoder busy with one batch while the model runs the next), since that full pipeline is
    the 1.13 times above: 290 trims in 313 batches at 20,000 photos, 20.8 million page faults,
    56.5 s of system time. Settling the base over the first four batches instead, with a 4% slack,
    cut that to 107 to 179 trims, 9.1 to 14.6 million faults and 34.5 to 41.2 s (the build 1 to 3%
    faster), but the peak went to 1,410 to 1,517 MB between runs (1.26 times a build of 300 in the
    benchmark), and handing back all but the top 256 MB peaked at 1,581 MB: memory kept warm is
    the floor each batch's own allocations start from. The memory target is the one kept.

    All of that was measured with the convolutions run over whole batches. Since they run
    :data:`~reportgen.inference.pipeline.CONV_PART` photos at a time, the heap creeps more slowly:
    a traced 20,000-photo build peaked at 1,164 MB and never handed the heap back; at 8% it
    peaked at 1,171 MB, with 11 hand-backs.
    """

    def __init__(self, slack: float = 0.12) -> None:
        self.slack = slack
        self.base: int | None = None
        self.trims = 0
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
        if self.base is None:
            self.base = rss
        elif rss > self.base * (1 + self.slack):
            self._libc.malloc_trim(0)
            self.trims += 1

    def __exit__(self, *exc_info: object) -> None:
        if self._libc is not None:
            # glibc's dynamic thresholds cannot be switched back on: these are where they end up.
            self._libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            self._libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
            self._libc.malloc_trim(0)
