"""A share of the work in a forked copy of the build: the pages and the summary's charts of large
folders, the model's run over a few photos added to one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reportgen
from reportgen import build as build_module
from reportgen import forked
from reportgen.errors import BuildError
from reportgen.site import charts, pages

from .conftest import SAMPLE_PHOTOS, sample_folder, state_of

pytestmark = pytest.mark.skipif(not forked.available(), reason="forks only on Linux")


def test_the_copy_hands_back_what_its_work_returned_or_raised():
    assert forked.Forked(lambda: {"pages": [1, 2], "pid": os.getpid()}).result()["pages"] == [1, 2]
    assert forked.Forked(lambda: os.getpid()).result() != os.getpid()

    def fails():
        raise BuildError("disk full while writing pages/x.html")

    with pytest.raises(BuildError, match="disk full"):
        forked.Forked(fails).result()


def test_a_copy_that_dies_without_a_word_is_an_error_not_a_hang():
    with pytest.raises(BuildError, match="second process ended"):
        forked.Forked(lambda: os._exit(3)).result()


def test_a_cancelled_copy_is_stopped_and_reaped():
    helper = forked.Forked(lambda: time.sleep(60))
    helper.cancel()
    with pytest.raises(ChildProcessError):
        os.waitpid(helper._pid, os.WNOHANG)


def test_a_copy_left_in_its_block_is_stopped_and_reaped_and_one_waited_for_is_kept():
    with pytest.raises(KeyError), forked.Forked(lambda: time.sleep(60)) as helper:
        raise KeyError("the build failed meanwhile")
    with pytest.raises(ChildProcessError):
        os.waitpid(helper._pid, os.WNOHANG)
    with forked.Forked(lambda: 7) as helper:
        assert helper.result() == 7


def test_blocks_are_shared_out_once_each_across_a_fork():
    def take(blocks: forked.Blocks) -> list[int]:
        return [time.sleep(0.0005) or n for n in blocks]  # work that takes a while

    blocks = forked.Blocks(1000, size=7)
    try:
        helper = forked.Forked(lambda: take(blocks))
        mine = take(blocks)
        theirs = helper.result()
    finally:
        blocks.close()
    assert sorted(mine + theirs) == list(range(1000))
    assert mine and theirs


def site_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_a_site_written_by_two_processes_is_the_site_written_by_one(tmp_path, monkeypatch):
    src = sample_folder(tmp_path / "in", 7)
    options = {"weights": "random", "workers": 0, "per_page": 2}
    one = reportgen.build_site(src, tmp_path / "one", **options)
    monkeypatch.setattr(pages, "SPLIT_FROM", 1)
    splits = []
    monkeypatch.setattr(
        pages, "_write_split", lambda *a, **k: splits.append(1) or write_split(*a, **k)
    )
    two = reportgen.build_site(src, tmp_path / "two", **options)
    assert splits and site_files(tmp_path / "two") == site_files(tmp_path / "one")
    assert two.site_bytes == one.site_bytes

    (src / "p3.jpg").unlink()  # a rebuild: the pages kept by either process stay kept
    shutil.copy(SAMPLE_PHOTOS[0], src / "p0 again.jpg")
    reportgen.build_site(src, tmp_path / "two", **options)
    monkeypatch.setattr(pages, "SPLIT_FROM", 10**9)
    reportgen.build_site(src, tmp_path / "one", **options)
    assert site_files(tmp_path / "two") == site_files(tmp_path / "one")
    assert len(splits) == 2


write_split = pages._write_split


def test_an_error_in_the_copy_fails_the_build_and_leaves_the_old_site(tmp_path, monkeypatch):
    src = sample_folder(tmp_path / "in", 3)
    out = tmp_path / "site"
    reportgen.build_site(src, out, weights="random", workers=0)
    before = site_files(out)
    monkeypatch.setattr(pages, "SPLIT_FROM", 1)
    copy = os.getpid()

    def broken_exports(self):
        if os.getpid() != copy:  # only in the forked copy
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(pages.PageWriter, "exports", broken_exports)
    shutil.copy(SAMPLE_PHOTOS[3], src / "p3.jpg")
    with pytest.raises(reportgen.ReportgenError, match="No space left"):
        reportgen.build_site(src, out, weights="random", workers=0)
    assert site_files(out) == before
    assert not (out / ".reportgen-staging").exists()


def test_charts_drawn_in_a_forked_copy_are_the_charts_drawn_in_place(tmp_path, monkeypatch):
    src = sample_folder(tmp_path / "in", 4)
    options = {"weights": "random", "workers": 0}
    one = reportgen.build_site(src, tmp_path / "one", **options)
    drawn_in = tmp_path / "drawn-in.txt"
    draw = charts.draw

    def recorded(*args):
        with drawn_in.open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        return draw(*args)

    monkeypatch.setattr(charts, "draw", recorded)
    monkeypatch.setattr(build_module, "CHARTS_APART_FROM", 1)
    two = reportgen.build_site(src, tmp_path / "two", **options)
    assert drawn_in.read_text().split() != [str(os.getpid())]  # drawn once, in another process
    assert site_files(tmp_path / "two") == site_files(tmp_path / "one")
    assert two.site_bytes == one.site_bytes
    assert len(list(state_of(tmp_path / "two").glob("cache/charts/*.png"))) == 3


def test_an_error_in_the_charts_copy_fails_the_build_and_leaves_the_old_site(tmp_path, monkeypatch):
    src = sample_folder(tmp_path / "in", 2)
    out = tmp_path / "site"
    reportgen.build_site(src, out, weights="random", workers=0)
    before = site_files(out)

    def broken(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(charts, "draw", broken)
    monkeypatch.setattr(build_module, "CHARTS_APART_FROM", 1)
    shutil.copy(SAMPLE_PHOTOS[2], src / "p2.jpg")
    with pytest.raises(reportgen.ReportgenError, match="No space left"):
        reportgen.build_site(src, out, weights="random", workers=0)
    assert site_files(out) == before


AHEAD = """
import os, sys
import reportgen.build as build
build.AHEAD_FROM, build.AHEAD_SHARE = 1, 0.5  # as in a large folder, a few photos added
run = build._run_model
def recorded(*args, **kwargs):
    with open(os.environ["RAN_IN"], "a") as fh:
        fh.write(f"{os.getpid()} {len(args[2])}\\n")
    return run(*args, **kwargs)
