"""reportgen's state for each site: a moved site takes it along, a copy gets its own, and the
state of sites that are gone is listed and removed on request (``reportgen sites [--prune]``)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reportgen import api
from reportgen.site import states
from reportgen.site.output import MANIFEST, OutputFolder
from reportgen.site.states import CACHE_DIR, SITE_FILE, sites_home

from .conftest import run_cli, state_of
from .test_hardening import _tmpfs
from .test_incremental import make_photos, run_build, site_files


@pytest.fixture
def said(caplog, monkeypatch):
    """What the build logs at INFO and above (the command line's handler stops propagation)."""
    monkeypatch.setattr(logging.getLogger("reportgen"), "propagate", True)
    caplog.set_level(logging.INFO, logger="reportgen")
    return caplog


def built(tmp_path, weights_file, photos: int) -> tuple[Path, Path]:
    """A folder of ``photos`` photos and the site built from it: ``(src, out)``."""
    src, out = tmp_path / "in", tmp_path / "site"
    make_photos(src, photos)
    run_build(src, out, str(weights_file))
    return src, out


def stopped_at_the_rename(src, out, weights_file, monkeypatch) -> None:
    """A build into ``out`` interrupted when it renames its state into place."""

    def interrupted(old, new):
        raise KeyboardInterrupt

    monkeypatch.setattr(states.os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_build(src, out, str(weights_file))
    monkeypatch.undo()


def test_a_moved_site_takes_its_state_and_cache_along(tmp_path, weights_file, said):
    """Renaming the site (``site`` to ``docs``, for GitHub Pages) costs no model run and no
    rewrite: the state folder, named from the old path, is renamed to the new path's. The site is
    known by its files, as its last build left them."""
    src, out = built(tmp_path, weights_file, 4)
    moved = tmp_path / "docs"
    before, old_state = site_files(out), state_of(out)
    os.rename(out, moved)
    said.clear()
    again = run_build(src, moved, str(weights_file))
    assert (again.computed, again.reused) == (0, 4)
    assert site_files(moved) == before
    assert not old_state.exists() and (state_of(moved) / MANIFEST).is_file()
    assert (
        f"the site was moved here from {out.resolve()}: its cache and state came along" in said.text
    )
    assert "no record of the last build" not in said.text
    assert json.loads((state_of(moved) / SITE_FILE).read_text())["path"] == str(moved.resolve())


def test_a_moved_site_is_known_by_its_files_among_the_states_of_sites_gone(tmp_path, weights_file):
    """Of two sites gone from where they were built, the moved one takes its own state along."""
    deleted, moved_away = tmp_path / "a-site", tmp_path / "b-site"
    make_photos(tmp_path / "in-a", 2)
    make_photos(tmp_path / "in-b", 3, start=5)
    run_build(tmp_path / "in-a", deleted, str(weights_file))
    run_build(tmp_path / "in-b", moved_away, str(weights_file))
    deleted_state = state_of(deleted)
    shutil.rmtree(deleted)
    os.rename(moved_away, tmp_path / "docs")
    again = run_build(tmp_path / "in-b", tmp_path / "docs", str(weights_file))
    assert (again.computed, again.reused) == (0, 3)
    assert deleted_state.is_dir()  # still there for `reportgen sites --prune`


def test_a_moved_site_leaves_its_state_where_a_build_is_using_it(tmp_path, weights_file, said):
    src, out = built(tmp_path, weights_file, 2)
    moved = tmp_path / "docs"
    os.rename(out, moved)
    with OutputFolder(out).lock():  # a build into the old place holds it
        said.clear()
        again = run_build(src, moved, str(weights_file))
    assert again.computed == 2 and state_of(out).is_dir() and state_of(moved).is_dir()
    assert f"not taking the site's state along from {state_of(out)}: a build is using it" in (
        said.text
    )


def test_a_move_cut_short_before_its_state_is_renamed_is_finished_and_never_pruned(
    tmp_path, weights_file, monkeypatch
):
    src, out = built(tmp_path, weights_file, 2)
    moved = tmp_path / "docs"
    os.rename(out, moved)
    stopped_at_the_rename(src, moved, weights_file, monkeypatch)  # as a kill would be there
    assert api.prune_sites() == ([], []) and state_of(out).is_dir()  # it names a site there
    assert run_build(src, moved, str(weights_file)).computed == 0
    assert not state_of(out).exists()


def test_a_copy_starts_from_a_copy_of_the_originals_state(tmp_path, weights_file, said):
    """``cp -a site copy``: the copy's first build computes nothing and writes nothing; the two
    states share the cache's files, and each goes its own way after."""
    src, out = built(tmp_path, weights_file, 3)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)  # sizes and mtimes too, as cp -a
    said.clear()
    first = run_build(src, copy, str(weights_file))
    assert (first.computed, first.reused) == (0, 3)
    assert f"the site is a copy of the one in {out.resolve()}" in said.text
    assert "no record of the last build" not in said.text
    assert site_files(copy) == site_files(out)
    entry = next((state_of(out) / CACHE_DIR / "results").rglob("*.json"))
    twin = state_of(copy) / entry.relative_to(state_of(out))
    assert os.path.samefile(entry, twin)  # shared, not copied
    assert [(s.site, s.present) for s in api.sites()] == sorted(
        [(copy.resolve(), True), (out.resolve(), True)], key=lambda s: state_of(s[0]).name
    )

    # The original's cache drops a photo that leaves its folder; the copy's keeps it.
    (src / "photo-002.jpg").rename(tmp_path / "aside.jpg")
    assert run_build(src, out, str(weights_file)).reused == 2
    (tmp_path / "aside.jpg").rename(src / "photo-002.jpg")
    assert (
        run_build(src, copy, str(weights_file)).computed,
        run_build(src, out, str(weights_file)).computed,
    ) == (0, 1)


def test_a_copy_of_a_state_cut_short_leaves_none_and_is_made_again(
    tmp_path, weights_file, monkeypatch
):
    src, out = built(tmp_path, weights_file, 2)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    stopped_at_the_rename(src, copy, weights_file, monkeypatch)  # Ctrl-C once the copy is made
    assert not state_of(copy).exists() and not list(sites_home().glob(".*"))
    assert run_build(src, copy, str(weights_file)).computed == 0
    no_process = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids stay below it
    killed = sites_home() / f".partial-{no_process}-copy-0123"  # a kill's
    being_made = sites_home() / f".partial-{os.getppid()}-other-4567"  # a running process's
    for partial in (killed, being_made):
        (partial / "cache").mkdir(parents=True)
    api.prune_sites()
    assert [p.name for p in sites_home().glob(".*")] == [being_made.name]


def test_a_copy_that_lost_its_files_times_is_known_by_its_pages_bytes(tmp_path, weights_file, said):
    """``cp -r`` (or a ``git clone``) gives every file a new time: the copy is known by its files'
    sizes and its pages' sha256, starts from a copy of the original's state, and rewrites what
    its first build finds changed in time, computing nothing."""
    src, out = built(tmp_path, weights_file, 2)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, copy_function=shutil.copyfile)
    said.clear()
    assert run_build(src, copy, str(weights_file)).computed == 0
    assert f"the site is a copy of the one in {out.resolve()}" in said.text
    assert "no record of the last build" not in said.text
    assert site_files(copy) == site_files(out)
    assert OutputFolder(copy).intact() is not None  # its state now says how the copy is
    assert run_build(src, out, str(weights_file)).computed == 0


