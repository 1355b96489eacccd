"""How grid pictures are laid out, shared by the code that draws them and the pages that point
into them (which must not import torch)."""

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
    """Maps per row in a layer's grid: 8 for conv1, as the notes drew it; 16 for the wider ones."""
    return GRID_COLUMNS if layer == "conv1" else 2 * GRID_COLUMNS


def grid_size(count: int, tile_hw: tuple[int, ...], columns: int = GRID_COLUMNS) -> tuple[int, int]:
    """Width and height of a grid picture of ``count`` tiles of ``tile_hw``, ``columns`` per row."""
    rows = -(-count // columns)
    height, width = tile_hw
    return columns * (width + GRID_GAP) - GRID_GAP, rows * (height + GRID_GAP) - GRID_GAP
