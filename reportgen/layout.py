"""How grid pictures are laid out: the one place the code that draws them and the pages that point
into them (which must not import torch) both read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GRID_COLUMNS = 8
"""Maps (or kernels) per row."""
GRID_GAP = 2
"""Pixels between neighbouring maps."""
KERNEL_SCALE = 8
"""Each conv1 kernel weight becomes a KERNEL_SCALE x KERNEL_SCALE square."""

CONV_LAYERS = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
}
"""AlexNet's convolutions by name, and the module each one is (its output is before the ReLU)."""


def columns_for(layer: str) -> int:
    """Maps per row in a layer's grid: 8 for conv1, the classic AlexNet drawing; 16 for the wider
    ones."""
    return GRID_COLUMNS if layer == "conv1" else 2 * GRID_COLUMNS


@dataclass(frozen=True)
class Grid:
    """``count`` tiles of ``tile`` (height, width) pixels, ``columns`` per row, row-major, with
    :data:`GRID_GAP` pixels between neighbours: tile ``k`` starts at ``cell(k)``."""

    count: int
    tile: tuple[int, int]
    columns: int = GRID_COLUMNS

    @property
    def shape(self) -> tuple[int, int, int]:
        """(count, height, width) of the tiles."""
        return (self.count, *self.tile)

    @property
    def gap(self) -> int:
        return GRID_GAP

    @property
    def rows(self) -> int:
        return -(-self.count // self.columns)

    @property
    def step(self) -> tuple[int, int]:
        """How far apart neighbouring tiles start, across and down."""
        return self.tile[1] + GRID_GAP, self.tile[0] + GRID_GAP

    @property
    def size(self) -> tuple[int, int]:
        """Width and height of the whole picture."""
        return self.columns * self.step[0] - GRID_GAP, self.rows * self.step[1] - GRID_GAP

    def cell(self, k: int) -> tuple[int, int]:
        """Where tile ``k`` starts: x, y."""
        return (k % self.columns) * self.step[0], (k // self.columns) * self.step[1]


def layer_grid(layer: str, output_shape: tuple[int, ...]) -> Grid:
    """The grid a layer's maps are drawn in, from its (maps, height, width) output shape."""
    count, height, width = output_shape
    return Grid(count, (height, width), columns_for(layer))


def kernel_grid(kernel_shape: tuple[int, ...]) -> Grid:
    """The grid of conv1's kernels, from their (count, channels, height, width) shape."""
    count, _, height, width = kernel_shape
    return Grid(count, (height * KERNEL_SCALE, width * KERNEL_SCALE))


def layer_grids(layers: Iterable[str], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Grid]:
    """The grid of each of ``layers`` ('conv1', …), in order, from the output shapes of the
    model's modules (by module name, as in the model's summary)."""
    return {name: layer_grid(name, shapes[CONV_LAYERS[name]]) for name in layers}
