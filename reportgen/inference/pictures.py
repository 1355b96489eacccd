"""Turning tensors into pictures: whole batches at a time, with tensor ops, no matplotlib.

The functions here take tensors and return ``uint8`` arrays; the encoders use fixed settings and
write no metadata, so the same input always gives the same bytes. Photos' crops and conv1 grids
are JPEG (a conv1 grid: 0.7 ms and 52 KB, against 14 ms and 140 KB as PNG, 27 ms and 51 KB as
WebP, 104 ms and 45 KB as AVIF; see ``benchmarks/bench_pictures.py``);
the kernels, drawn once, are lossless PNG.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..layout import KERNEL_SCALE, Grid
from ..layout import kernel_grid as kernel_layout

GAP_VALUE = 255
GRID_QUALITY = 75
"""JPEG quality of the layer grids: 52 KB a conv1 grid against 69 KB at 85, its mean error 4.8 grey
levels against 3.4 (``benchmarks/bench_pictures.py``), so the site stays within 70 KB a photo."""
CROP_QUALITY = 75
"""JPEG quality of the 224x224 crops (7.4 KB against 9.8 KB at 85; mean error 2.5 grey levels
against 2.0)."""


def normalize_each(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to 0..1 on its own (min-max over everything after the first two axes).

    ``maps`` is (B, N, ...); each of the B*N maps is normalised independently. A constant map
    becomes all zeros rather than dividing by zero.
    """
    return _scaled_each(maps, 1.0)


def _scaled_each(maps: torch.Tensor, top: float) -> torch.Tensor:
    """Each map min-max scaled to 0..``top``, as a new float tensor of the same shape."""
    return _scaled(maps.float(), top, *_map_extremes(maps.float()))


