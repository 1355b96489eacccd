"""Rebuilds: only new work, interruption-safe, deterministic."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import reportgen.build
from reportgen.build import build
from reportgen.config import load_config
from reportgen.errors import BuildError

from .conftest import SAMPLE_PHOTOS, state_of
from .htmltools import images
from .test_forked import _running
from .test_site import assert_links_resolve


def make_photos(folder: Path, count: int, start: int = 0) -> list[Path]:
    """``count`` small distinct photos cut from the samples."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.open(SAMPLE_PHOTOS[1]).convert("RGB")
    paths = []
    for i in range(start, start + count):
        path = folder / f"photo-{i:03d}.jpg"
        base.crop((i % 50, i // 50, 150 + i % 50, 120 + i // 50)).save(path, quality=90)
        paths.append(path)
    return paths


def run_build(src: Path, out: Path, weights: str, **options):
    config = load_config(
        {"input_dir": src, "out_dir": out, "weights": weights, "workers": 0, **options},
    )
    return build(config)


def site_files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".reportgen" not in p.relative_to(out).parts
    }


def test_rebuild_reuses_everything_and_redoes_only_what_changed(tmp_path, weights_file):
    src, out = tmp_path / "in", tmp_path / "site"
    make_photos(src, 6)
    first = run_build(src, out, str(weights_file))
    assert (first.computed, first.reused) == (6, 0)
    before = site_files(out)

    again = run_build(src, out, str(weights_file))
    assert (again.computed, again.reused, again.device) == (0, 6, None)
    assert site_files(out) == before

    make_photos(src, 2, start=6)  # two new photos
    (src / "photo-000.jpg").rename(src / "renamed.jpg")  # a rename is not new work
    Image.new("RGB", (90, 90), (200, 10, 10)).save(src / "photo-001.jpg")  # a changed photo
    (src / "photo-002.jpg").unlink()  # a removed photo
    third = run_build(src, out, str(weights_file))
    assert (third.computed, third.reused) == (3, 4)
    pages = {p.source: p.page for p in third.photos}
    assert "renamed.jpg" in pages and "photo-002.jpg" not in pages
    old = json.loads(before["predictions.json"])
    removed = next(e for e in old["images"] if e["source"] == "photo-002.jpg")
    assert not (out / removed["page"]).exists()
    removed_pictures = [
        img["src"]
        for img in images(before[removed["page"]].decode())
        if "crop" in img["alt"] or "output maps" in img["alt"]
    ]
    assert len(removed_pictures) == 2
    for src_url in removed_pictures:
        assert not (out / "photos" / src_url).resolve().exists()
    assert len(list((out / "img").glob("*-input.jpg"))) == 7
    assert_links_resolve(out)

    full = run_build(src, out, str(weights_file), full=True)
    assert (full.computed, full.reused) == (7, 0)


def test_a_site_deleted_by_hand_is_written_again_from_the_cache(tmp_path, weights_file):
    """The state, kept outside the site, outlives what it describes: a page removed, or the whole
    folder, is written again on the next build, and the model does not run."""
    src, out = tmp_path / "in", tmp_path / "site"
    make_photos(src, 4)
    run_build(src, out, str(weights_file))
    before = site_files(out)
    page = next((out / "photos").glob("*.html"))
    page.unlink()
    (out / "index.html").unlink()
    assert (run_build(src, out, str(weights_file)).computed, site_files(out)) == (0, before)
    shutil.rmtree(out)
    again = run_build(src, out, str(weights_file))
    assert (again.computed, again.reused) == (0, 4)
    assert site_files(out) == before


def test_a_cache_entry_lost_while_the_pages_are_written_stops_the_build_till_the_next(
    tmp_path, weights_file, monkeypatch
):
    """Records hold no heat maps: each photo page reads its photo's from the cache entry as it is
    written. An entry gone by then stops the build with one line, the previous site whole; the
    next build computes that photo again, and its page shows the heat maps its entry keeps."""
    src, out = tmp_path / "in", tmp_path / "site"
    make_photos(src, 3)
    run_build(src, out, str(weights_file))
    before = site_files(out)
    make_photos(src, 1, start=3)  # its page is written by the next build
    write_site = reportgen.build.write_site

    def losing_an_entry(site, staging, **options):
        (added,) = (p for p in site.photos if p.source == "photo-003.jpg")
        (entry,) = state_of(out).rglob(f"{added.key}.json")
        entry.unlink()
        return write_site(site, staging, **options)

    monkeypatch.setattr(reportgen.build, "write_site", losing_an_entry)
    with pytest.raises(BuildError, match=r"'photo-003.jpg' went missing .*: build again$"):
        run_build(src, out, str(weights_file))
    assert site_files(out) == before
    monkeypatch.undo()

    again = run_build(src, out, str(weights_file))
    assert (again.computed, again.reused) == (1, 3)
    (added,) = (p for p in again.photos if p.source == "photo-003.jpg")
    (entry,) = state_of(out).rglob(f"{added.key}.json")
    kept = json.loads(entry.read_text())["record"]["cams"]
    page = (out / added.page).read_text()
    assert [img["src"] for img in images(page) if img.get("class") == "heat"] == kept
    assert len(kept) == 5 and all(uri.startswith("data:image/png;base64,") for uri in kept)


def test_new_weights_or_decoding_options_recompute(tmp_path, weights_file):
    src, out = tmp_path / "in", tmp_path / "site"
    make_photos(src, 3)
    assert run_build(src, out, str(weights_file)).computed == 3
    assert run_build(src, out, "random").computed == 3
    assert run_build(src, out, "random", max_pixels=10**7).computed == 3
    assert run_build(src, out, "random", max_pixels=10**7).computed == 0


def test_pictures_that_keep_their_name_are_replaced_when_what_they_show_changes(
    tmp_path, weights_file
):
    """The kernels' picture and the summary's charts have one name whatever they show: a rebuild
    with other weights must not keep the old ones because they are in place."""
    src, out, fresh = tmp_path / "in", tmp_path / "site", tmp_path / "fresh"
    make_photos(src, 3)
    run_build(src, out, str(weights_file))
    run_build(src, out, "random")  # other kernels, other predictions
    run_build(src, fresh, "random")
    for name in ("conv1-kernels", "summary-classes", "summary-confidence", "summary-margin"):
        assert (out / f"img/{name}.png").read_bytes() == (fresh / f"img/{name}.png").read_bytes()


def test_two_builds_of_the_same_input_are_byte_identical(tmp_path, weights_file, photos_dir):
    a = run_build(photos_dir, tmp_path / "a", str(weights_file))
    b = run_build(photos_dir, tmp_path / "b", str(weights_file))
    assert a.computed == b.computed == 5
    files_a, files_b = site_files(tmp_path / "a"), site_files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert files_a[name] == files_b[name], name


def test_cache_can_live_outside_the_site(tmp_path, weights_file):
    src, cache = tmp_path / "in", tmp_path / "cache"
    make_photos(src, 2)
    assert run_build(src, tmp_path / "one", str(weights_file), cache=cache).computed == 2
    assert run_build(src, tmp_path / "two", str(weights_file), cache=cache).computed == 0
    assert not (state_of(tmp_path / "two") / "cache").exists()


def _results(out: Path) -> int:
    return len(list((state_of(out) / "cache" / "results").glob("*/*.json")))


def _wait_for_the_lock(out: Path) -> None:
    """Wait until no process holds the site's build lock: the build's helpers, forked with it
    held, end with it after a kill (a moment later)."""
    fd = os.open(state_of(out) / "lock", os.O_RDWR)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the killed build's helpers held on"
                time.sleep(0.05)
    finally:
        os.close(fd)


def _built_then_60_more(tmp_path: Path, weights: Path) -> tuple[Path, Path, dict, list[str]]:
    """A site built of 4 photos, 60 more added since: the input and output folders, the site's
    files, and the command that builds it again."""
    src, out = tmp_path / "in", tmp_path / "site"
    make_photos(src, 4)
    assert run_build(src, out, str(weights)).computed == 4
    make_photos(src, 60, start=4)
    exe = Path(sys.executable).with_name("reportgen")
    args = [str(exe), "build", str(src), "--out", str(out), "--weights", str(weights)]
    return src, out, site_files(out), args


def _running_build(command: list[str], out: Path, *, until: int) -> subprocess.Popen:
    """``command`` started, once its site's cache holds ``until`` results (or it has ended, or
    two minutes have passed)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _results(out) < until and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_build_leaves_the_old_site_and_its_work_is_reused(
    tmp_path, weights_file, sig, ctrl_c_handled
):
    src, out, old, args = _built_then_60_more(tmp_path, weights_file)
    # ctrl_c_handled: the build starts with Ctrl-C handled, not ignored as in a background job.
    proc = _running_build([*args, "--batch-size", "1", "--workers", "0"], out, until=4 + 8)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    _wait_for_the_lock(out)  # on a GPU, the processes encoding pictures end a moment later
    finished = _results(out) - 4
    assert 8 <= finished < 60

    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert err.splitlines()[-1] == (
            f"reportgen: error: interrupted; the previous site is unchanged, and the {finished} "
            "photos finished so far are cached: the next build starts from there"
        )
    assert site_files(out) == old  # the previous site, whole and unchanged
    assert_links_resolve(out)

    resumed = run_build(src, out, str(weights_file))
    assert resumed.reused == 4 + finished
    assert resumed.computed == 60 - finished
    assert len(resumed.photos) == 64
    assert not (out / ".reportgen-staging").exists()
    assert_links_resolve(out)


def _helpers(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        started = children.get(todo.pop(), [])
        found += started
        todo += started
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_build_leaves_no_process_behind_and_the_next_starts_at_once(
    tmp_path, weights_file, sig
):
    src, out, old, args = _built_then_60_more(tmp_path, weights_file)
    proc = _running_build([*args, "--batch-size", "2", "--workers", "2"], out, until=4 + 4)
    helpers = _helpers(proc.pid)
    assert proc.poll() is None, "the build finished before it could be stopped"
    assert len(helpers) >= 2  # its decoding workers
    os.kill(proc.pid, sig)  # kill, timeout, a service manager: the build's process alone
    _, err = proc.communicate(timeout=60)

    # Its processes end with it (the kernel's parent-death signal), at once: none is left
    # holding the lock or writing into the staging area the next build takes over.
    deadline = time.monotonic() + 2
    while any(_running(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in helpers if _running(pid)]
    finished = _results(out) - 4
    if sig == signal.SIGTERM:  # stopped as by Ctrl-C, and said so
        assert proc.returncode == 128 + signal.SIGTERM
        assert err.splitlines()[-1] == (
            f"reportgen: error: interrupted; the previous site is unchanged, and the {finished} "
            "photos finished so far are cached: the next build starts from there"
        )
    else:
        assert proc.returncode == -signal.SIGKILL
    assert site_files(out) == old

    resumed = run_build(src, out, str(weights_file))  # the lock is free: no "another build"
    assert (resumed.reused, resumed.computed) == (4 + finished, 60 - finished)
    assert_links_resolve(out)


def test_copies_of_a_photo_run_through_the_model_once(tmp_path, weights_file, monkeypatch):
    from reportgen.inference import stage

    src, out = tmp_path / "in", tmp_path / "site"
    first = make_photos(src, 2)[0]
    shutil.copy(first, src / "copy-a.jpg")
    (src / "sub").mkdir()
    shutil.copy(first, src / "sub" / "copy-b.jpg")
    ran: list[list[str]] = []
    run_model = stage.run_model

    def recorded(weights, todo, *args, **kwargs):
        ran.append([s.rel for s in todo])
        return run_model(weights, todo, *args, **kwargs)

    monkeypatch.setattr(stage, "run_model", recorded)
    result = run_build(src, out, str(weights_file))
    assert ran == [["copy-a.jpg", "photo-001.jpg"]]  # the first of the three copies, by name
    assert (result.computed, result.reused) == (4, 0)
    tops = {p.source: p.top5 for p in result.photos}
    assert tops["copy-a.jpg"] == tops["photo-000.jpg"] == tops["sub/copy-b.jpg"]
    assert tops["photo-001.jpg"] != tops["photo-000.jpg"]
