"""Folder-wide views: each kernel's statistics and the photos that fire it most."""

from __future__ import annotations

import json

from reportgen.folder import kernel_views
from reportgen.records import ImageRecord, Prediction

from .htmltools import tags


def record(name: str, maxes: list[float], means: list[float]) -> ImageRecord:
    return ImageRecord(
        source=name,
        file_size=1,
        width=1,
        height=1,
        frames=1,
        top5=(Prediction(0, "tench", 1.0),),
        page=f"photos/{name}.html",
        crop="",
        conv1="",
        conv1_mean=tuple(means),
        conv1_max=tuple(maxes),
    )


def test_kernel_views_rank_photos_by_their_peak_activation():
    photos = [record(f"p{i}", [float(i), float(-i)], [i / 10, 0.0]) for i in range(10)]
    views = kernel_views(photos, count=2)
    assert [e.photo.source for e in views[0].top] == [
        "p9",
        "p8",
        "p7",
        "p6",
        "p5",
        "p4",
        "p3",
        "p2",
    ]
    assert [e.value for e in views[1].top][:2] == [0.0, -1.0]
    assert views[0].max == 9.0 and abs(views[0].mean - 0.45) < 1e-12
    assert views[1].max == 0.0


def test_every_conv1_map_links_to_its_kernel_view(built_site):
    kernels = (built_site / "kernels.html").read_text(encoding="utf-8")
    ids = {attrs["id"] for tag, attrs in tags(kernels) if tag == "section" and "id" in attrs}
    assert ids == {f"kernel-{k}" for k in range(64)}
    data = json.loads((built_site / "predictions.json").read_text(encoding="utf-8"))
    page = (built_site / data["images"][0]["page"]).read_text(encoding="utf-8")
    areas = [attrs for tag, attrs in tags(page) if tag == "area"]
    assert len(areas) == 64
    for k, area in enumerate(areas):
        assert area["href"] == f"../kernels.html#kernel-{k}"
        x1, y1, x2, y2 = map(int, area["coords"].split(","))
        assert (x1, y1) == ((k % 8) * 57, (k // 8) * 57) and (x2 - x1, y2 - y1) == (55, 55)