build._run_model = recorded
from reportgen.cli import main
print(os.getpid())
sys.exit(main(sys.argv[1:]))
"""


def test_a_few_photos_added_run_through_the_model_in_a_forked_copy(tmp_path):
    """The build reads the other photos' records while a copy of it runs the model over the new
    ones: the site is the one a build in one process makes."""
    src = sample_folder(tmp_path / "in", 4)
    ran_in = tmp_path / "ran-in.txt"
    args = ["--weights", "random", "--workers", "0", "--quiet"]
    command = [sys.executable, "-c", AHEAD, "build", str(src), "--out", str(tmp_path / "site")]
    # The same folder grown by builds in one process (a fresh interpreter too: matplotlib's state
    # is the test's here). Grown, not built anew: a GPU rounds a photo's numbers differently in
    # a batch of one than among others, and the map keeps its photos' places as it grows.
    one = [sys.executable, "-m", "reportgen", "build", str(src), "--out", str(tmp_path / "one")]
    env = {**os.environ, "RAN_IN": str(ran_in)}
    first = subprocess.run([*command, *args], check=True, env=env, capture_output=True, text=True)
    subprocess.run([*one, *args], check=True, capture_output=True)
    shutil.copy(SAMPLE_PHOTOS[4], src / "added.jpg")
    done = subprocess.run([*command, *args], check=True, env=env, capture_output=True, text=True)
    subprocess.run([*one, *args], check=True, capture_output=True)
    runs = [line.split() for line in ran_in.read_text().splitlines()]
    assert runs[0] == [first.stdout.split()[0], "4"]  # every photo: in the build's own process
    assert runs[1][1] == "1" and runs[1][0] != done.stdout.split()[0]  # in a copy
    assert site_files(tmp_path / "site") == site_files(tmp_path / "one")
