"""The conv1 hook, and the conv1 pictures against a direct computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import AlexNet_Weights, alexnet

from reportgen.errors import WeightsError
from reportgen.inference import pictures
from reportgen.inference.model import Conv1Recorder, load_model
from reportgen.layout import Grid, layer_grid
from reportgen.weights import resolve_weights

from .htmltools import images


@pytest.fixture()
def model(weights_file: Path) -> torch.nn.Module:
    net = alexnet(weights=None)
    net.load_state_dict(torch.load(weights_file, weights_only=True))
    return net.eval()


def test_recorder_keeps_conv1_output_before_the_inplace_relu(model):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.features[0](x)
        with Conv1Recorder(model) as rec:
            model(x)
            got = rec.output
    assert got is not None and got.shape == (2, 64, 55, 55)
    assert (got < 0).any(), "the in-place ReLU overwrote the recorded output"
    torch.testing.assert_close(got, expected)


def test_hook_is_removed_after_use_and_after_an_exception(model):
    conv1 = model.features[0]
    with Conv1Recorder(model):
        assert len(conv1._forward_hooks) == 1
    assert len(conv1._forward_hooks) == 0

    with pytest.raises(RuntimeError, match="boom"), Conv1Recorder(model):
        assert len(conv1._forward_hooks) == 1
        raise RuntimeError("boom")
    assert len(conv1._forward_hooks) == 0


def test_tile_places_tile_k_at_row_k_div_8_column_k_mod_8():
    tiles = torch.arange(64, dtype=torch.uint8).view(1, 64, 1, 1, 1).expand(1, 64, 1, 5, 5)
    grid = pictures.tile(tiles.contiguous(), Grid(64, (5, 5), columns=8), fill=255)[0, 0]
    assert grid.shape == (8 * 7 - 2, 8 * 7 - 2)
    for k in range(64):
        r, c = divmod(k, 8)
        block = grid[r * 7 : r * 7 + 5, c * 7 : c * 7 + 5]
        assert (block == k).all()
    assert (grid[5:7, :] == 255).all() and (grid[:, 5:7] == 255).all()


def reference_maps(model, photo_path: Path) -> np.ndarray:
    """conv1 of a direct torchvision pass, before the ReLU, each map scaled to 0..255."""
    photo = Image.open(photo_path).convert("RGB")
    x = AlexNet_Weights.IMAGENET1K_V1.transforms()(photo).unsqueeze(0)
    with torch.no_grad():
        maps = model.features[0](x)[0].numpy().astype(np.float64)  # (64, 55, 55)
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return (maps - low) / (high - low) * 255


def test_activation_grid_is_64_maps_in_order_exactly(model, photos_dir):
    photo = sorted(photos_dir.rglob("*.jpg"))[0]
    expected = reference_maps(model, photo)
    x = AlexNet_Weights.IMAGENET1K_V1.transforms()(Image.open(photo).convert("RGB"))
    with torch.no_grad(), Conv1Recorder(model) as rec:
        model(x.unsqueeze(0))
        levels = pictures.activations(rec.output).levels
        grid = pictures.grey_grids(levels, layer_grid("conv1", (64, 55, 55)))[0]
    assert grid.shape == (8 * 57 - 2, 8 * 57 - 2)
    for k in range(64):
        r, c = divmod(k, 8)
        tile = grid[r * 57 : r * 57 + 55, c * 57 : c * 57 + 55].astype(float)
        assert np.abs(tile - expected[k]).max() <= 1, f"tile {k} is not map {k}"


@pytest.mark.parametrize("normalize", ["map", "layer"])
def test_levels_of_a_batch_taken_a_chunk_at_a_time_are_each_photos_own(normalize):
    """A batch of 2.5 chunks, channels-last as the model makes it, with a constant map: every
    photo's levels and extremes are what a float64 computation of that photo alone gives."""
    count = 2 * pictures.LEVELS_CHUNK + pictures.LEVELS_CHUNK // 2
    maps = torch.randn(count, 16, 9, 9, generator=torch.Generator().manual_seed(0)) * 3
    maps[count - 1, 5] = 1.5
    channels_last = maps.contiguous(memory_format=torch.channels_last)
    out = pictures.activations(channels_last, normalize=normalize)
    assert out.levels.dtype == torch.uint8 and out.levels.shape == maps.shape
    x = maps.double().numpy()
    low, high = x.min(axis=(2, 3)), x.max(axis=(2, 3))
    np.testing.assert_array_equal(out.low.numpy(), low.astype(np.float32))
    np.testing.assert_array_equal(out.high.numpy(), high.astype(np.float32))
    if normalize == "layer":
        low = np.broadcast_to(low.min(axis=1, keepdims=True), low.shape)
        high = np.broadcast_to(high.max(axis=1, keepdims=True), high.shape)
    span = (high - low)[..., None, None]
    safe = np.where(span > 0, span, 1.0)
    expected = np.where(span > 0, (x - low[..., None, None]) / safe * 255, 0.0)
    assert np.abs(out.levels.numpy().astype(np.float64) - expected).max() <= 0.5 + 1e-3
    if normalize == "map":
        assert (out.levels[count - 1, 5] == 0).all()  # a constant map is black


