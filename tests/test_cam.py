"""Grad-CAM against a plain autograd Grad-CAM on the torchvision model."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.models import AlexNet_Weights, alexnet

from reportgen.inference.cam import CamRecorder

from .conftest import SAMPLE_PHOTOS


def autograd_gradcam(model: torch.nn.Module, x: torch.Tensor, cls: int) -> torch.Tensor:
    """Textbook Grad-CAM: backpropagate one class score to features.11 and weigh its maps."""
    kept = {}

    def hook(module, args, output):
        output.retain_grad()
        kept["a"] = output

    handle = model.features[11].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            logits[0, cls].backward()
    finally:
        handle.remove()
    a = kept["a"]
    alpha = a.grad.mean(dim=(2, 3))
    return torch.relu((alpha[:, :, None, None] * a).sum(dim=1))[0].detach()


@pytest.fixture()
def model(weights_file):
    net = alexnet(weights=None)
    net.load_state_dict(torch.load(weights_file, weights_only=True))
    return net.eval()


def test_closed_form_gradcam_matches_autograd(model):
    transform = AlexNet_Weights.IMAGENET1K_V1.transforms()
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in SAMPLE_PHOTOS[:3]])
    with torch.no_grad(), CamRecorder(model) as rec:
        logits = model(x)
        top5 = logits.topk(5, dim=1).indices
        cams = rec.cams(top5)
    assert cams.shape == (3, 5, 13, 13)
    for b in range(3):
        for k in range(5):
            expected = autograd_gradcam(model, x[b : b + 1], int(top5[b, k]))
            scale = expected.abs().max().clamp_min(1e-12)
            assert torch.allclose(cams[b, k] / scale, expected / scale, atol=1e-4), (b, k)
    assert cams.sum() > 0


def test_cam_hooks_are_removed_also_after_an_exception(model):
    with pytest.raises(RuntimeError, match="boom"), CamRecorder(model):
        assert sum(len(m._forward_hooks) for m in model.modules()) == 3
        raise RuntimeError("boom")
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_site_pages_show_each_top5_gradcam_of_a_direct_pass(built_site, model, photos_dir):
    """The heat maps on a photo page are the Grad-CAM of a direct torchvision pass."""
    import base64
    import io
    import json

    import numpy as np

    from reportgen.inference.pictures import _heat_palette

    from .htmltools import images

    data = json.loads((built_site / "predictions.json").read_text(encoding="utf-8"))
    entry = data["images"][0]
    heats = [
        img
        for img in images((built_site / entry["page"]).read_text(encoding="utf-8"))
        if img.get("class") == "heat"
    ]
    assert len(heats) == 5
    palette = _heat_palette().astype(np.int32)
    transform = AlexNet_Weights.IMAGENET1K_V1.transforms()
    x = transform(Image.open(photos_dir / entry["source"]).convert("RGB")).unsqueeze(0)
    for heat, top in zip(heats, entry["top5"], strict=True):
        assert top["label"] in heat["alt"]
        png = base64.b64decode(heat["src"].removeprefix("data:image/png;base64,"))
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)
        assert rgb.shape == (13, 13, 3)
        levels = np.abs(rgb[:, :, None, :] - palette[None, None]).sum(-1).argmin(-1)
        expected = autograd_gradcam(model, x, top["index"]).numpy()
        expected = expected / expected.max() * 255 if expected.max() > 0 else expected
        assert np.abs(levels - expected).max() <= 2


def test_heat_palette_runs_from_black_to_white_with_distinct_steps():
    import numpy as np

    from reportgen.inference.pictures import _heat_palette

    palette = _heat_palette().astype(int)
    assert palette.shape == (256, 3)
    assert palette[0].tolist() == [0, 0, 0] and palette[-1].tolist() == [255, 255, 255]
    assert len({tuple(c) for c in palette}) == 256
    assert (np.diff(palette.sum(axis=1)) > 0).all()  # brighter with every step


def test_heat_pngs_decode_to_each_maps_own_levels():
    import io

    import numpy as np
    from PIL import Image

    from reportgen.inference.pictures import _heat_palette, heat_pngs

    cams = np.array([[[0, 1, 2], [4, 4, 0]], [[0, 0, 0], [0, 0, 0]]], dtype=np.float32)
    pngs = heat_pngs(cams[None])  # (1, 2, 2, 3): one photo, two maps
    assert len(pngs) == 2
    decoded = [Image.open(io.BytesIO(png)) for png in pngs]
    assert all(img.format == "PNG" and img.mode == "RGB" and img.size == (3, 2) for img in decoded)
    palette = _heat_palette()
    # Scaled by the map's own maximum: 1/4 -> 63.75 -> 64, 2/4 -> 127.5 -> 128 (to even).
    assert np.array_equal(np.asarray(decoded[0]), palette[[[0, 64, 128], [255, 255, 0]]])
    assert np.array_equal(np.asarray(decoded[1]), palette[np.zeros((2, 3), dtype=int)])
