"""Hostile and awkward input: every readable image reported, every other one explained."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reportgen.inference.pipeline
from reportgen.build import build
from reportgen.config import load_config

from .conftest import SAMPLE_PHOTOS, run_cli
from .test_site import assert_links_resolve

READABLE = {
    "cmyk.jpg": lambda p: Image.new("CMYK", (64, 48), (0, 200, 200, 0)).save(p),
    "grey16.png": lambda p: Image.fromarray(
        np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    ).save(p),
    "palette-transparent.png": lambda p: Image.new("P", (32, 32), 0).save(p, transparency=0),
    "la.png": lambda p: Image.new("LA", (32, 32), (90, 128)).save(p),
    "rgba.png": lambda p: Image.new("RGBA", (32, 32), (10, 20, 30, 100)).save(p),
    "one-bit.png": lambda p: Image.new("1", (33, 17), 1).save(p),
    "tiny-1x1.png": lambda p: Image.new("RGB", (1, 1), (255, 0, 0)).save(p),
    "strip-10000x40.png": lambda p: Image.new("RGB", (10000, 40), (0, 90, 0)).save(p),
    "animated.gif": lambda p: Image.new("RGB", (20, 20), "red").save(
        p, save_all=True, append_images=[Image.new("RGB", (20, 20), "blue")]
    ),
    "multipage.tiff": lambda p: Image.new("RGB", (20, 20), "red").save(
        p, save_all=True, append_images=[Image.new("RGB", (20, 20), "blue")] * 2
    ),
    "UPPER.JPEG": lambda p: Image.open(SAMPLE_PHOTOS[0]).save(p, format="JPEG"),
    "photo.webp": lambda p: Image.open(SAMPLE_PHOTOS[1]).save(p, format="WEBP"),
    "photo.bmp": lambda p: Image.open(SAMPLE_PHOTOS[2]).save(p, format="BMP"),
    'name with spaces & <tags> "quoted".png': lambda p: Image.new("RGB", (8, 8)).save(p),
    "ünïcødé 写真.jpg": lambda p: Image.new("RGB", (8, 8), "white").save(p),
    "a/same.jpg": lambda p: Image.new("RGB", (8, 8), "white").save(p),
    "b/same.jpg": lambda p: Image.new("RGB", (9, 9), "black").save(p),
}

UNREADABLE = {
    "zero.jpg": ("empty file", lambda p: p.write_bytes(b"")),
    "text.jpg": ("not an image Pillow can read", lambda p: p.write_text("hello")),
    "bad-header.png": (
        "not an image Pillow can read",
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40),
    ),
    "truncated.jpg": (
        "truncated image data",
        lambda p: p.write_bytes(SAMPLE_PHOTOS[0].read_bytes()[:5000]),
    ),
    "dangling.jpg": (
        "cannot be read (No such file or directory)",
        lambda p: p.symlink_to(p.parent / "nowhere.jpg"),
    ),
}


@pytest.fixture()
def hostile(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name, make in READABLE.items():
        (src / name).parent.mkdir(exist_ok=True)
        make(src / name)
    for name, (_, make) in UNREADABLE.items():
        make(src / name)
    rotated = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(src / "rotated.jpg", exif=exif)
    (src / ".hidden.jpg").write_bytes(SAMPLE_PHOTOS[0].read_bytes())
    (src / ".hidden-folder").mkdir()
    (src / ".hidden-folder" / "x.jpg").write_bytes(SAMPLE_PHOTOS[0].read_bytes())
    (src / "loop").mkdir()
    (src / "loop" / "back").symlink_to(src, target_is_directory=True)
    # What a NAS or Windows keeps beside the photos: thumbnails, deleted photos, snapshots.
    for copy in (
        "@eaDir/rotated.jpg/SYNOPHOTO_THUMB_XL.jpg",
        "#recycle/deleted.jpg",
        "$RECYCLE.BIN/S-1-5-21/$RDELETED.jpg",
        "loop/#Snapshot/rotated.jpg",
    ):
        (src / copy).parent.mkdir(parents=True, exist_ok=True)
        (src / copy).write_bytes(SAMPLE_PHOTOS[0].read_bytes())
    return src


def one_photo_folder(tmp_path: Path) -> Path:
    """An input folder holding a single small photo, a.png."""
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (30, 30)).save(src / "a.png")
    return src


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_every_readable_image_reported_every_other_explained(hostile, tmp_path, capsys):
    before = tree_digest(hostile)
    out = tmp_path / "site"
    assert (
        run_cli("build", str(hostile), "--out", str(out), "--weights", "random", "--workers", "0")
        == 0
    )
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    reported = sorted(e["source"] for e in data["images"])
    assert reported == sorted([*READABLE, "rotated.jpg"])
    assert {s["source"]: s["reason"] for s in data["skipped"]} == {
        name: reason for name, (reason, _) in UNREADABLE.items()
    }
    err = capsys.readouterr().err
    for name, (reason, _) in UNREADABLE.items():
        assert f"reportgen: skipped {name}: {reason}\n" in err
    assert tree_digest(hostile) == before, "the input folder was modified"
    assert_links_resolve(out)
    pages = {e["source"]: (out / e["page"]).read_text(encoding="utf-8") for e in data["images"]}
    assert "first of 2 frames used" in pages["animated.gif"]
    assert "first of 3 frames used" in pages["multipage.tiff"]
    assert "20×40 pixels" in pages["rotated.jpg"]
    assert "10000×40 pixels" in pages["strip-10000x40.png"]


def test_strict_fails_when_anything_was_skipped(hostile, tmp_path, capsys):
    code = run_cli(
        "build",
        str(hostile),
        "--out",
        str(tmp_path / "s"),
        "--weights",
        "random",
        "--workers",
        "0",
        "--strict",
    )
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"reportgen: error: {len(UNREADABLE)} file(s) skipped (--strict)"
    assert (tmp_path / "s" / "index.html").is_file()  # the site is still written


def test_allow_truncated_accepts_truncated_jpegs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "truncated.jpg").write_bytes(SAMPLE_PHOTOS[0].read_bytes()[:20000])
    config = load_config(
        {
            "input_dir": src,
            "out_dir": tmp_path / "s",
            "weights": "random",
            "workers": 0,
            "allow_truncated": True,
        },
    )
    result = build(config)
    assert [p.source for p in result.photos] == ["truncated.jpg"] and not result.skipped


def test_max_pixels_skips_large_images(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (300, 300)).save(src / "big.png")
    Image.new("RGB", (30, 30)).save(src / "small.png")
    assert (
        run_cli(
            "build",
            str(src),
            "--out",
            str(tmp_path / "s"),
            "--weights",
            "random",
            "--workers",
            "0",
            "--max-pixels",
            "10000",
        )
        == 0
    )
    assert (
        "reportgen: skipped big.png: too large: 300x300 pixels is over the limit of 10000\n"
        in capsys.readouterr().err
    )


def test_a_crashed_worker_fails_the_build_with_a_message(tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (30, 30), (i, 0, 0)).save(src / f"{i}.png")
    # Not black: a copy of 0.png would share its results, and the model would not read it.
    Image.new("RGB", (30, 30), (9, 9, 9)).save(src / "crash.png")
    real = reportgen.inference.pipeline.read_unchanged

    def crashing(path, stamp):
        if path.name == "crash.png":
            os.kill(os.getpid(), signal.SIGKILL)  # runs in the forked worker process
        return real(path, stamp)

    monkeypatch.setattr(reportgen.inference.pipeline, "read_unchanged", crashing)
    code = run_cli(
        "build",
        str(src),
        "--out",
        str(tmp_path / "s"),
        "--weights",
        "random",
        "--workers",
        "1",
        "--batch-size",
        "1",
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("reportgen: error: a photo-decoding worker process died (")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "s" / "index.html").exists()


def test_output_inside_input_is_not_read_as_photos(tmp_path):
    src = one_photo_folder(tmp_path)
    for _ in range(2):
        assert (
            run_cli(
                "build",
                str(src),
                "--out",
                str(src / "site"),
                "--weights",
                "random",
                "--workers",
                "0",
            )
            == 0
        )
    data = json.loads((src / "site" / "predictions.json").read_text(encoding="utf-8"))
    assert [e["source"] for e in data["images"]] == ["a.png"]


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    src = one_photo_folder(tmp_path)
    assert run_cli("build", str(src), "--out", str(src), "--weights", "random") == 2
    assert capsys.readouterr().err == (
        "reportgen: error: the output folder cannot be the input folder; choose another --out\n"
    )


def test_never_writes_through_a_symlink_out_of_the_site(tmp_path, capsys):
    src = one_photo_folder(tmp_path)
    out = tmp_path / "site"
    args = ("build", str(src), "--out", str(out), "--weights", "random", "--workers", "0")
    assert run_cli(*args) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for page in (out / "photos").iterdir():
        page.unlink()
    (out / "photos").rmdir()
    (out / "photos").symlink_to(elsewhere, target_is_directory=True)
    assert run_cli(*args) == 2
    assert "leads outside the output folder" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


def test_file_names_reach_the_terminal_and_the_pages_escaped(tmp_path, capsys):
    """A file's name may hold what a terminal acts on (escape sequences, a bell, a line break):
    the build's lines show each such character escaped, one line per message; and the pages,
    where HTML allows no such character, show it the same way."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad\x1b]0;pwned\x07.jpg").write_bytes(b"not a jpeg")
    (src / "two\nlines.jpg").write_bytes(b"nor this")
    shutil.copy(SAMPLE_PHOTOS[0], src / "ok\x1b[2J.jpg")
    out = tmp_path / "site"
    assert run_cli("build", str(src), "--out", str(out), "--weights", "random") == 0
    pages = {page.name: page.read_text(encoding="utf-8") for page in out.rglob("*.html")}
    forbidden = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
    assert not [name for name, html in pages.items() if forbidden.search(html)]
    assert "<code>bad\\x1b]0;pwned\\x07.jpg</code>" in pages["index.html"]
    (photo,) = (html for name, html in pages.items() if name.startswith("ok"))
    assert "<title>ok\\x1b[2J.jpg — " in photo
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert err.splitlines()[:2] == [
        "reportgen: skipped bad\\x1b]0;pwned\\x07.jpg: not an image Pillow can read",
        "reportgen: skipped two\\nlines.jpg: not an image Pillow can read",
    ]
    assert len(err.splitlines()) == 3

    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "clip.\x1b[31m").write_bytes(b"")
    assert run_cli("build", str(tmp_path / "none"), "--out", str(tmp_path / "s2")) == 1
    assert "(1 .\\x1b[31m)" in capsys.readouterr().err


