"""What a user sees: messages and exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from reportgen import __version__

from .conftest import SAMPLE_PHOTOS, run_cli


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli("--version")
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"reportgen {__version__}"


def test_build_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        run_cli("build", "--help")
    out = capsys.readouterr().out
    for flag in (
        "--out",
        "--weights",
        "--device",
        "--batch-size",
        "--workers",
        "--config",
        "--quiet",
        "--force",
        "--max-pixels",
        "--per-page",
    ):
        assert flag in out


def test_bad_config_names_every_offending_key_before_any_model_work(tmp_path, capsys, monkeypatch):
    photos = tmp_path / "in"
    photos.mkdir()
    config = tmp_path / "reportgen.yaml"
    config.write_text("colour: red\nbatch_size: 0\nworkers: two\ndevice: tpu\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # picked up as ./reportgen.yaml, no --config needed
    code = run_cli("build", str(photos), "--out", str(tmp_path / "site"))
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "reportgen: error: invalid configuration:",
        "  - unknown key 'colour' in 'reportgen.yaml'",
        "  - batch-size: must be at least 1 (got 0)",
        "  - workers: must be an integer (got 'two')",
        "  - device: must be one of auto, cpu, cuda, mps (got 'tpu')",
    ]
    assert not (tmp_path / "site").exists()


def test_command_line_wins_over_config_file(tmp_path, photos_dir, weights_file):
    config = tmp_path / "opts.yaml"
    config.write_text(
        f"weights: {weights_file}\nper-page: 1\nworkers: 0\nout: {tmp_path / 'from-yaml'}\n",
        encoding="utf-8",
    )
    out = tmp_path / "site"
    assert (
        run_cli(
            "build", str(photos_dir), "--config", str(config), "--per-page", "2", "--out", str(out)
        )
        == 0
    )
    assert not (tmp_path / "from-yaml").exists()
    assert sorted(p.name for p in out.glob("index*.html")) == [
        "index-2.html",
        "index-3.html",
        "index.html",
    ]


def test_missing_config_file(tmp_path, capsys):
    code = run_cli("build", str(tmp_path), "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "reportgen: error: invalid configuration:",
        f"  - config file '{tmp_path / 'nope.yaml'}': cannot be read (No such file or directory)",
    ]


def test_missing_input_folder(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert run_cli("build", str(missing), "--out", str(tmp_path / "site")) == 2
    assert capsys.readouterr().err == f"reportgen: error: input folder '{missing}' does not exist\n"


def test_folder_without_images_says_what_it_holds_instead(tmp_path, capsys):
    empty = tmp_path / "in"
    (empty / "raw" / ".thumbs").mkdir(parents=True)
    (empty / ".DS_Store").write_bytes(b"")  # hidden: not counted
    (empty / "raw" / ".thumbs" / "t.txt").write_bytes(b"")
    build = ("build", str(empty), "--out", str(tmp_path / "site"), "--weights", "random")
    assert run_cli(*build) == 1
    assert capsys.readouterr().err == f"reportgen: error: no images found in '{empty}'\n"

    for name in (
        "notes.txt",
        "IMG_1.MOV",
        "IMG_2.mov",
        "raw/IMG_3.CR2",
        "raw/IMG_4.cr2",
        "a",
        "b.x",
    ):
        (empty / name).write_bytes(b"")
    assert run_cli(*build) == 1
    assert capsys.readouterr().err == (
        f"reportgen: error: no images found in '{empty}': it holds 7 files (2 .cr2, 2 .mov,"
        " 1 without an extension, …), none named as an image (.avif .bmp .gif .heic .heif .hif"
        " .jfif .jpe .jpeg .jpg .png .tif .tiff .webp, any case)\n"
    )


def test_exclude_leaves_out_files_and_folders_by_name_or_path(tmp_path, capsys):
    src = tmp_path / "in"
    names = ["a.jpg", "Screenshots/s.jpg", "2019/drafts/d.jpg", "2019/k.PNG", "2020/drafts.jpg"]
    for i, name in enumerate(names):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_PHOTOS[i % len(SAMPLE_PHOTOS)], src / name)
    out = tmp_path / "site"

    def built(*more: str) -> list[str]:
        assert run_cli("build", str(src), "--out", str(out), "--weights", "random", *more) == 0
        data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
        return [img["source"] for img in data["images"]]

    # By name in any case and at any depth, and by path from the input folder.
    by_flags = ("--exclude", "screenshots", "--exclude", "*.png", "--exclude", "2019/drafts/")
    assert built(*by_flags) == ["2020/drafts.jpg", "a.jpg"]
    (tmp_path / "reportgen.yaml").write_text('exclude: ["*.PNG", "2019"]\n', encoding="utf-8")
    assert built("--config", str(tmp_path / "reportgen.yaml")) == [
        "2020/drafts.jpg",
        "Screenshots/s.jpg",
        "a.jpg",
    ]
    assert built() == sorted(names)  # nothing left out: the photos come back
    # A name pattern matches at any depth; one with a leading / at the input folder's top only.
    assert built("--exclude", "drafts*") == ["2019/k.PNG", "Screenshots/s.jpg", "a.jpg"]
    assert built("--exclude", "/drafts*") == sorted(names)
    capsys.readouterr()

    args = ("build", str(src), "--out", str(tmp_path / "s2"), "--weights", "random")
    assert run_cli(*args, "--exclude", "*") == 1
    assert capsys.readouterr().err == (
        f"reportgen: error: no images found in '{src}' (besides what --exclude leaves out)\n"
    )
    (tmp_path / "bad.yaml").write_text("exclude: [3]\n", encoding="utf-8")
    assert run_cli(*args, "--config", str(tmp_path / "bad.yaml")) == 2
    assert "  - exclude: must be a pattern such as '*.png', or a list of them" in (
        capsys.readouterr().err
    )


def test_folder_of_only_unusable_images_says_why_each_was_skipped(tmp_path, capsys):
    """Every image skipped, one found unreadable at once and one the model's run could not
    decode: each named with its reason, then the folder's verdict, and no site."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad.jpg").write_bytes(b"not a jpeg")
    os.mkfifo(src / "pipe.jpg")
    out = tmp_path / "site"
    for _ in range(2):  # again: the bad photo's verdict now comes from the cache
        assert run_cli("build", str(src), "--out", str(out), "--weights", "random") == 1
        assert capsys.readouterr().err.splitlines() == [
            "reportgen: skipped bad.jpg: not an image Pillow can read",
            "reportgen: skipped pipe.jpg: not a photo: it is a named pipe (FIFO)",
            f"reportgen: error: none of the image files in '{src}' could be read",
        ]
    assert not out.exists()


