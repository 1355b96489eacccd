"""write_atomic: whole files or none, hard links keep old bytes, no symlink is written through;
the manifest read ahead of a staging."""

from __future__ import annotations

import os
import shutil

import pytest

import reportgen
from reportgen.files import write_atomic
from reportgen.site.output import OutputFolder

from .conftest import SAMPLE_PHOTOS


def test_creates_missing_folders_and_replaces_whole_files(tmp_path):
    target = tmp_path / "a" / "b" / "picture.jpg"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["picture.jpg"]


def test_a_hard_link_to_the_old_file_keeps_the_old_bytes(tmp_path):
    target = tmp_path / "picture.jpg"
    write_atomic(target, b"old")
    os.link(target, tmp_path / "published.jpg")
    write_atomic(target, b"new")
    assert (tmp_path / "published.jpg").read_bytes() == b"old"


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "inside").write_text("a folder cannot be replaced by a file")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "taken", b"data")
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    site = tmp_path / "site"
    site.mkdir()
    (site / f".page.html.{os.getpid()}.tmp").symlink_to(outside)
    with pytest.raises(OSError):
        write_atomic(site / "page.html", b"<html>")
    assert outside.read_text() == "precious"


def test_a_manifest_read_ahead_serves_the_next_staging_once(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE_PHOTOS[0], src / "a.jpg")
    out = tmp_path / "site"
    reportgen.build_site(src, out, weights="random", workers=0)
    folder = OutputFolder(out)
    owned = folder.owned_files()
    assert owned
    folder.read_ahead()

    def gone(self):
        raise AssertionError("read the manifest again")

    monkeypatch.setattr(OutputFolder, "owned_files", gone)
    staging = folder.begin()
    assert staging._old == owned
    with pytest.raises(AssertionError, match="again"):
        folder.begin()  # the read-ahead is used once
    folder.discard_staging()
