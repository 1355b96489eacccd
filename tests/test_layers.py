"""Deeper layers on request, with per-map or per-layer scaling."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from torchvision.models import AlexNet_Weights, alexnet

from .conftest import run_cli
from .htmltools import images


def test_unknown_layers_are_a_config_error(tmp_path, capsys):
    code = run_cli("build", str(tmp_path), "--layers", "conv3,conv9,fc1", "--weights", "random")
    assert code == 2
    assert capsys.readouterr().err.splitlines()[1] == (
        "  - layers: unknown layer(s) conv9, fc1; choose from conv1, conv2, conv3, conv4, conv5"
    )


def test_conv3_grid_with_shared_scaling_matches_a_direct_pass(tmp_path, weights_file, photos_dir):
    out = tmp_path / "site"
    assert (
        run_cli(
            "build",
            str(photos_dir),
            "--out",
            str(out),
            "--weights",
            str(weights_file),
            "--workers",
            "0",
            "--layers",
            "conv3",
            "--normalize",
            "layer",
        )
        == 0
    )
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    entry = data["images"][0]
    page_path = out / entry["page"]
    page = page_path.read_text(encoding="utf-8")
    assert 'conv3 <span class="shape">384×13×13</span>' in page
    src = next(img["src"] for img in images(page) if "conv3 maps" in img["alt"])
    grid = np.asarray(Image.open(page_path.parent / src).convert("L")).astype(np.float64)
    assert grid.shape == (24 * 15 - 2, 16 * 15 - 2)

    model = alexnet(weights=None)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    model.eval()
    x = AlexNet_Weights.IMAGENET1K_V1.transforms()(
        Image.open(photos_dir / entry["source"]).convert("RGB")
    ).unsqueeze(0)
    with torch.no_grad():
        maps = model.features[:7](x)[0].numpy().astype(np.float64)  # conv3, before its ReLU
    low, high = maps.min(), maps.max()
    expected = (maps - low) / (high - low) * 255  # one range for the whole layer
    tiles = np.stack(
        [grid[r * 15 : r * 15 + 13, c * 15 : c * 15 + 13] for r in range(24) for c in range(16)]
    )
    assert np.abs(tiles - expected).mean() < 6  # JPEG at quality 75
    assert f"black = {low:.3g}, white = {high:.3g}" in page
    # Per-map scaling would stretch every tile to the full range; shared scaling does not.
    assert np.median(tiles.max(axis=(1, 2)) - tiles.min(axis=(1, 2))) < 200


def test_changing_layers_recomputes_and_default_draws_conv1_only(tmp_path, photos_dir, capsys):
    out = tmp_path / "site"
    args = ("build", str(photos_dir), "--out", str(out), "--weights", "random", "--workers", "0")
    assert run_cli(*args) == 0
    assert not list((out / "img").glob("*-conv2.jpg"))
    capsys.readouterr()
    assert run_cli(*args, "--layers", "conv2") == 0
    assert "(5 computed on" in capsys.readouterr().err
    assert len(list((out / "img").glob("*-conv2.jpg"))) == 5
