"""WarmHeap: keeps batches' memory in the heap, and hands it back past its ceiling and on exit."""

from __future__ import annotations

import sys

import pytest

from reportgen.heap import glibc
from reportgen.inference.memory import WarmHeap, resident_bytes


@pytest.mark.skipif(glibc() is None, reason="only glibc has mallopt and malloc_trim")
def test_trims_when_the_process_grows_past_its_ceiling():
    with WarmHeap(slack=0.25) as heap:
        heap.check()  # the size after the first batch becomes the base
        assert heap.base is not None and heap.trims == 0
        heap.check()
        assert heap.trims == 0  # not grown
        heap.base = heap.base // 2  # as if the process had doubled since
        heap.check()
        assert heap.trims == 1


def test_does_nothing_where_it_cannot_measure(monkeypatch):
    monkeypatch.setattr("reportgen.inference.memory.resident_bytes", lambda: None)
    with WarmHeap() as heap:
        heap.check()
    assert heap.base is None and heap.trims == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_resident_bytes_reads_this_process():
    rss = resident_bytes()
    assert rss is not None and rss > 10 << 20