def test_a_copy_whose_files_changed_gets_a_state_of_its_own(tmp_path, weights_file, said):
    """A copy whose times changed and whose pages are not all the original's (one page's bytes
    changed, its size kept) is not known for one: it computes every photo again, and the
    original's state is left as it was."""
    src, out = built(tmp_path, weights_file, 2)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, copy_function=shutil.copyfile)
    index = copy / "index.html"
    index.write_bytes(index.read_bytes().replace(b"<html", b"<HTML", 1))
    said.clear()
    assert run_build(src, copy, str(weights_file)).computed == 2
    assert f"no record of the last build into {copy} (a copy, or its" in said.text
    assert site_files(copy) == site_files(out)
    said.clear()
    assert run_build(src, out, str(weights_file)).computed == 0
    assert "no record of the last build" not in said.text


def test_a_state_that_did_not_say_its_site_says_it_at_the_next_build(tmp_path, weights_file):
    src, out = built(tmp_path, weights_file, 2)
    moved = tmp_path / "moved"
    (state_of(out) / SITE_FILE).unlink()  # as reportgen before this file left it
    os.rename(out, moved)  # nothing says where the site was: a recompute
    assert run_build(src, moved, str(weights_file)).computed == 2
    os.rename(moved, out)  # its state says now
    assert run_build(src, out, str(weights_file)).computed == 0
    os.rename(out, moved)
    assert run_build(src, moved, str(weights_file)).computed == 0


