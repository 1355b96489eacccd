"""The code's shape: one per-photo record stored generically, torch only where it belongs, short
functions, single sources of truth, and the Python API."""

from __future__ import annotations

import ast
import dataclasses
import json
import pkgutil
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import reportgen
from reportgen import serial
from reportgen.cache import CODE_SIZE, ENTRY_FORMAT, ResultCache
from reportgen.errors import ConfigError
from reportgen.files import write_atomic
from reportgen.records import (
    LayerInfo,
    LayerRange,
    ModelEntry,
    ModelSummary,
    PhotoRecord,
    Prediction,
    stored_fields,
)

from .conftest import REPO

MAX_FUNCTION_LINES = 60


HEAT_MAPS = ("data:image/png;base64,AAAA", "data:image/png;base64,BBBB")
"""The Grad-CAM heat maps of :func:`full_record`'s two classes."""


def full_record() -> PhotoRecord:
    """A record whose every field differs from its default and from an empty value."""
    return PhotoRecord(
        width=4032,
        height=3024,
        frames=2,
        top5=(Prediction(281, "tabby", 0.5), Prediction(285, "Egyptian cat", 0.25)),
        conv1_mean=(0.125, -1.5),
        conv1_max=(3.0, 2.968460),
        ranges=(LayerRange("conv1", -2.5, 3.0), LayerRange("conv3", 0.0, 7.25)),
        source="cats/tabby «1».jpg",
        file_size=12345,
        key="ab" * 32,
        truth="tabby",
    )


def test_every_field_of_the_photo_record_survives_the_cache(tmp_path):
    record = full_record()
    for f in dataclasses.fields(PhotoRecord):
        assert getattr(record, f.name) not in (None, 0, "", ()), f"{f.name} is not exercised"
    cache = ResultCache(tmp_path, "f" * 64, kinds=())
    write_atomic(Path(cache.code_name("k" * 64)), bytes(2 * CODE_SIZE))  # kept beside the record
    cache.store("k" * 64, record, HEAT_MAPS)
    loaded = cache.load("k" * 64)
    # What the cache keeps is what the model made of the bytes; the rest is the folder's.
    local = {f.name for f in dataclasses.fields(PhotoRecord)} - {
        f.name for f in stored_fields(PhotoRecord)
    }
    assert local == {"source", "file_size", "key", "truth"}
    assert loaded == dataclasses.replace(record, source="", file_size=0, key="", truth=None)
    stored = json.loads((tmp_path / "results" / "kk" / f"{'k' * 64}.json").read_text())
    assert stored["format"] == ENTRY_FORMAT
    # The heat maps beside the record's fields, where they were a field of the record until
    # format 6's entries were written: the entries are the same, and none is computed again.
    assert set(stored["record"]) == {f.name for f in stored_fields(PhotoRecord)} | {"cams"}
    assert stored["record"]["cams"] == list(HEAT_MAPS)
    assert cache.heat_maps("k" * 64) == HEAT_MAPS
    assert list(loaded.conv1_max) == [3.0, 2.968460]  # float64 vectors are kept exactly


def test_the_model_entry_round_trips():
    entry = ModelEntry(
        summary=ModelSummary(
            arch="alexnet",
            weights="mine.pth",
            sha256="0" * 64,
            untrained=False,
            layers=(LayerInfo("features.0", "Conv2d", (64, 55, 55), 23296),),
            kernel_shape=(64, 3, 11, 11),
            conv1_output_shape=(64, 55, 55),
            input_shape=(3, 224, 224),
            warnings=("a warning",),
        ),
        categories=("tench", "goldfish"),
    )
    assert serial.load(ModelEntry, json.loads(json.dumps(serial.dump(entry)))) == entry


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("width"),
        lambda d: d.update(extra=1),
        lambda d: d.update(width="12"),
        lambda d: d.update(width=True),
        lambda d: d.update(top5=[[1, "x"]]),
        lambda d: d.update(top5=[{"index": 1, "label": "x", "probability": 0.5}]),
        lambda d: d.update(ranges=[["conv1", 0.0, None]]),
        lambda d: d.update(cams="data:"),
        lambda d: d.pop("cams"),
        lambda d: d.update(cams=["data:image/png;base64,AAAA"]),  # two classes, one map
        lambda d: d.update(cams=["data:image/png;base64,AAAA", 7]),
        lambda d: d.update(cams=["data:image/png;base64,AAAA", "javascript:alert(1)"]),
        lambda d: d.update(conv1_max="not base64!"),
        lambda d: d.update(conv1_max="AAAA"),  # 3 bytes: not whole float64 numbers
        lambda d: d.update(conv1_max=[3.0, 2.96846]),  # as format 5 stored them
    ],
)
def test_a_damaged_or_stale_entry_is_recomputed_not_half_used(tmp_path, change):
    cache = ResultCache(tmp_path, "f" * 64, kinds=())
    cache.store("k" * 64, full_record(), HEAT_MAPS)
    path = tmp_path / "results" / "kk" / f"{'k' * 64}.json"
    data = json.loads(path.read_text())
    change(data["record"])
    path.write_text(json.dumps(data))
    assert cache.load("k" * 64) is None


def test_an_entry_of_another_format_is_recomputed(tmp_path):
    cache = ResultCache(tmp_path, "f" * 64, kinds=())
    cache.store("k" * 64, full_record(), HEAT_MAPS)
    path = tmp_path / "results" / "kk" / f"{'k' * 64}.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format": ENTRY_FORMAT - 1}))
    assert cache.load("k" * 64) is None
    assert cache.heat_maps("k" * 64) is None


