"""The build's split preprocessing gives torchvision's tensor bit for bit; its workers stop."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import AlexNet_Weights
from torchvision.transforms._presets import ImageClassification

from reportgen.decoding import preprocess
from reportgen.discover import discover
from reportgen.errors import BuildError
from reportgen.inference import pipeline as infer

from .conftest import SAMPLE_PHOTOS, run_cli

TRANSFORMS = AlexNet_Weights.IMAGENET1K_V1.transforms()
CPU = torch.device("cpu")


def split_pipeline(image: Image.Image) -> torch.Tensor:
    crop = np.array(preprocess.crop_for_model(image))
    return infer.model_inputs(torch.from_numpy(crop)[None], TRANSFORMS, CPU)[0]


def noise(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# Portrait, landscape, square, already 256 on the short side, smaller than the crop, odd sizes
# whose long side torchvision truncates, and a very long strip.
SIZES = [(640, 480), (480, 640), (300, 300), (256, 256), (256, 400), (100, 60), (257, 1001),
         (1001, 257), (224, 224), (333, 777), (2000, 31)]  # fmt: skip


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_split_preprocessing_is_torchvisions_bit_for_bit(width, height):
    image = noise(width, height, seed=width * height)
    expected = TRANSFORMS(image)
    got = split_pipeline(image)
    assert got.shape == expected.shape == (3, 224, 224)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("photo", SAMPLE_PHOTOS, ids=lambda p: p.name)
def test_sample_photos_preprocess_identically(photo):
    image = Image.open(photo).convert("RGB")
    assert torch.equal(split_pipeline(image), TRANSFORMS(image))


def test_model_inputs_are_channels_last():
    pixels = torch.zeros(2, 224, 224, 3, dtype=torch.uint8)
    x = infer.model_inputs(pixels, TRANSFORMS, CPU)
    assert x.shape == (2, 3, 224, 224)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_the_weights_preprocessing_is_checked():
    preprocess.check_matches(TRANSFORMS)
    with pytest.raises(BuildError, match="preprocessing"):
        preprocess.check_matches(ImageClassification(crop_size=224, resize_size=232))


def test_decoding_workers_stop_when_the_block_ends(photos_dir):
    sources, _ = discover(photos_dir)
    photos = infer.PhotoDataset(sources, max_pixels=None, allow_truncated=False)
    with infer.Decoding(photos, batch_size=2, workers=1) as decoding:
        assert multiprocessing.active_children()  # started before the first batch is asked for
        first = next(iter(decoding))
        assert first.pixels is not None and first.pixels.shape[1:] == (224, 224, 3)
    assert not multiprocessing.active_children()
    with pytest.raises(RuntimeError, match="shut down"):
        iter(decoding)


def test_decoding_workers_stop_when_the_model_cannot_be_loaded(tmp_path, photos_dir, capsys):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    code = run_cli("build", str(photos_dir), "--out", str(tmp_path / "site"), "--weights",
                   str(broken), "--workers", "1")  # fmt: skip
    assert code == 1
    assert "is not a PyTorch checkpoint that torch.load can read" in capsys.readouterr().err
    assert not multiprocessing.active_children()


def test_workers_read_ahead_about_read_ahead_photos_and_a_batch_each_at_least():
    assert infer.batches_ahead(64, 1) * 64 == infer.READ_AHEAD  # the CPU's default: 8 batches
    assert infer.batches_ahead(100, 2) == 3  # 600 photos: READ_AHEAD, rounded up to batches
    assert infer.batches_ahead(128, 8) == 1  # a GPU machine's: 1,024 photos, not 2,048