def test_sites_lists_each_state_and_prune_removes_only_those_of_sites_gone(
    tmp_path, weights_file, capsys
):
    src, kept, gone = tmp_path / "in", tmp_path / "kept", tmp_path / "gone"
    make_photos(src, 2)
    run_build(src, kept, str(weights_file))
    run_build(src, gone, str(weights_file))
    shutil.rmtree(gone)
    earlier = sites_home() / "old-0123456789abcdef"  # made before states said their site
    earlier.mkdir()
    (earlier / MANIFEST).write_text("{}")
    capsys.readouterr()

    assert run_cli("sites") == 0
    size = r" *([0-9.]+ (?:bytes|kB|MB))"
    lines = capsys.readouterr().out.splitlines()
    expected = {
        state_of(kept).name: rf"{size}  {re.escape(str(kept))}",
        state_of(gone).name: rf"{size}  {re.escape(str(gone))}  \(gone: no site there now; "
        rf"pruning frees {size.strip()}\)",
        earlier.name: rf"{size}  {re.escape(str(earlier))}  \(made by an earlier reportgen: its "
        r"site is not recorded\)",
    }
    assert len(lines) == 5
    for line, name in zip(lines[:3], sorted(expected), strict=True):
        assert re.fullmatch(expected[name], line), line
    (gone_line,) = (line for line in lines if str(gone) in line)
    total, freed = re.fullmatch(expected[state_of(gone).name], gone_line).groups()
    assert freed == total  # its site, which shared its pictures by hard links, is deleted
    by_site = {s.site: s for s in api.sites()}
    assert 0 < by_site[kept.resolve()].own < by_site[kept.resolve()].size  # pictures shared
    assert lines[3] == f"reportgen keeps the state of 3 sites in {sites_home()}"
    assert (
        lines[4] == f"'reportgen sites --prune' removes the state of the 1 site gone: frees {freed}"
    )

    gone_state = state_of(gone)
    assert run_cli("sites", "--prune") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"removed the state of {gone} (freed {freed})"
    assert len(lines) == 4 and lines[3] == f"reportgen keeps the state of 2 sites in {sites_home()}"
    assert not gone_state.exists() and earlier.is_dir()
    assert not list(sites_home().glob(".*"))
    assert run_build(src, kept, str(weights_file)).computed == 0


def test_a_site_whose_first_build_failed_is_listed_as_never_built(tmp_path, weights_file, capsys):
    """A first build that stops early (here: weights that are not there) leaves the hashes it
    found in a state of its own; the listing says the site was never built, not that it went."""
    src, out = tmp_path / "in", tmp_path / "site"
    make_photos(src, 2)
    assert run_cli("build", str(src), "--out", str(out), "--weights", str(tmp_path / "no.pth")) == 1
    built_then_gone = tmp_path / "gone"
    run_build(src, built_then_gone, str(weights_file))
    shutil.rmtree(built_then_gone)
    capsys.readouterr()

    assert run_cli("sites") == 0
    lines = capsys.readouterr().out.splitlines()
    (failed,) = (line for line in lines if str(out) in line)
    assert re.fullmatch(
        rf" *[0-9.]+ (bytes|kB)  {re.escape(str(out))}  \(never built: no build of it finished; "
        r"pruning frees [0-9.]+ (bytes|kB)\)",
        failed,
    )
    assert f"{built_then_gone}  (gone: no site there now;" in "\n".join(lines)
    assert "removes the state of the 2 sites gone or never built: frees" in lines[-1]
    assert run_cli("sites", "--prune") == 0
    assert not state_of(out).exists() and not state_of(built_then_gone).exists()


def mount_point(path: Path) -> str:
    """The mount point holding ``path``, from the kernel's own table (the longest that is a
    prefix of it): independent of how reportgen finds it."""
    points = [
        line.split()[4].encode().decode("unicode_escape")  # \040 for a space, and so on
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ]
    return max((p for p in points if path == Path(p) or Path(p) in path.parents), key=len)


