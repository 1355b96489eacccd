"""Build options, declared once.

Each option is a field of :class:`Config` with its default and its help text. The YAML file and the
command line both feed the same fields; :func:`load_config` merges them (command line wins) and
reports *every* bad value at once before any model work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .files import not_text
from .layout import CONV_LAYERS

DEFAULT_CONFIG_FILE = "reportgen.yaml"
DEVICES = ("auto", "cpu", "cuda", "mps")

# Chosen by measurement on 2 cores (photos/s at batch 16: 84, 32: 89, 64: 94, 128: 91); on the CPU
# the model wants the cores, and one worker keeps decoding off its critical path. Phone photos
# turn that around: decoding sets the pace, and a second worker made a build of 120 12 MP photos
# 16% faster (12.7 -> 10.6 s; batch 32 or 64 alike).
CPU_BATCH_SIZE = 64
CPU_WORKERS = 1
CPU_WORKERS_LARGE = 2
LARGE_PHOTO_BYTES = 1 << 20
"""Photos whose median file is at least this large are 'large' for the worker count."""
GPU_BATCH_SIZE = 128
MAX_GPU_WORKERS = 8
MAX_ENCODERS = 4
"""On a GPU machine, processes that encode the pictures beside the model, at most."""


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system tells it)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def _option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    default_text: str | None = None,
    repeated: bool = False,
) -> Any:
    """A config field with the metadata the CLI builds its flags from.

    ``default_text`` is how ``--help`` shows the default; without it, the default's value.
    ``repeated``: the flag may be given several times, each adding one value (a YAML list).
    """
    meta = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "default_text": default_text,
        "repeated": repeated,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """Everything one build needs to know. Paths are resolved against the current folder."""

    input_dir: Path | None = _option(
        None, "folder of photos to report on (searched recursively)", metavar="INPUT_DIR"
    )
    out_dir: Path = _option(
        Path("site"), "folder the static site is written to", flag="--out", metavar="OUT_DIR"
    )
    weights: str = _option(
        "pretrained",
        "'pretrained' (torchvision's ImageNet AlexNet, cached under TORCH_HOME), a path to a "
        "local state_dict .pth, or 'random' (seeded, untrained: a dry run whose predictions mean "
        "nothing)",
        flag="--weights",
        metavar="WEIGHTS",
    )
    labels: Path | None = _option(
        None,
        "class names for the weights' head, UTF-8, one a line in output order: needed for a "
        "fine-tuned AlexNet whose last layer has K != 1000 outputs (K lines); with ImageNet's "
        "1000, names in another language, each shown beside its English name",
        flag="--labels",
        metavar="FILE",
        default_text="ImageNet's classes",
    )
    device: str = _option(
        "auto", "where the model runs: auto (GPU when present), cpu, cuda or mps", flag="--device"
    )
    batch_size: int | None = _option(
        None,
        "photos per forward pass",
        flag="--batch-size",
        metavar="N",
        default_text=f"{CPU_BATCH_SIZE} on CPU, {GPU_BATCH_SIZE} on GPU",
    )
    workers: int | None = _option(
        None,
        "DataLoader worker processes that decode photos (0 decodes in the main process; never more"
        " than there are batches)",
        flag="--workers",
        metavar="N",
        default_text=f"on CPU {CPU_WORKERS}, or {CPU_WORKERS_LARGE} for photos of a MB or more;"
        f" up to {MAX_GPU_WORKERS} on GPU",
    )
    exclude: tuple[str, ...] = _option(
        (),
        "leave out the files and folders whose name matches PATTERN, a glob in any case "
        "('Screenshots', '*.png'), or whose path in INPUT_DIR does, for a pattern with a / "
        "('2019/drafts'); give it once for each pattern (YAML: a list)",
        flag="--exclude",
        metavar="PATTERN",
        default_text="none",
        repeated=True,
    )
    max_pixels: int | None = _option(
        None,
        "refuse images with more pixels than this (decompression-bomb guard)",
        flag="--max-pixels",
        metavar="N",
        default_text="Pillow's limit",
    )
    layers: tuple[str, ...] = _option(
        ("conv1",),
        "convolutions to draw for each photo, comma-separated, from conv1..conv5 (conv1 is always "
        "drawn)",
        flag="--layers",
        metavar="LIST",
    )
    normalize: str = _option(
        "map",
        "how activation maps are scaled to grey: 'map' (each map from its own min to max, as the "
        "classic AlexNet visualisations draw them) or 'layer' (all maps of a layer share one "
        "range, so their strengths compare)",
        flag="--normalize",
        metavar="MODE",
    )
    decode: str = _option(
        "fast",
        "how large JPEGs are decoded: 'fast' (at a reduced DCT scale that keeps 4x the pixels "
        "the model needs: the model's input stays within 2 grey levels of a full decode) or "
        "'exact' (every pixel, as torchvision's own transforms on a PIL image)",
        flag="--decode",
        metavar="MODE",
    )
    per_page: int = _option(
        120,
        "photos per index page (as the folder grows, a page keeps its photos and may hold up to"
        " twice as many before the pages are cut anew)",
        flag="--per-page",
        metavar="N",
    )
    engine: str = _option(
        "local",
        "where the model stage runs: 'local' (this machine's DataLoader workers) or 'ray' (a Ray "
        "cluster, through Ray Data: pip install 'reportgen[ray]'; the photos must be at the "
        "same path on every node)",
        flag="--engine",
        metavar="ENGINE",
    )
    ray_address: str | None = _option(
        None,
        "the Ray cluster for --engine ray (host:port, or ray://host:port)",
        flag="--ray-address",
        metavar="ADDR",
        default_text="$RAY_ADDRESS, else a local Ray started for the build",
    )
    lean: bool = _option(
        False,
        "a lighter site for large folders (about a fifth smaller a photo): pages show the "
        "Grad-CAM of the top-1 class only, and no layer beyond conv1 (not with --layers)",
        flag="--lean",
    )
    cache: Path | None = _option(
        None,
        "folder of the incremental cache; keep it between runs, e.g. in CI, to redo only new "
        "photos",
        flag="--cache",
        metavar="DIR",
        default_text="~/.cache/reportgen/sites/OUT-HASH/cache",
    )
    full: bool = _option(
        False,
        "ignore what earlier builds recorded: read and hash every file, and run the model over "
        "every photo",
        flag="--full",
    )
    allow_truncated: bool = _option(
        False,
        "use what can be decoded of truncated images instead of skipping them",
        flag="--allow-truncated",
    )
    strict: bool = _option(False, "exit with status 1 when any file was skipped", flag="--strict")
    force: bool = _option(
        False,
        "build into a non-empty folder that is not a reportgen site, replacing same-named files "
        "(other files are never touched)",
        flag="--force",
    )
    wait: bool = _option(
        False,
        "when another build is writing to OUT_DIR, wait for it to finish instead of stopping",
        flag="--wait",
    )
    quiet: bool = _option(
        False,
        "no progress bars and no summary line (skipped files are still reported)",
        flag="--quiet",
    )


# --- parsing and validation ---------------------------------------------------------------------

Parser = Callable[[Any], Any]


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return _text_path(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a folder path")
    return _text_path(Path(os.path.expanduser(value)))


def _text_path(path: Path) -> Path:
    """``path``, if it is UTF-8 text where it leads (:func:`files.not_text`)."""
    if (shown := not_text(str(path.absolute()))) is not None:
        raise ValueError(f"'{shown}' is not UTF-8 text: rename it")
    return path


def _optional_file(value: Any) -> Path | None:
    if value is None:
        return None
    path = _path(value)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file")
    return path


def _optional_path(value: Any) -> Path | None:
    return None if value is None else _path(value)


def _positive_int(value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"must be an integer (got {value!r})") from None
    if not isinstance(value, int):
        raise ValueError(f"must be an integer (got {value!r})")
    if value < minimum:
        raise ValueError(f"must be at least {minimum} (got {value})")
    return value


def _optional_int(minimum: int) -> Parser:
    def parse(value: Any) -> int | None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        return _positive_int(value, minimum=minimum)

    return parse


def _choice(choices: tuple[str, ...]) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    return parse


WEIGHT_NAMES = ("pretrained", "random")


def _weights(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be 'pretrained', 'random' or a path to a .pth file")
    if value in WEIGHT_NAMES:
        return value
    if (path := Path(value).expanduser()).exists():
        _text_path(path)
        return value
    # A missing path is the weights' own error (exit 1, when they are resolved); a word that is
    # almost one of the names is a typo, said now.
    close = _close(value, WEIGHT_NAMES)
    if close and "/" not in value and not Path(value).suffix:
        raise ValueError(
            f"{value!r} is neither 'pretrained', 'random' nor an existing file; "
            f"did you mean {close!r}?"
        )
    return value


def _patterns(value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, str) and v.strip("/ ") for v in values
    ):
        raise ValueError("must be a pattern such as '*.png', or a list of them")
    return tuple(v.strip().rstrip("/") for v in values)


def _close(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` was most likely meant to be, if any is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return found[0] if found else None


def _layers(value: Any) -> tuple[str, ...]:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError("must be a comma-separated list such as conv1,conv3")
    wanted = {n.strip().lower() for n in names if n.strip()}
    unknown = sorted(wanted - set(CONV_LAYERS))
    if unknown:
        raise ValueError(
            f"unknown layer(s) {', '.join(unknown)}; choose from {', '.join(CONV_LAYERS)}"
        )
    return tuple(name for name in CONV_LAYERS if name in wanted | {"conv1"})


def _text(value: Any, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be {example}")
    return value.strip()


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be true or false (got {value!r})")


PARSERS: dict[str, Parser] = {
    "input_dir": _optional_path,
    "out_dir": _path,
    "weights": _weights,
    "labels": _optional_file,
    "device": _choice(DEVICES),
    "batch_size": _optional_int(1),
    "workers": _optional_int(0),
    "exclude": _patterns,
    "max_pixels": _optional_int(1),
    "layers": _layers,
    "normalize": _choice(("map", "layer")),
    "decode": _choice(("fast", "exact")),
    "per_page": lambda v: _positive_int(v, minimum=1),
    "lean": _bool,
    "engine": _choice(("local", "ray")),
    "ray_address": lambda v: _text(v, "an address such as 10.0.0.1:6379"),
    "cache": _optional_path,
    "full": _bool,
    "allow_truncated": _bool,
    "strict": _bool,
    "force": _bool,
    "wait": _bool,
    "quiet": _bool,
}

# YAML may spell a key as the flag does (batch-size) or as the field does (batch_size); these
# short names match the CLI's --out and the positional INPUT_DIR.
ALIASES = {"input": "input_dir", "out": "out_dir"}


def field_names() -> list[str]:
    """The option names, in declaration order."""
    return [f.name for f in dataclasses.fields(Config)]


def _normalise_key(key: Any) -> str:
    name = str(key).replace("-", "_")
    return ALIASES.get(name, name)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping of raw option values.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {str(path)!r}: cannot be read ({exc.strerror})"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {str(path)!r}: {_yaml_problem(exc)}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError([f"config file {str(path)!r}: must be a mapping of option: value"])
    return dict(data)


def default_config_file() -> Path | None:
    """``reportgen.yaml`` in the current folder, if there is one."""
    path = Path(DEFAULT_CONFIG_FILE)
    return path if path.is_file() else None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where a YAML file went wrong, and how, in one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return f"not valid YAML ({problem})"
    return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1} ({problem})"


def load_config(cli: Mapping[str, Any], config_file: Path | None = None) -> Config:
    """Merge the YAML file and command-line values into a validated :class:`Config`.

    Args:
        cli: values given on the command line (or to the API), keyed by field name; ``None``
            means "not given".
        config_file: a YAML file of options; it must exist.

    Raises:
        ConfigError: naming every unknown key and every bad value.
    """
    source = config_file
    file_values = read_config_file(source) if source is not None else {}

    problems: list[str] = []
    names = set(field_names())
    merged: dict[str, Any] = {}
    for key, value in file_values.items():
        name = _normalise_key(key)
        if name not in names:
            close = _close(name, names)
            hint = f" (did you mean {close.replace('_', '-')!r}?)" if close else ""
            problems.append(f"unknown key {str(key)!r} in {str(source)!r}{hint}")
            continue
        merged[name] = value
    for name, value in cli.items():
        if name not in names:
            close = _close(name, names)
            problems.append(
                f"unknown option {name!r}" + (f" (did you mean {close!r}?)" if close else "")
            )
        elif value is not None:
            merged[name] = value

    # The default output folder is checked as a given one is: it lies in the current folder.
    merged.setdefault("out_dir", Config.out_dir)
    values: dict[str, Any] = {}
    for name, value in merged.items():
        try:
            values[name] = PARSERS[name](value)
        except ValueError as exc:
            problems.append(f"{name.replace('_', '-')}: {exc}")
    if values.get("lean") and len(values.get("layers", ())) > 1:
        problems.append("lean: a lean site draws conv1 only; leave out --layers, or --lean")
    if problems:
        raise ConfigError(problems)
    return Config(**values)