def test_names_that_are_not_utf8_are_skipped_or_refused_with_a_reason(tmp_path, capsys):
    """Bytes that are not UTF-8 in a name (from an older system's code page) cannot go into a
    page or a record: such a photo is skipped, its name shown with those bytes escaped; such an
    input or output folder is refused before any work."""
    src = tmp_path / "in"
    (src / os.fsdecode(b"Caf\xe9")).mkdir(parents=True)
    shutil.copy(SAMPLE_PHOTOS[0], src / "ok.jpg")
    shutil.copy(SAMPLE_PHOTOS[1], src / os.fsdecode(b"Caf\xe9") / "x.jpg")
    shutil.copy(SAMPLE_PHOTOS[1], src / os.fsdecode(b"bad\xff.jpg"))
    out = tmp_path / "site"
    assert run_cli("build", str(src), "--out", str(out), "--weights", "random") == 0
    reason = "its name is not UTF-8: rename it to include it"
    assert capsys.readouterr().err.splitlines()[:2] == [
        f"reportgen: skipped Caf\\xe9/x.jpg: {reason}",
        f"reportgen: skipped bad\\xff.jpg: {reason}",
    ]
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert [img["source"] for img in data["images"]] == ["ok.jpg"]
    assert [s["source"] for s in data["skipped"]] == ["Caf\\xe9/x.jpg", "bad\\xff.jpg"]
    assert "bad\\xff.jpg" in (out / "index.html").read_text(encoding="utf-8")

    odd = tmp_path / os.fsdecode(b"in\xe9")
    odd.mkdir()
    shutil.copy(SAMPLE_PHOTOS[0], odd / "ok.jpg")
    assert run_cli("build", str(odd), "--out", str(tmp_path / os.fsdecode(b"s\xe9"))) == 2
    assert capsys.readouterr().err.splitlines() == [
        "reportgen: error: invalid configuration:",
        f"  - input-dir: '{tmp_path}/in\\xe9' is not UTF-8 text: rename it",
        f"  - out-dir: '{tmp_path}/s\\xe9' is not UTF-8 text: rename it",
    ]
