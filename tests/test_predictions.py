"""predictions.json against an independent torchvision forward pass."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.models import AlexNet_Weights, alexnet

from reportgen.weights import file_sha256

from .conftest import run_cli

WEIGHTS = AlexNet_Weights.IMAGENET1K_V1


def reference_top5(weights_file: Path, photos: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """PIL -> weights.transforms() -> alexnet -> softmax, one photo at a time."""
    model = alexnet(weights=None)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    model.eval()
    transform = WEIGHTS.transforms()
    out = {}
    with torch.no_grad():
        for path in photos:
            x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
            probs = torch.softmax(model(x), dim=1)[0]
            p, i = probs.topk(5)
            out[path.name] = list(zip(i.tolist(), p.tolist(), strict=True))
    return out


def check_against_reference(site: Path, weights_file: Path, photos_dir: Path) -> dict:
    data = json.loads((site / "predictions.json").read_text(encoding="utf-8"))
    photos = sorted(photos_dir.rglob("*.jpg"))
    expected = reference_top5(weights_file, photos)
    assert [img["source"] for img in data["images"]] == sorted(
        p.relative_to(photos_dir).as_posix() for p in photos
    )
    categories = WEIGHTS.meta["categories"]
    for img in data["images"]:
        want = expected[img["source"].rsplit("/", 1)[-1]]
        got = img["top5"]
        assert [t["index"] for t in got] == [i for i, _ in want]
        assert [t["label"] for t in got] == [categories[i] for i, _ in want]
        for t, (_, p) in zip(got, want, strict=True):
            assert t["probability"] == pytest.approx(p, abs=1e-5)
        probs = [t["probability"] for t in got]
        assert probs == sorted(probs, reverse=True)
        assert (site / img["page"]).is_file()
    return data


def test_top5_match_direct_torchvision_pass(built_site, weights_file, photos_dir):
    data = check_against_reference(built_site, weights_file, photos_dir)
    assert data["model"] == {
        "arch": "alexnet",
        "weights": weights_file.name,
        "sha256": file_sha256(weights_file),
        "decode": "fast",
    }
    assert data["skipped"] == []
    assert set(data) == {"model", "images", "skipped"}


def test_probabilities_are_softmax_not_logits(built_site):
    data = json.loads((built_site / "predictions.json").read_text(encoding="utf-8"))
    for img in data["images"]:
        assert all(0.0 <= t["probability"] <= 1.0 for t in img["top5"])


def test_pretrained_loads_from_torch_home(tmp_path, monkeypatch, weights_file, photos_dir, capsys):
    """--weights pretrained finds the official file name in TORCH_HOME and never downloads."""
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(weights_file, checkpoints / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    out = tmp_path / "site"
    assert run_cli("build", str(photos_dir), "--out", str(out), "--workers", "0") == 0
    data = check_against_reference(out, weights_file, photos_dir)
    # Not the official file (another hash): every page calls it by its name, none "pretrained",
    # and the warning says why.
    assert data["model"]["weights"] == "alexnet-owt-7be5be79.pth"
    assert data["model"]["sha256"] == file_sha256(weights_file)
    err = capsys.readouterr().err
    assert "does not start with 7be5be79" in err and str(checkpoints) in err
    assert "these are not the official pretrained weights" in (out / "model.html").read_text()
    for page in sorted(out.rglob("*.html")):
        text = page.read_text()
        assert "(alexnet-owt-7be5be79.pth weights)" in text
        assert "(pretrained weights)" not in text and "pretrained weights)" not in text
    # The site is published: nothing in it says where anything lies on this machine.
    for path in sorted(p for p in out.rglob("*") if p.is_file() and ".reportgen" not in p.parts):
        assert str(tmp_path).encode() not in path.read_bytes(), path
    assert os.environ["TORCH_HOME"] == str(tmp_path / "torch")


def test_random_weights_say_predictions_are_meaningless(tmp_path, photos_dir):
    out = tmp_path / "site"
    assert (
        run_cli(
            "build", str(photos_dir), "--out", str(out), "--weights", "random", "--workers", "0"
        )
        == 0
    )
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert data["model"] == {
        "arch": "alexnet",
        "weights": "random",
        "sha256": None,
        "decode": "fast",
    }
    pages = sorted(out.rglob("*.html"))
    assert len(pages) == 5 + len(data["images"])  # index, kernels, model, summary, map, photos
    for page in pages:
        assert "predictions are meaningless" in page.read_text(encoding="utf-8"), page