def test_a_batch_run_in_parts_is_what_one_pass_of_torchvision_gives(
    monkeypatch, model, weights_file
):
    """The convolutions in parts of 4 over a batch of 10 photos, the head over all 10: the top-5,
    fc7 codes, Grad-CAMs, grids, means and ranges are those of one plain pass of the batch."""
    from torchvision.transforms.functional import normalize

    from reportgen.inference import pipeline
    from reportgen.inference.cam import CamRecorder
    from reportgen.inference.model import summarize
    from reportgen.layout import layer_grids

    monkeypatch.setattr(pipeline, "CONV_PART", 4)
    pixels = torch.randint(
        0, 256, (10, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    batch = pipeline.DecodedBatch(list(range(10)), pixels, [(224, 224, 1)] * 10, [b""] * 10)
    loaded = load_model(resolve_weights(str(weights_file)))
    grids = layer_grids(("conv1", "conv3"), summarize(loaded).output_shapes)
    cpu = torch.device("cpu")
    [(out, failures)] = list(pipeline.run_batches(loaded, [batch], cpu, grids))
    assert failures == [] and out is not None

    weights = AlexNet_Weights.IMAGENET1K_V1.transforms()
    x = normalize(pixels.permute(0, 3, 1, 2).float() / 255, weights.mean, weights.std)
    kept = {}
    hooks = [
        model.features[i].register_forward_hook(lambda m, a, o, i=i: kept.update({i: o.clone()}))
        for i in (0, 6)  # conv1 and conv3, before their in-place ReLUs
    ]
    with torch.inference_mode(), CamRecorder(model) as cam:
        probs = torch.softmax(model(x), dim=1)
        top_probs, top = probs.topk(5, dim=1)
        cams, codes = cam.cams(top), cam.codes()
    for hook in hooks:
        hook.remove()
    np.testing.assert_array_equal(out.top_indices, top.numpy())
    np.testing.assert_allclose(out.top_probs, top_probs.numpy(), atol=1e-6)
    np.testing.assert_allclose(out.codes, codes.half().numpy(), rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(out.cams, cams.numpy(), rtol=1e-4, atol=1e-5 * cams.max().item())
    np.testing.assert_allclose(out.conv1_mean, kept[0].mean(dim=(2, 3)).numpy(), atol=1e-5)
    for name, maps in (("conv1", kept[0]), ("conv3", kept[6])):
        levels = pictures.activations(maps).levels
        expected = pictures.grey_grids(levels, grids[name]).astype(int)
        assert np.abs(out.grids[name].astype(int) - expected).max() <= 1, name
        extremes = torch.stack([maps.amin(dim=(1, 2, 3)), maps.amax(dim=(1, 2, 3))], dim=1)
        np.testing.assert_allclose(out.ranges[name], extremes.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.conv1_max, kept[0].amax(dim=(2, 3)).numpy(), atol=1e-5)


def test_conv1_grid_in_site_holds_64_maps_of_55x55_in_order(built_site, model, photos_dir):
    """Each tile of the site's (JPEG) grid matches its own conv1 map far better than any other."""
    data = json.loads((built_site / "predictions.json").read_text(encoding="utf-8"))
    entry = data["images"][0]
    page = (built_site / entry["page"]).read_text(encoding="utf-8")
    conv1_src = next(img["src"] for img in images(page) if "conv1 output maps" in img["alt"])
    grid = np.asarray(Image.open((built_site / entry["page"]).parent / conv1_src).convert("L"))
    assert grid.shape == (8 * 57 - 2, 8 * 57 - 2)

    expected = reference_maps(model, photos_dir / entry["source"]).reshape(64, -1)
    tiles = (
        np.stack(
            [grid[r * 57 : r * 57 + 55, c * 57 : c * 57 + 55] for r in range(8) for c in range(8)]
        )
        .reshape(64, -1)
        .astype(np.float64)
    )
    corr = np.corrcoef(tiles, expected)[:64, 64:]  # corr[i, j]: tile i against map j
    assert (corr.argmax(axis=1) == np.arange(64)).all()
    assert corr.diagonal().min() > 0.9  # JPEG at quality 75: 0.93-0.95 on these photos
    assert np.abs(tiles - expected).mean() < 6


def test_kernel_grid_is_each_kernel_normalised_and_enlarged(model):
    weight = model.features[0].weight.detach()
    grid = pictures.kernel_grid(weight)
    step = 11 * 8 + 2
    assert grid.shape == (8 * step - 2, 8 * step - 2, 3)
    k = 9  # row 1, column 1
    w = weight[k].permute(1, 2, 0).numpy()
    expected = np.rint((w - w.min()) / (w.max() - w.min()) * 255)
    tile = grid[step : step + 88 : 8, step : step + 88 : 8].astype(float)
    assert np.abs(tile - expected).max() <= 1


def _weights_error(path) -> str:
    with pytest.raises(WeightsError) as caught:
        load_model(resolve_weights(str(path)))
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message and "weights_only" not in message
    return message


SAVE_HINT = "save one with torch.save(model.state_dict(), PATH) and pass that file"


def test_a_file_that_is_no_checkpoint_says_so_without_torchs_advice(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    assert _weights_error(bad) == (
        f"weights file {str(bad)!r} is not a PyTorch checkpoint that torch.load can read; "
        f"pass AlexNet's state_dict ({SAVE_HINT})"
    )


def test_a_whole_pickled_model_says_to_save_its_state_dict(tmp_path):
    whole = tmp_path / "model.pth"
    torch.save(alexnet(weights=None), whole)
    assert _weights_error(whole) == (
        f"weights file {str(whole)!r} holds a whole pickled model "
        f"(torchvision.models.alexnet.AlexNet), not a state_dict; {SAVE_HINT}"
    )


def test_another_networks_state_dict_is_named_as_such(tmp_path):
    from torchvision.models import resnet18

    other = tmp_path / "resnet.pth"
    torch.save(resnet18(weights=None).state_dict(), other)
    assert _weights_error(other) == (
        f"weights file {str(other)!r} is a state_dict, but not AlexNet's (a ResNet's?): it lacks "
        "16 of AlexNet's 16 tensors (such as 'features.0.weight') and has 122 that AlexNet does "
        "not (such as 'conv1.weight'); pass the state_dict of torchvision's alexnet"
    )


def test_a_wrong_shape_is_named(tmp_path):
    state = alexnet(weights=None).state_dict()
    state["features.0.weight"] = torch.zeros(32, 3, 11, 11)
    bad = tmp_path / "narrow.pth"
    torch.save(state, bad)
    assert _weights_error(bad) == (
        f"weights file {str(bad)!r} does not fit AlexNet: features.0.weight has shape "
        "(32, 3, 11, 11) where AlexNet's is (64, 3, 11, 11)"
    )


def test_not_a_dict_of_tensors_is_named(tmp_path):
    bad = tmp_path / "list.pth"
    torch.save([1, 2, 3], bad)
    assert (
        _weights_error(bad)
        == f"weights file {str(bad)!r} holds a list, not a state_dict; {SAVE_HINT}"
    )


def test_a_checkpoint_with_the_state_dict_inside_loads(tmp_path):
    state = alexnet(weights=None).state_dict()
    for key in ("state_dict", "model"):
        path = tmp_path / f"{key}.pth"
        torch.save({key: state, "epoch": 3}, path)
        loaded = load_model(resolve_weights(str(path)))
        assert torch.equal(loaded.model.features[0].weight, state["features.0.weight"])
