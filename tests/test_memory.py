"""WarmHeap: keeps batches' memory in the heap, and hands it back past its ceiling and on exit."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import reportgen
from reportgen.heap import collector_paused, glibc, small_pages
from reportgen.inference.memory import WarmHeap, resident_bytes

from .conftest import SAMPLE_PHOTOS


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


def test_the_collector_is_paused_for_a_block_and_restored_after_a_failure():
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_what_a_build_kept_from_the_collector_is_handed_back(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for photo in SAMPLE_PHOTOS[:2]:
        (src / photo.name).write_bytes(photo.read_bytes())
    # As in the command's process, where nothing else freezes objects (here, a plugin might: a
    # build then freezes nothing, as the next test checks).
    gc.unfreeze()
    kept = []
    real = gc.freeze
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gc, "freeze", lambda: kept.append(gc.get_count()) or real())
        reportgen.build_site(src, tmp_path / "site", weights="random", workers=0)
    assert kept, "the records were not kept out of the collector's sight"
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_caller_s_own_frozen_objects_stay_frozen_through_a_build(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / SAMPLE_PHOTOS[0].name).write_bytes(SAMPLE_PHOTOS[0].read_bytes())
    gc.freeze()
    try:
        theirs = gc.get_freeze_count()
        assert theirs > 0
        reportgen.build_site(src, tmp_path / "site", weights="random", workers=0)
        # Thawing empties the frozen set; objects freed meanwhile leave it one by one.
        assert gc.get_freeze_count() > theirs // 2
    finally:
        gc.unfreeze()


def test_numpy_huge_pages_are_off_for_the_block_only():
    switch = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    if switch is None:
        pytest.skip("this NumPy has no switch for huge pages")
    before = switch(True)
    try:
        with pytest.raises(KeyError), small_pages():
            assert switch(False) is False  # off inside
            raise KeyError("a failing build")
        assert switch(True) is True  # as it was, after a failure too
    finally:
        switch(before)
