"""Statistics across the whole folder, from the photos' records (no torch, no pictures)."""

from __future__ import annotations

from collections.abc import Sequence

from .records import ImageRecord, KernelExample, KernelView

TOP_EXAMPLES = 8


def kernel_views(photos: Sequence[ImageRecord], count: int = 64) -> list[KernelView]:
    """For each conv1 kernel: its mean and maximum over the folder, and the photos firing it most.

    A photo fires a kernel by the maximum of that kernel's map on it (ties broken by name, so the
    choice is stable).
    """
    views = []
    usable = [p for p in photos if len(p.conv1_max) == count]
    for k in range(count):
        ranked = sorted(usable, key=lambda p: (-p.conv1_max[k], p.source))[:TOP_EXAMPLES]
        views.append(
            KernelView(
                index=k,
                mean=sum(p.conv1_mean[k] for p in usable) / len(usable) if usable else 0.0,
                max=max((p.conv1_max[k] for p in usable), default=0.0),
                top=tuple(KernelExample(p, p.conv1_max[k]) for p in ranked),
            )
        )
    return views