def _map_extremes(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each map's minimum and maximum, shaped to broadcast against ``maps`` (B, N, 1, …)."""
    dims = tuple(range(2, maps.ndim))
    return maps.amin(dim=dims, keepdim=True), maps.amax(dim=dims, keepdim=True)


def _scaled(maps: torch.Tensor, top: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    low, scale = _onto(top, low, high, normalize="map")
    return (maps - low).mul_(scale)


def _onto(
    top: float, low: torch.Tensor, high: torch.Tensor, *, normalize: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The start and the factor that take each map's [low, high] onto [0, top] (with
    ``normalize`` 'layer': each item's, from the lowest of its maps to the highest); a constant
    map gets factor 0."""
    if normalize == "layer":
        dims = tuple(range(1, low.ndim))
        low, high = low.amin(dim=dims, keepdim=True), high.amax(dim=dims, keepdim=True)
    span = high - low
    return low, torch.where(span > 0, top / span, torch.zeros_like(span))


@dataclass
class Activations:
    """What the build keeps of a layer's output: grey levels and each map's extremes."""

    levels: torch.Tensor
    """(B, N, H, W) uint8."""
    low: torch.Tensor
    """(B, N) each map's minimum."""
    high: torch.Tensor
    """(B, N) each map's maximum."""

    @property
    def layer_range(self) -> torch.Tensor:
        """(B, 2) each item's lowest and highest activation over the whole layer."""
        return torch.stack([self.low.amin(dim=1), self.high.amax(dim=1)], dim=1)


LEVELS_CHUNK = 8
"""Photos whose maps are levelled at once on the CPU. The multiply-add's float result for a chunk
(8 photos' conv1 maps: 6 MB) stays in the processor's cache, where a whole batch's (64 photos:
50 MB) went out to memory and back: measured here, conv1's levels took 0.31 instead of 0.69 ms a
photo on one core (0.22 against 0.48 on two), and a batch of 64 rose 150 MB above where it began
instead of 175 (``benchmarks/bench_parts.py`` times it in the build)."""


def activations(maps: torch.Tensor, *, normalize: str = "map") -> Activations:
    """(B, N, H, W) activations to ``uint8`` levels, each map scaled from its min to its max
    (``normalize`` 'layer': all N maps of a photo scaled together, from the layer's min to its
    max, as ``--normalize layer`` asks), and the
    extremes found on the way (no extra pass).

    Cheap enough to run inside the forward hook, before AlexNet's in-place ReLU overwrites the
    activations: no float copy of the batch is ever kept. On the CPU it goes
    :data:`LEVELS_CHUNK` photos at a time (each photo's levels depend on its own maps alone).

    The levels are ``(x - low) * 255 / span`` rounded half up, computed as one multiply-add
    (``x * scale + (0.5 - low * scale)``) and a truncating cast: two passes over the batch where
    subtracting, scaling, rounding and casting took four (0.48 -> 0.40 ms per photo for conv1).
    A level can differ by one from the four-step result where rounding ties.
    """
    maps = maps.float()
    # In the maps' own memory format (channels-last from the model), as the cast would give.
    levels = torch.empty_like(maps, dtype=torch.uint8)
    low = torch.empty(maps.shape[:2], device=maps.device)
    high = torch.empty_like(low)
    chunk = LEVELS_CHUNK if maps.device.type == "cpu" else max(1, len(maps))
    for begin in range(0, len(maps), chunk):
        part = maps[begin : begin + chunk]
        part_low, part_high = _map_extremes(part)
        start, scale = _onto(255.0, part_low, part_high, normalize=normalize)
        # In [0, 255.5] up to float rounding, so the cast needs no clamp.
        levels[begin : begin + chunk] = torch.addcmul(0.5 - start * scale, part, scale)
        low[begin : begin + chunk] = part_low.flatten(1)
        high[begin : begin + chunk] = part_high.flatten(1)
    return Activations(levels, low, high)


def to_uint8(unit: torch.Tensor) -> torch.Tensor:
    """0..1 floats to 0..255 bytes, rounded."""
    return (unit.clamp(0, 1) * 255).round().to(torch.uint8)


def tile(images: torch.Tensor, grid: Grid, fill: int = GAP_VALUE) -> torch.Tensor:
    """Lay out (B, N, C, H, W) tiles as B pictures of ``grid``, separated by ``fill``.

    Returns (B, C, height, width) of ``grid.size``, the same dtype.
    """
    b, n, c, h, w = images.shape
    step_x, step_y = grid.step
    padded = torch.full(
        (b, grid.rows * grid.columns, c, step_y, step_x),
        fill,
        dtype=images.dtype,
        device=images.device,
    )
    padded[:, :n, :, :h, :w] = images
    picture = padded.view(b, grid.rows, grid.columns, c, step_y, step_x).permute(0, 3, 1, 4, 2, 5)
    picture = picture.reshape(b, c, grid.rows * step_y, grid.columns * step_x)
    width, height = grid.size
    return picture[:, :, :height, :width]


def grey_grids(levels: torch.Tensor, grid: Grid) -> np.ndarray:
    """(B, N, H, W) ``uint8`` maps to B grey pictures of ``grid``, as a NumPy array."""
    return tile(levels.unsqueeze(2), grid)[:, 0].cpu().numpy()


def kernel_grid(kernels: torch.Tensor) -> np.ndarray:
    """(64, 3, 11, 11) weights to one RGB grid, each kernel normalised on its own and enlarged.

    Nearest-neighbour enlargement keeps every weight a crisp square.
    """
    unit = normalize_each(kernels.unsqueeze(0))[0]  # (64, 3, 11, 11), per-kernel min-max
    big = unit.repeat_interleave(KERNEL_SCALE, dim=2).repeat_interleave(KERNEL_SCALE, dim=3)
    grid = tile(to_uint8(big).unsqueeze(0), kernel_layout(tuple(kernels.shape)))[0]  # (3, Hg, Wg)
    return grid.permute(1, 2, 0).cpu().numpy()


def encode_jpeg(array: np.ndarray, quality: int) -> bytes:
    """A uint8 picture as JPEG bytes (no metadata)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@functools.cache
def _heat_palette() -> np.ndarray:
    """A 'hot' colour map as a 256x3 uint8 table: black through red and yellow to white, as three
    clipped ramps (r = 8x/3, g = 8x/3 - 1, b = 4x - 3; matplotlib's 'hot' to within 11 levels).
    Each entry is distinct, so a map can be read back from its colours. Computed here rather than
    taken from matplotlib so that inference never imports it (0.3 s)."""
    x = np.linspace(0.0, 1.0, 256)
    ramps = np.stack([8 * x / 3, 8 * x / 3 - 1, 4 * x - 3], axis=1)
    return np.rint(np.clip(ramps, 0.0, 1.0) * 255).astype(np.uint8)


def heat_pngs(cams: np.ndarray) -> list[bytes]:
    """Small Grad-CAM maps, (..., H, W), as coloured PNGs in row-major order, each scaled by its
    own maximum (0 stays black).

    They stay at their own resolution (13x13): the page stretches each over the crop and the
    browser's smooth scaling does the upsampling, so a map costs a few hundred bytes.
    """
    maps = cams.reshape(-1, *cams.shape[-2:]).astype(np.float64)
    peaks = maps.max(axis=(1, 2), keepdims=True)
    scale = np.divide(255.0, peaks, out=np.zeros_like(peaks), where=peaks > 0)
    levels = np.rint(maps * scale).astype(np.uint8)
    return [_small_png(rgb) for rgb in _heat_palette()[levels]]


def _small_png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 picture as a PNG, written directly: for pictures of a few hundred
    pixels, Pillow's general encoder costs 75 us a picture, this 30 us."""
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # each row: filter type 0, pixels
    rows[:, 1:] = rgb.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 picture as PNG bytes (lossless, no metadata)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
