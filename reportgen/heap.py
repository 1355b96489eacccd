"""The process's heap on glibc: handing its free memory back to the system (no torch here)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """glibc, where this process runs on it (with ``malloc_trim`` and ``mallopt``); else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (musl has neither: nothing to do)
    except (OSError, AttributeError):
        return None
    return libc


def hand_back() -> None:
    """Give the heap's free memory back to the system (``malloc_trim``): after a stage whose
    arrays, each under glibc's mmap threshold, stay in the heap when freed. Elsewhere than glibc,
    nothing."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
