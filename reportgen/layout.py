"""How grid pictures are laid out, shared by the code that draws them and the pages that point
into them (which must not import torch)."""

GRID_COLUMNS = 8
"""Maps (or kernels) per row."""
GRID_GAP = 2
"""Pixels between neighbouring maps."""
KERNEL_SCALE = 8
"""Each conv1 kernel weight becomes a KERNEL_SCALE x KERNEL_SCALE square."""
