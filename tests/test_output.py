"""write_atomic: whole files or none, hard links keep old bytes, no symlink is written through."""

from __future__ import annotations

import os

import pytest

from reportgen.files import write_atomic


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
