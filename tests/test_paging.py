"""Index pages that stay put as the folder grows (reportgen.site.paging)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from reportgen.site import paging


def names(*numbers: int) -> list[str]:
    return [f"p{n:04d}.jpg" for n in sorted(numbers)]


def pages(sources: list[str], starts: list[int]) -> list[list[str]]:
    """The photos of each page."""
    return [sources[a:b] for a, b in zip(starts, [*starts[1:], len(sources)], strict=True)]


def test_a_first_build_cuts_pages_of_per_page(tmp_path):
    assert paging.lay_out(names(*range(7)), 3, tmp_path) == [0, 3, 6]
    assert paging.lay_out([], 3, tmp_path / "empty") == [0]
    kept = json.loads((tmp_path / paging.PAGES_FILE).read_text())
    assert kept == {"per_page": 3, "starts": ["p0003.jpg", "p0006.jpg"]}


def test_photos_added_first_land_on_the_first_page_only(tmp_path):
    before = names(*range(10, 17))
    paging.lay_out(before, 3, tmp_path)
    after = names(1, 2, *range(10, 17))
    assert pages(after, paging.lay_out(after, 3, tmp_path)) == [
        names(1, 2, 10, 11, 12),
        names(13, 14, 15),
        names(16),
    ]


def test_photos_added_last_fill_the_last_page_then_make_new_ones(tmp_path):
    paging.lay_out(names(*range(7)), 3, tmp_path)
    grown = names(*range(12))
    assert pages(grown, paging.lay_out(grown, 3, tmp_path))[2:] == [
        names(6, 7, 8),
        names(9, 10, 11),
    ]


def test_a_page_past_twice_per_page_or_under_half_cuts_all_anew(tmp_path):
    paging.lay_out(names(*range(10, 19)), 4, tmp_path)  # 10-13, 14-17, 18
    crowded = names(1, 2, 3, 4, 5, *range(10, 19))  # page 1 would hold 9 photos
    assert paging.lay_out(crowded, 4, tmp_path) == [0, 4, 8, 12]
    thinned = [s for s in crowded if s not in names(14, 15, 16, 17)]  # page 4 of 4 -> 1 photo
    assert paging.lay_out(thinned, 4, tmp_path) == [0, 4, 8]


def test_pages_are_cut_anew_for_another_per_page_anew_or_a_damaged_file(tmp_path):
    sources = names(*range(10))
    paging.lay_out(names(*range(3, 10)), 3, tmp_path)  # 3-5, 6-8, 9
    assert paging.lay_out(sources, 3, tmp_path) == [0, 6, 9]
    assert paging.lay_out(sources, 3, tmp_path, anew=True) == [0, 3, 6, 9]
    paging.lay_out(names(*range(3, 10)), 3, tmp_path)
    assert paging.lay_out(sources, 4, tmp_path) == [0, 4, 8]
    for damaged in (b"{", b"[]", b'{"per_page": 4, "starts": [1]}'):
        (tmp_path / paging.PAGES_FILE).write_bytes(damaged)
        assert paging.lay_out(sources, 4, tmp_path) == [0, 4, 8]


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.integers(0, 300), max_size=120),
    st.sets(st.integers(0, 300), max_size=120),
    st.integers(1, 12),
)
def test_pages_hold_every_photo_once_in_order_within_their_bounds(tmp_path_factory, a, b, size):
    state = tmp_path_factory.mktemp("state")
    paging.lay_out(names(*a), size, state)
    sources = names(*b)
    starts = paging.lay_out(sources, size, state)
    laid = pages(sources, starts)
    assert starts[0] == 0 and sum(laid, []) == sources
    assert all((size + 1) // 2 <= len(p) <= 2 * size for p in laid[:-1])
    assert len(laid[-1]) <= size and (len(laid[-1]) >= 1 or not sources)
    # Laid out again with nothing changed: the same pages.
    assert paging.lay_out(sources, size, state) == starts
