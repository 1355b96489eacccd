"""Folder-wide views: each kernel's statistics and the photos that fire it most."""

from __future__ import annotations

import dataclasses
import json

from reportgen.records import LayerRange, PhotoRecord, Prediction
from reportgen.site.folder import kernel_views

from .htmltools import tags


def record(name: str, maxes: list[float], means: list[float]) -> PhotoRecord:
    return PhotoRecord(
        width=1,
        height=1,
        frames=1,
        top5=(Prediction(0, "tench", 1.0),),
        conv1_mean=tuple(means),
        conv1_max=tuple(maxes),
        ranges=(LayerRange("conv1", 0.0, 1.0),),
        source=name,
        file_size=1,
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
    # The areas themselves are made by kernel-map.js (see test_browser) from this geometry.
    (conv1_map,) = [attrs for tag, attrs in tags(page) if tag == "map"]
    assert conv1_map["name"] == "conv1-maps"
    assert conv1_map["data-grid"] == "8,64,57,57,2"  # columns, maps, step x, step y, gap
    assert conv1_map["data-href"] == "../kernels.html#kernel-"
    assert 'src="../assets/kernel-map.js"' in page


def test_summary_lists_least_confident_and_near_misses():
    from reportgen.site.folder import summarize_folder

    def rec(name, probs, labels=("a", "b", "c", "d", "e"), truth=None):
        r = record(name, [], [])
        top5 = tuple(
            Prediction(i, lab, p) for i, (lab, p) in enumerate(zip(labels, probs, strict=True))
        )
        return dataclasses.replace(r, top5=top5, truth=truth)

    photos = [
        rec("sure", [0.9, 0.05, 0.02, 0.02, 0.01], truth="a"),
        rec("close", [0.40, 0.38, 0.1, 0.1, 0.02], truth="b"),
        rec("unsure", [0.2, 0.1, 0.1, 0.1, 0.1], labels=("b", "a", "c", "d", "e"), truth="e"),
    ]
    s = summarize_folder(photos)
    assert [p.source for p in s.least_confident] == ["unsure", "close", "sure"]
    assert [p.source for p in s.near_misses] == ["close"]
    assert s.class_counts == (("a", 2), ("b", 1))
    assert (s.labelled, s.top1_accuracy, s.top5_accuracy) == (3, 1 / 3, 1.0)
    assert [p.source for p in s.mistakes] == ["close", "unsure"]
    assert [(c.label, c.count, c.top1) for c in s.per_class] == [
        ("a", 1, 1.0),
        ("b", 1, 0.0),
        ("e", 1, 0.0),
    ]


def test_class_folders_give_accuracy_and_csv_matches_json(tmp_path, weights_file, capsys):
    import csv
    import shutil

    from .conftest import SAMPLE_PHOTOS, run_cli

    src = tmp_path / "in"
    for folder, photo in (("tabby", 1), ("Tabby", 3), ("espresso", 2), ("holiday", 0)):
        (src / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_PHOTOS[photo], src / folder / SAMPLE_PHOTOS[photo].name)
    out = tmp_path / "site"
    assert (
        run_cli(
            "build", str(src), "--out", str(out), "--weights", str(weights_file), "--workers", "0"
        )
        == 0
    )
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    truth = {"tabby": "tabby", "Tabby": "tabby", "espresso": "espresso"}
    labelled = [e for e in data["images"] if e["source"].split("/")[0] in truth]
    assert len(labelled) == 3
    top1 = sum(e["top5"][0]["label"] == truth[e["source"].split("/")[0]] for e in labelled)
    top5 = sum(
        truth[e["source"].split("/")[0]] in [t["label"] for t in e["top5"]] for e in labelled
    )
    summary = (out / "summary.html").read_text(encoding="utf-8")
    assert f"<dt>Top-1 accuracy</dt><dd>{top1 / 3 * 100:.1f}%</dd>" in summary
    assert f"<dt>Top-5 accuracy</dt><dd>{top5 / 3 * 100:.1f}%</dd>" in summary
    assert "<dt>Labelled photos</dt><dd>3</dd>" in summary
    for name in ("classes", "confidence", "margin"):
        assert (out / "img" / f"summary-{name}.png").is_file()

    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["source"] for r in rows] == [e["source"] for e in data["images"]]
    for row, entry in zip(rows, data["images"], strict=True):
        assert row["page"] == entry["page"]
        assert row["truth"] == truth.get(entry["source"].split("/")[0], "")
        for k, t in enumerate(entry["top5"], start=1):
            assert int(row[f"top{k}_index"]) == t["index"]
            assert row[f"top{k}_label"] == t["label"]
            assert float(row[f"top{k}_probability"]) == t["probability"]


def test_labels_csv_wins_and_bad_rows_are_reported(tmp_path, capsys):
    import shutil

    from .conftest import SAMPLE_PHOTOS, run_cli

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE_PHOTOS[1], src / "cat.jpg")
    shutil.copy(SAMPLE_PHOTOS[2], src / "cup.jpg")
    (src / "labels.csv").write_text(
        "source,label\ncat.jpg,Egyptian_cat\ncup.jpg,not a class\nmissing.jpg,tabby\n"
    )
    assert (
        run_cli(
            "build", str(src), "--out", str(tmp_path / "s"), "--weights", "random", "--workers", "0"
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "reportgen: labels.csv line 3: 'not a class' is not an ImageNet class\n" in err
    assert "reportgen: labels.csv line 4: no photo 'missing.jpg'\n" in err
    summary = (tmp_path / "s" / "summary.html").read_text(encoding="utf-8")
    assert "<dt>Labelled photos</dt><dd>1</dd>" in summary


def test_unchanged_rebuild_imports_neither_torch_nor_matplotlib(tmp_path, photos_dir):
    import subprocess
    import sys

    out = tmp_path / "site"
    probe = (
        "import sys; from reportgen.cli import main; "
        f"code = main(['build', {str(photos_dir)!r}, '--out', {str(out)!r}, '--weights', "
        "'random', '--quiet']); "
        "print(code, 'torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    first = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert first.stdout.split() == ["0", "True", "True"], first.stderr
    again = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert again.stdout.split() == ["0", "False", "False"], again.stderr
