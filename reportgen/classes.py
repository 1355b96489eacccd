"""The classes a model's head names: ImageNet's 1000, or a fine-tuned head's K from ``--labels``.

A fine-tuned AlexNet keeps torchvision's shape but for its last layer (``classifier.6``), which
has K outputs. Its class names come from a labels file (UTF-8, one name a line, K lines). With
ImageNet's own 1000 outputs a labels file gives the names in another language, and each class is
then shown as "name (English name)", so both read and either matches a folder's true classes.

Everything here is settled before any model work: a head without names, or names that do not
fit it, stop the build with exit status 2.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import UsageError
from .records import ModelEntry
from .weights import WeightsSpec

IMAGENET_CLASSES = 1000
HEAD = "classifier.6"
"""AlexNet's last layer in torchvision: its output count is the number of classes."""


def read_labels(path: Path) -> tuple[str, ...]:
    """The class names in a labels file, one a line (blank lines at the end are ignored).

    Raises:
        UsageError: the file cannot be read, is not UTF-8, or has a blank or repeated name.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UsageError(f"labels file {str(path)!r} cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"labels file {str(path)!r} is not UTF-8 text ({exc.reason})") from exc
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if not name:
            raise UsageError(f"labels file {str(path)!r}: line {number} is blank")
        if name in seen:
            raise UsageError(
                f"labels file {str(path)!r}: line {number} repeats {name!r} (line {seen[name]})"
            )
        seen[name] = number
    if not names:
        raise UsageError(f"labels file {str(path)!r} names no class")
    return tuple(names)


def labels_digest(path: Path | None) -> str | None:
    """A hash of the labels file's bytes: the names are stored in each cached record."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise UsageError(f"labels file {str(path)!r} cannot be read ({exc.strerror})") from exc


def classes(
    weights: WeightsSpec, labels: Path | None, described: ModelEntry | None
) -> tuple[str, ...] | None:
    """The names of the head's classes, in output order; None for ImageNet's own (torchvision's
    names). ``described`` is the model's description from the cache, when it has one: then
    neither the weights nor torchvision are opened.

    Raises:
        UsageError: a head of K != 1000 outputs without ``labels``, or ``labels`` of another
            count than K (naming both numbers).
    """
    if described is not None:
        count = described.summary.output_shapes[HEAD][0]
    else:
        count = head_size(weights)
    if labels is None:
        if count != IMAGENET_CLASSES:
            raise UsageError(
                f"the weights' last layer ({HEAD}) has {count} outputs, not ImageNet's "
                f"{IMAGENET_CLASSES}: pass --labels FILE with the {count} class names, one a line"
            )
        return None
    names = read_labels(labels)
    if len(names) != count:
        raise UsageError(
            f"labels file {str(labels)!r} has {len(names)} class names, but the weights' last "
            f"layer ({HEAD}) has {count} outputs"
        )
    if described is not None:
        return described.categories
    if count == IMAGENET_CLASSES:
        english = imagenet_classes()
        return tuple(n if n == e else f"{n} ({e})" for n, e in zip(names, english, strict=True))
    return names


def imagenet_classes() -> tuple[str, ...]:
    """torchvision's names of ImageNet-1k's classes."""
    from torchvision.models import AlexNet_Weights

    return tuple(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def head_size(weights: WeightsSpec) -> int:
    """How many outputs the weights' last layer has (read without building the model)."""
    if weights.path is None:
        return IMAGENET_CLASSES
    from .inference.model import read_head_size

    return read_head_size(weights.path)
