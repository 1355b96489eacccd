"""A fine-tuned AlexNet with K != 1000 classes (--weights PATH --labels FILE), and ImageNet's
classes named in another language; top-5 against a direct torchvision computation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.models import AlexNet_Weights, alexnet

from .conftest import SAMPLE_PHOTOS, run_cli, state_of

NAMES = ["虎斑猫", "dog", "rocket ship", "coffee mug", "astronaut", "galaxy", "owl", "kite", "boat",
         "tree"]  # fmt: skip


@pytest.fixture(scope="module")
def ten_classes(tmp_path_factory) -> tuple[Path, Path]:
    """A seeded AlexNet with a 10-class head saved as a .pth, and its labels file."""
    folder = tmp_path_factory.mktemp("ten")
    torch.manual_seed(7)
    weights = folder / "alexnet-10.pth"
    torch.save(alexnet(weights=None, num_classes=10).state_dict(), weights)
    labels = folder / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    return weights, labels


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory) -> Path:
    """The sample photos under folders named after the 10 classes (one under an unknown one)."""
    folder = tmp_path_factory.mktemp("classes")
    for i, photo in enumerate(SAMPLE_PHOTOS):
        target = folder / NAMES[i % len(NAMES)] / photo.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(photo, target)
    return folder


def reference(weights: Path, classes: int, paths: list[Path]) -> list[list[tuple[int, float]]]:
    model = alexnet(weights=None, num_classes=classes)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    transform = AlexNet_Weights.IMAGENET1K_V1.transforms()
    with torch.no_grad():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        p, i = torch.softmax(model(x), dim=1).topk(5)
    return [list(zip(a.tolist(), b.tolist(), strict=True)) for a, b in zip(i, p, strict=True)]


def test_ten_class_head_top5_matches_direct_torchvision(ten_classes, class_folder, tmp_path,
                                                        recwarn):  # fmt: skip
    weights, labels = ten_classes
    out = tmp_path / "site"
    code = run_cli("build", str(class_folder), "--out", str(out), "--weights", str(weights),
                   "--labels", str(labels), "--decode", "exact")  # fmt: skip
    assert code == 0
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    sources = [img["source"] for img in data["images"]]
    expected = reference(weights, 10, [class_folder / s for s in sources])
    hits = 0
    for img, want in zip(data["images"], expected, strict=True):
        assert [t["index"] for t in img["top5"]] == [i for i, _ in want]
        assert [t["label"] for t in img["top5"]] == [NAMES[i] for i, _ in want]
        for t, (_, p) in zip(img["top5"], want, strict=True):
            assert t["probability"] == pytest.approx(p, abs=1e-5)
        hits += img["top5"][0]["label"] == img["source"].split("/")[0]
    # Accuracy: the class folders are matched against the labels file.
    summary = (out / "summary.html").read_text(encoding="utf-8")
    assert f"<dt>Labelled photos</dt><dd>{len(sources)}</dd>" in summary
    assert f"<dt>Top-1 accuracy</dt><dd>{hits / len(sources) * 100:.1f}%</dd>" in summary
    csv_head = (out / "predictions.csv").read_text(encoding="utf-8").splitlines()[0]
    assert csv_head.endswith("top5_index,top5_label,top5_probability")
    page = next((out / "photos").glob("*.html")).read_text(encoding="utf-8")
    assert page.count('class="heat"') == 5  # a Grad-CAM for each of the top-5 of 10 classes
    # A name the chart's font cannot draw is one warning line of reportgen's, not matplotlib's.
    assert not [w for w in recwarn if "Glyph" in str(w.message)]


def test_a_head_without_labels_stops_before_any_model_work(ten_classes, class_folder, tmp_path,
                                                           capsys):  # fmt: skip
    weights, _ = ten_classes
    out = tmp_path / "site"
    assert run_cli("build", str(class_folder), "--out", str(out), "--weights", str(weights)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "10 outputs" in err and "1000" in err and "--labels" in err
    assert not (state_of(out) / "cache" / "results").exists()
    assert not (out / "index.html").exists()


def test_labels_of_the_wrong_count_name_both_numbers(ten_classes, class_folder, tmp_path, capsys):
    weights, _ = ten_classes
    nine = tmp_path / "nine.txt"
    nine.write_text("\n".join(NAMES[:9]), encoding="utf-8")
    out = tmp_path / "site"
    code = run_cli("build", str(class_folder), "--out", str(out), "--weights", str(weights),
                   "--labels", str(nine))  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "9 class names" in err and "10 outputs" in err and err.count("\n") == 1
    assert not (state_of(out) / "cache" / "results").exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [("a\n\nb\n", "line 2 is blank"), ("a\nb\na\n", "line 3 repeats 'a'"), (b"\xff\xfe", "UTF-8")],
)
def test_bad_labels_files(text, says, weights_file, class_folder, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = run_cli("build", str(class_folder), "--out", str(tmp_path / "s"), "--weights",
                   str(weights_file), "--labels", str(labels))  # fmt: skip
    assert code == 2
    assert says in capsys.readouterr().err


def test_imagenet_classes_in_another_language_keep_the_english_name(
    weights_file, tmp_path, capsys, recwarn
):
    english = AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    labels = tmp_path / "zh.txt"
    labels.write_text("\n".join(f"类别{i}" for i in range(1000)) + "\n", encoding="utf-8")
    folder = tmp_path / "in"
    (folder / "tabby").mkdir(parents=True)
    shutil.copy(SAMPLE_PHOTOS[0], folder / "tabby" / "a.jpg")
    out = tmp_path / "site"
    code = run_cli("build", str(folder), "--out", str(out), "--weights", str(weights_file),
                   "--labels", str(labels))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    # The chart draws the English names where its font lacks the others: no warning at all.
    assert "font" not in err and not [w for w in recwarn if "Glyph" in str(w.message)]
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    for t in data["images"][0]["top5"]:
        assert t["label"] == f"类别{t['index']} ({english[t['index']]})"
    summary = (out / "summary.html").read_text(encoding="utf-8")
    # The class folder, named in English, is matched to the translated class.
    assert "<dt>Labelled photos</dt><dd>1</dd>" in summary
    assert f"类别281 ({english[281]})" in summary
