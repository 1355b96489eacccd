"""The model's preprocessing, split where the bytes end and the floats begin.

torchvision's ``AlexNet_Weights.IMAGENET1K_V1.transforms()`` resizes a photo's short side to 256
(bilinear, antialiased), centre-crops 224x224, converts to floats in 0..1 and normalises with
ImageNet's mean and std. A build splits it in two:

- :func:`crop_for_model` (Pillow only) makes the 224x224 crop in the decoding workers. It needs
  neither torch nor torchvision, so the workers start decoding while the main process is still
  importing torchvision and loading the model, and the crop shown on each photo's page is these
  very bytes (no round trip through floats).
- :func:`reportgen.infer.model_inputs` converts and normalises whole batches, with the mean and
  std read from the weights' transforms.

The sizes and filter below are torchvision's; :func:`check_matches` compares them with the loaded
weights' transforms on every build, and ``tests/test_preprocess.py`` checks that the two halves give
exactly the tensor the torchvision transform gives.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from ..errors import BuildError
from .decode import SIDEWAYS

RESIZE_SIZE = 256
"""The short side after resizing."""
CROP_SIZE = 224
"""The side of the centre crop the model sees."""
RESAMPLE = Image.Resampling.BILINEAR


def resized_size(width: int, height: int) -> tuple[int, int]:
    """The size after resizing the short side to :data:`RESIZE_SIZE` (torchvision's rounding:
    the long side is truncated, not rounded)."""
    short, long = sorted((width, height))
    new_long = int(RESIZE_SIZE * long / short)
    return (RESIZE_SIZE, new_long) if width <= height else (new_long, RESIZE_SIZE)


def crop_for_model(image: Image.Image, turn: Image.Transpose | None = None) -> Image.Image:
    """The 224x224 RGB crop the model sees: short side resized to 256, then the centre.

    ``turn`` (a reduced JPEG's, see :func:`reportgen.decoding.decode.open_rgb`) is applied after
    resizing, which resizes to the size that is right once turned.
    """
    sideways = turn in SIDEWAYS
    width, height = (image.height, image.width) if sideways else image.size
    size = resized_size(width, height)
    stored = (size[1], size[0]) if sideways else size
    if stored != image.size:
        image = image.resize(stored, RESAMPLE)
    if turn is not None:
        image = image.transpose(turn)
    # Never smaller than the crop: the short side is now 256.
    top = int(round((image.height - CROP_SIZE) / 2.0))
    left = int(round((image.width - CROP_SIZE) / 2.0))
    return image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


def check_matches(transforms: Any) -> None:
    """Make sure the weights' own preprocessing is the one the workers applied.

    Raises:
        BuildError: torchvision's preset differs (a torchvision release changed it).
    """
    from torchvision.transforms import InterpolationMode

    expected = {
        "resize_size": [RESIZE_SIZE],
        "crop_size": [CROP_SIZE],
        "interpolation": InterpolationMode.BILINEAR,
        "antialias": True,
    }
    found = {name: getattr(transforms, name, None) for name in expected}
    if found != expected:
        raise BuildError(
            f"this torchvision's AlexNet preprocessing ({found}) is not the one reportgen"
            f" applies ({expected}); use torchvision 0.29, or update reportgen/preprocess.py"
        )