@pytest.mark.skipif(not Path("/proc/self/mountinfo").exists(), reason="reads Linux's mount table")
def test_a_site_on_a_disk_not_mounted_now_is_kept_not_pruned(tmp_path, weights_file, capsys):
    src, out = built(tmp_path, weights_file, 1)
    recorded = json.loads((state_of(out) / SITE_FILE).read_text())
    assert recorded == {"path": str(out.resolve()), "disk": mount_point(out.resolve())}
    # As if the site were on a USB disk at tmp_path/usb, unplugged: nothing is mounted there.
    usb = tmp_path / "usb"
    usb.mkdir()
    away = sites_home() / "photos-0123456789abcdef"
    away.mkdir()
    (away / SITE_FILE).write_text(json.dumps({"path": str(usb / "photos"), "disk": str(usb)}))
    shutil.rmtree(out)  # and a site gone from a disk that is mounted
    capsys.readouterr()

    assert run_cli("sites") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].endswith(
        f"{usb / 'photos'}  (its disk is not mounted at {usb}: kept, in {away.name})"
    )
    assert f"{out}  (gone: no site there now;" in listed[1]
    assert listed[3].startswith("'reportgen sites --prune' removes the state of the 1 site gone")
    assert run_cli("sites", "--prune") == 0
    assert away.is_dir() and not state_of(out).exists()
    assert [(s.site, s.away, s.gone) for s in api.sites()] == [(usb / "photos", usb, False)]


@pytest.fixture
def usb(tmp_path):
    yield from _tmpfs(tmp_path / "usb", "size=20m")


def test_a_real_disk_unmounted_keeps_its_sites_state_until_it_is_back_without_it(
    tmp_path, weights_file, usb
):
    """A site built on a disk of its own (a tmpfs, as root): while the disk is unmounted its
    state is kept, and a copy of the site made before is a copy, not the site moved; once a disk
    is mounted there again and the site is not on it, it is gone."""
    src, out, copy = tmp_path / "in", usb / "site", tmp_path / "copy"
    make_photos(src, 1)
    run_build(src, out, str(weights_file))
    state = state_of(out)
    assert json.loads((state / SITE_FILE).read_text())["disk"] == str(usb.resolve())
    shutil.copytree(out, copy)  # as cp -a does, keeping the files' times
    subprocess.run(["umount", str(usb)], check=True)
    assert not out.exists()
    assert run_build(src, copy, str(weights_file)).computed == 0
    assert state.is_dir()  # copied from, not taken: the site may be back with its disk
    assert [(s.site, s.away, s.gone) for s in api.sites() if s.folder == state] == [
        (out.resolve(), usb.resolve(), False)
    ]
    assert api.prune_sites() == ([], []) and state.is_dir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(usb)], check=True)
    removed, _ = api.prune_sites()  # a disk is there, without the site: gone
    assert [s.site for s in removed] == [out.resolve()] and not state.exists()


def test_prune_leaves_the_state_a_build_is_using(tmp_path, weights_file):
    src, out = built(tmp_path, weights_file, 1)
    shutil.rmtree(out)
    with OutputFolder(out).lock():  # a build into it has begun
        removed, busy = api.prune_sites()
    assert removed == [] and [s.site for s in busy] == [out.resolve()]
    assert state_of(out).is_dir()
    removed, busy = api.prune_sites()
    assert [s.site for s in removed] == [out.resolve()] and busy == []
    assert not state_of(out).exists()


def test_no_state_kept_is_said(capsys):
    assert run_cli("sites") == 0
    assert capsys.readouterr().out == f"no site's state is kept (in {sites_home()})\n"


def test_a_site_path_a_terminal_would_act_on_is_listed_quoted(capsys):
    state = sites_home() / "evil-0123456789abcdef"
    state.mkdir(parents=True)
    (state / SITE_FILE).write_text(json.dumps({"path": "/nowhere/\x1b[2Jsite\nx"}))
    (state / MANIFEST).write_text("{}")
    assert run_cli("sites") == 0
    listed = capsys.readouterr().out
    assert "\x1b" not in listed and listed.count("\n") == 3
    assert "  '/nowhere/\\x1b[2Jsite\\nx'  (gone: no site there now; pruning frees" in listed