def test_offline_without_cached_weights_says_where_the_file_goes(
    tmp_path, monkeypatch, photos_dir, capsys
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code = run_cli("build", str(photos_dir), "--out", str(tmp_path / "site"))
    # It failed fast, before writing any site.
    assert code == 1
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert capsys.readouterr().err == (
        "reportgen: error: cannot download the pretrained weights (no network). Offline? Put "
        f"alexnet-owt-7be5be79.pth at {expected}, or pass --weights PATH to a local copy "
        "(or --weights random for a dry run).\n"
    )
    assert not (tmp_path / "site" / "index.html").exists()


def test_missing_weights_file(tmp_path, photos_dir, capsys):
    missing = tmp_path / "none.pth"
    code = run_cli(
        "build", str(photos_dir), "--out", str(tmp_path / "s"), "--weights", str(missing)
    )
    assert code == 1
    assert capsys.readouterr().err == f"reportgen: error: weights file '{missing}' does not exist\n"


def test_unavailable_device_is_a_usage_error(tmp_path, photos_dir, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = run_cli(
        "build",
        str(photos_dir),
        "--out",
        str(tmp_path / "s"),
        "--device",
        "cuda",
        "--weights",
        "random",
    )
    assert code == 2
    assert capsys.readouterr().err == (
        "reportgen: error: --device cuda was asked for but is not available here\n"
    )


def test_console_script_builds_a_site(tmp_path, photos_dir, weights_file):
    """The installed `reportgen` command, as a user runs it (not a terminal: no bars)."""
    exe = Path(sys.executable).with_name("reportgen")
    out = tmp_path / "site"
    proc = subprocess.run(
        [str(exe), "build", str(photos_dir), "--out", str(out), "--weights", str(weights_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    published = sum(
        p.stat().st_size for p in out.rglob("*") if p.is_file() and ".reportgen" not in p.parts
    )
    assert 100_000 < published < 1_000_000  # so the line says kB
    assert proc.stderr.splitlines() == [
        f"reportgen: wrote 5 photo pages (5 computed on {device}, 0 from the cache) "
        f"to {out / 'index.html'} ({published / 1000:.1f} kB)"
    ]
    assert (out / "index.html").is_file()


def test_python_dash_m_is_the_same_command():
    proc = subprocess.run(
        [sys.executable, "-m", "reportgen", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("reportgen ")


def test_each_stage_a_large_folder_waits_on_shows_a_bar(tmp_path, monkeypatch, capsys):
    """Past the model's run and the pages, a large folder's build waits on hashing its photos,
    the search for their nearest photos, the map and the swap: each shows a bar, at a terminal,
    once it has taken a second (here at once), and each bar ends full."""
    import reportgen.progress
    from reportgen.api import build_site

    from .conftest import sample_folder

    monkeypatch.setattr(reportgen.progress, "SHOWN_AFTER", 0.0)
    src = sample_folder(tmp_path / "in", 9)
    build_site(src, tmp_path / "site", weights="random", progress=True)
    shown: dict[str, str] = {}
    for line in re.split(r"[\r\n]+", capsys.readouterr().err):
        if ": " in line:
            shown[line.split(": ")[0]] = line  # the bar as it was last drawn
    ends = {  # what follows the full bar: a count of all, or the time for a bar of shares
        "finding photos": "9/9",
        "inference": "5/5",  # the model runs once over copies of one photo
        "nearest photos": r"\[00:",  # each photo is passed over twice: no count to show
        "map": "9/9",
        "pages": "9/9",
        "updating the site": r"(\d+)/\1 ",
    }
    assert set(ends) <= set(shown), shown.keys()
    for desc, end in ends.items():
        assert re.match(rf"{desc}: 100%\|█+\| {end}", shown[desc]), shown[desc]