def test_the_cache_holds_each_label_once_in_slotted_predictions(tmp_path):
    """Five predictions a photo are held for the whole build: without an instance dict each, and
    sharing their label strings, which JSON makes anew for every entry."""
    cache = ResultCache(tmp_path, "f" * 64, kinds=())
    for key in ("a" * 64, "b" * 64):
        write_atomic(Path(cache.code_name(key)), bytes(2 * CODE_SIZE))
        cache.store(key, full_record(), HEAT_MAPS)
    first, second = cache.load("a" * 64), cache.load("b" * 64)
    local = dict(source="", file_size=0, key="", truth=None)  # the cache keeps none of these
    assert first == second == dataclasses.replace(full_record(), **local)
    for a, b in zip(first.top5 + first.ranges, second.top5 + second.ranges, strict=True):
        assert not hasattr(a, "__dict__")
        text = a.label if isinstance(a, Prediction) else a.layer
        assert text is (b.label if isinstance(b, Prediction) else b.layer)


@dataclasses.dataclass(frozen=True, slots=True)
class _Tag:
    names: tuple[str, ...]
    weight: float
    note: str = dataclasses.field(default="-", metadata={"stored": False})


@dataclasses.dataclass(frozen=True, slots=True)
class _Point:
    x: float
    name: str
    note: str = dataclasses.field(default="-", metadata={"stored": False})


@dataclasses.dataclass(frozen=True)
class _Tagged:
    tags: tuple[_Tag, ...]
    at: _Point


def test_slotted_records_round_trip():
    """Slotted records round-trip, rows of plain values or not; their local fields come back
    as their defaults."""
    tags = (_Tag(("a", "b"), 0.5, note="kept here only"), _Tag((), 2.0))
    record = _Tagged(tags=tags, at=_Point(1.5, "here", note="kept here only"))
    loaded = serial.load(_Tagged, json.loads(json.dumps(serial.dump(record))))
    assert loaded == _Tagged(tags=(_Tag(("a", "b"), 0.5), _Tag((), 2.0)), at=_Point(1.5, "here"))
    assert loaded.at.note == loaded.tags[0].note == "-"
    assert serial.load(_Tag, {"names": ["x"], "weight": 1}) == _Tag(("x",), 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.tags[0].weight = 1.0  # type: ignore[misc]


def test_every_stored_type_has_a_loader():
    """A new field of a type serial cannot check fails here, not in a user's build."""
    for cls in (PhotoRecord, ModelEntry):
        hints = typing.get_type_hints(cls)
        for f in stored_fields(cls):
            serial._loader(hints[f.name])


def _modules_outside_inference() -> list[str]:
    names = ["reportgen"]
    for info in pkgutil.walk_packages(reportgen.__path__, "reportgen."):
        if not info.name.startswith("reportgen.inference") and info.name != "reportgen.__main__":
            names.append(info.name)
    return sorted(names)


def test_only_the_inference_package_imports_torch():
    modules = _modules_outside_inference()
    assert {"reportgen.build", "reportgen.site.pages", "reportgen.decoding.decode"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(len(leaked))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "0", out.stderr


def test_no_function_in_the_package_is_longer_than_a_screen():
    long = []
    for path in sorted((REPO / "reportgen").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    assert not long


def test_the_weights_file_name_and_hub_path_are_torchvisions(monkeypatch, tmp_path):
    import torch.hub
    from torchvision.models import AlexNet_Weights

    from reportgen import weights

    assert AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1] == weights.OFFICIAL_FILENAME
    assert weights.OFFICIAL_FILENAME.split("-")[-1].startswith(weights.OFFICIAL_SHA256_PREFIX)
    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "x")}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert weights.hub_dir() == Path(torch.hub.get_dir())


def test_help_states_each_default_once(capsys):
    from reportgen.cli import main

    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.count("(default: 64 on CPU, 128 on GPU)") == 1
    assert not re.search(r"\(default: [^()]*\)\s*\(default:", text)


def test_build_site_is_the_command_lines_build(tmp_path, built_site, photos_dir, weights_file):
    result = reportgen.build_site(photos_dir, tmp_path / "site", weights=str(weights_file))
    assert isinstance(result, reportgen.BuildResult)
    assert len(result.photos) == 5 and result.out_dir == tmp_path / "site"

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and ".reportgen" not in p.parts
        }

    assert files(tmp_path / "site") == files(built_site)


def test_build_site_names_every_bad_option_before_any_work(tmp_path, photos_dir):
    with pytest.raises(ConfigError) as caught:
        reportgen.build_site(photos_dir, tmp_path / "site", batchsize=3, per_page=0)
    assert caught.value.problems == [
        "unknown option 'batchsize' (did you mean 'batch_size'?)",
        "per-page: must be at least 1 (got 0)",
    ]
    assert not (tmp_path / "site").exists()


def test_build_site_reads_a_config_file_and_its_own_options_win(tmp_path, photos_dir):
    config = tmp_path / "opts.yaml"
    config.write_text(f"weights: random\nper_page: 2\nout: {tmp_path / 'from-yaml'}\n")
    result = reportgen.build_site(photos_dir, config_file=config, per_page=3)
    assert result.out_dir == tmp_path / "from-yaml"
    assert (tmp_path / "from-yaml" / "index-2.html").is_file()
    assert not (tmp_path / "from-yaml" / "index-3.html").exists()
