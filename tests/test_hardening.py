"""Every failure a user can meet ends in one clear line; one build at a time per output folder;
nothing corrupt or stale is ever cached."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import reportgen.build
import reportgen.inference.stage
from reportgen.cache import ResultCache

from .conftest import SAMPLE_PHOTOS, run_cli, sample_folder, state_of

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def site_files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".reportgen" not in p.parts
    }


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("reportgen: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def build(src: Path, out: Path, *extra: str) -> int:
    return run_cli("build", str(src), "--out", str(out), "--weights", "random",
                   "--workers", "0", *extra)  # fmt: skip


# --- the disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["pictures", "pages"])
def test_a_full_disk_is_one_line_and_the_previous_site_stays_whole(
    tmp_path, monkeypatch, capsys, stage
):
    src, out = sample_folder(tmp_path / "in", 2), tmp_path / "site"
    assert build(src, out) == 0
    before = site_files(out)
    shutil.copy(SAMPLE_PHOTOS[3], src / "new.jpg")  # so the model runs and writes pictures
    capsys.readouterr()
    real_write = os.write

    def full(fd: int, data) -> int:
        path = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""
        if stage == "pictures" or "/.reportgen-staging/" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    assert build(src, out) == 1
    monkeypatch.setattr(os, "write", real_write)
    line = one_error_line(capsys)
    assert line.startswith("reportgen: error: No space left on device: ")
    # The path it could not write, and what moves it: the cache's pictures (in reportgen's
    # state, by default), or the staged pages.
    moved_by = (
        "keep reportgen's state on another disk (REPORTGEN_HOME=FOLDER; --cache FOLDER moves "
        "the largest part, the cache)"
        if stage == "pictures"
        else "choose another --out or --cache"
    )
    assert line.endswith(
        f"; the disk is full: free some space, or {moved_by} (the previous site is unchanged)"
    )
    assert str(state_of(out) if stage == "pictures" else out) in line
    assert site_files(out) == before
    assert not (out / ".reportgen-staging").exists()
    assert build(src, out) == 0  # and once there is space again, the build goes through
    assert len(json.loads((out / "predictions.json").read_text())["images"]) == 3


def _tmpfs(folder: Path, options: str):
    """A real, tiny file system mounted at ``folder`` (root only), unmounted afterwards."""
    if not ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    yield from _tmpfs(tmp_path / "disk", "size=400k")


@pytest.fixture
def read_only_disk(tmp_path):
    yield from _tmpfs(tmp_path / "ro", "ro,size=100k")


def test_a_real_full_disk(tmp_path, small_disk, capsys):
    src = sample_folder(tmp_path / "in", 1)
    out = small_disk / "site"
    assert build(src, out) == 0
    before = site_files(out)
    sample_folder(src, 5)
    capsys.readouterr()
    assert build(src, out) == 1
    line = one_error_line(capsys)
    assert line.startswith("reportgen: error: No space left on device: ")
    assert "the disk is full" in line
    assert site_files(out) == before
    assert not (out / ".reportgen-staging").exists()  # its space was given back at once


def test_a_read_only_output_folder(tmp_path, read_only_disk, capsys):
    assert build(sample_folder(tmp_path / "in", 1), read_only_disk / "site") == 1
    line = one_error_line(capsys)
    assert line.startswith("reportgen: error: Read-only file system: ")
    assert "choose another --out or --cache" in line


def test_a_read_only_disk_for_reportgens_state_says_where_to_keep_it(
    tmp_path, read_only_disk, monkeypatch, capsys
):
    """--out and --cache do not move the state (manifest, records, lock): the line says what
    does."""
    monkeypatch.setenv("REPORTGEN_HOME", str(read_only_disk / "reportgen"))
    assert build(sample_folder(tmp_path / "in", 1), tmp_path / "site") == 1
    line = one_error_line(capsys)
    assert line.startswith(f"reportgen: error: Read-only file system: {read_only_disk}")
    assert "keep reportgen's state on another disk (REPORTGEN_HOME=FOLDER)" in line
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize(
    ("number", "advice"),
    [
        (errno.ENOSPC, "free some space, or keep reportgen's state on another disk "
         "(REPORTGEN_HOME=FOLDER; --cache FOLDER moves the largest part, the cache)"),
        (errno.EACCES, "keep reportgen's state in a folder you may write to "
         "(REPORTGEN_HOME=FOLDER), or change its permissions"),
        (errno.EROFS, "keep reportgen's state on another disk (REPORTGEN_HOME=FOLDER)"),
    ],
)  # fmt: skip
def test_disk_errors_in_reportgens_state_say_what_moves_it(tmp_path, number, advice):
    from reportgen.errors import os_error_message
    from reportgen.site.states import sites_home

    inside = OSError(number, os.strerror(number), str(sites_home() / "site-0123/manifest.json"))
    assert os_error_message(inside).endswith(advice)
    elsewhere = OSError(number, os.strerror(number), str(tmp_path / "site" / "index.html"))
    assert "REPORTGEN_HOME" not in os_error_message(elsewhere)
    assert "--out" in os_error_message(elsewhere)


@pytest.mark.parametrize("option", ["--out", "--cache"])
def test_permission_denied_on_out_or_cache(tmp_path, monkeypatch, capsys, option):
    src = sample_folder(tmp_path / "in", 1)
    locked = tmp_path / "locked"
    real_mkdir = Path.mkdir

    def denied(self, *args, **kwargs):
        if self == locked or locked in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    out = locked / "site" if option == "--out" else tmp_path / "site"
    extra = (option, str(locked / "cache")) if option == "--cache" else ()
    assert build(src, out, *extra) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"reportgen: error: Permission denied: {locked}")
    assert "choose a folder you may write to (--out, --cache)" in line


# --- photos that change under the build -----------------------------------------------------


def _after_discovery(monkeypatch, action):
    real = reportgen.build.discover

    def discover_then_act(*args, **kwargs):
        found = real(*args, **kwargs)
        action()
        return found

    monkeypatch.setattr(reportgen.build, "discover", discover_then_act)


def test_a_photo_that_vanishes_is_skipped_and_not_remembered(tmp_path, monkeypatch, capsys):
    src, out = sample_folder(tmp_path / "in", 3), tmp_path / "site"
    kept = tmp_path / "p1.jpg"
    _after_discovery(monkeypatch, lambda: shutil.move(src / "p1.jpg", kept))
    assert build(src, out) == 0
    assert "skipped p1.jpg: cannot be read now (No such file or directory)" in (
        capsys.readouterr().err
    )
    monkeypatch.undo()
    shutil.move(kept, src / "p1.jpg")
    result = reportgen.build_site(src, out, weights="random", workers=0)
    assert (result.computed, len(result.photos), result.skipped) == (1, 3, ())


def test_a_photo_changed_after_hashing_is_never_cached_under_the_old_hash(
    tmp_path, monkeypatch, capsys
):
    src, out = sample_folder(tmp_path / "in", 2), tmp_path / "site"
    old = (src / "p1.jpg").read_bytes()
    _after_discovery(monkeypatch, lambda: shutil.copy(SAMPLE_PHOTOS[4], src / "p1.jpg"))
    assert build(src, out) == 0
    assert "skipped p1.jpg: changed while the build ran; build again" in capsys.readouterr().err
    monkeypatch.undo()
    # The old bytes' key has no entry: had the new bytes been cached under it, putting the old
    # photo back would show the new photo's results.
    (src / "p1.jpg").write_bytes(old)
    again = reportgen.build_site(src, out, weights="random", workers=0)
    assert again.computed == 1 and not again.skipped
    fresh = reportgen.build_site(src, tmp_path / "fresh", weights="random", workers=0, full=True)
    # The same classes, and probabilities to float32's rounding: a GPU may round a photo's
    # numbers differently in a batch of one than in a batch of two.
    for grown, anew in zip(again.photos, fresh.photos, strict=True):
        assert [t.index for t in grown.top5] == [t.index for t in anew.top5]
        assert [t.probability for t in grown.top5] == pytest.approx(
            [t.probability for t in anew.top5], rel=1e-5
        )


# --- the cache ------------------------------------------------------------------------------


def _entries(out: Path) -> list[Path]:
    return sorted((state_of(out) / "cache" / "results").glob("*/*.json"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "picture-emptied", "picture-gone"])
def test_a_damaged_cache_entry_is_recomputed_not_used(tmp_path, damage):
    src, out = sample_folder(tmp_path / "in", 2), tmp_path / "site"
    first = reportgen.build_site(src, out, weights="random", workers=0)
    before = site_files(out)
    entry = _entries(out)[0]
    picture = next((state_of(out) / "cache" / "pictures").glob(f"*/{entry.stem}-conv1.jpg"))
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "garbage":
        entry.write_bytes(os.urandom(200))
    elif damage == "picture-emptied":
        picture.write_bytes(b"")
    else:
        picture.unlink()
    again = reportgen.build_site(src, out, weights="random", workers=0)
    assert (first.computed, again.computed) == (2, 1)
    assert site_files(out) == before


def test_cache_entries_are_whole_or_absent_after_a_kill_mid_write(tmp_path, monkeypatch):
    """A write that dies half-way leaves no entry, and no file that could pass for one."""
    cache = ResultCache(tmp_path, "f" * 64, kinds=())
    real_write = os.write

    def half(fd: int, data) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(KeyboardInterrupt):
        cache.store_unusable("k" * 64, "not an image")
    monkeypatch.setattr(os, "write", real_write)
    assert cache.load("k" * 64) is None
    assert not list(tmp_path.rglob("*.tmp"))


# --- files that are not photos --------------------------------------------------------------


def test_pipes_sockets_and_devices_are_skipped_without_being_opened(tmp_path, capsys):
    src = sample_folder(tmp_path / "in", 1)
    os.mkfifo(src / "pipe.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(src / "sock.png"))
    (src / "null.jpg").symlink_to("/dev/null")

    def hung(*_):
        raise TimeoutError("the build hung on a special file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        assert build(src, tmp_path / "site") == 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        server.close()
    err = capsys.readouterr().err
    assert "skipped pipe.jpg: not a photo: it is a named pipe (FIFO)" in err
    assert "skipped sock.png: not a photo: it is a socket" in err
    assert "skipped null.jpg: not a photo: it is a character device" in err


# --- one build per output folder ------------------------------------------------------------


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "reportgen", "build", *args],
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def _wait_for_lock(out: Path, proc: subprocess.Popen) -> None:
    lock = state_of(out) / "lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the first build never took the lock")


def test_a_second_build_into_the_same_folder_stops_at_once(tmp_path):
    src, out = sample_folder(tmp_path / "in", 40), tmp_path / "site"
    first = _start(str(src), "--out", str(out), "--weights", "random", "--workers", "0")
    _wait_for_lock(out, first)
    started = time.monotonic()
    second = _start(str(src), "--out", str(out), "--weights", "random")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert err.strip() == (
        f"reportgen: error: another build (pid {first.pid}) is writing to {str(out)!r}; wait "
        "for it to finish, or pass --wait to start when it has"
    )
    assert time.monotonic() - started < 20  # it did not wait for the model
    assert first.wait(timeout=300) == 0
    assert len(json.loads((out / "predictions.json").read_text())["images"]) == 40


def test_wait_starts_when_the_other_build_is_done(tmp_path):
    src, out = sample_folder(tmp_path / "in", 20), tmp_path / "site"
    first = _start(str(src), "--out", str(out), "--weights", "random", "--workers", "0")
    _wait_for_lock(out, first)
    second = _start(str(src), "--out", str(out), "--weights", "random", "--wait")
    _, err = second.communicate(timeout=300)
    assert first.wait(timeout=300) == 0
    assert second.returncode == 0, err
    assert f"waiting for the build (pid {first.pid}) writing to {out}" in err
    assert "(all from the cache)" in err


def test_builds_into_different_folders_share_a_cache_at_the_same_time(tmp_path):
    src, cache = sample_folder(tmp_path / "in", 30), tmp_path / "shared-cache"
    builds = [
        _start(
            str(src),
            "--out",
            str(tmp_path / name),
            "--weights",
            "random",
            "--workers",
            "0",
            "--cache",
            str(cache),
        )  # fmt: skip
        for name in ("one", "two")
    ]
    for proc in builds:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert site_files(tmp_path / "one") == site_files(tmp_path / "two")


def test_an_interrupted_first_build_does_not_block_the_next(tmp_path, monkeypatch, capsys):
    src, out = sample_folder(tmp_path / "in", 2), tmp_path / "site"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reportgen.inference.stage, "_fill_cache", interrupted)
    assert build(src, out) == 130
    assert one_error_line(capsys) == (
        "reportgen: error: interrupted before any photo was finished; the previous site is "
        "unchanged"
    )
    assert (state_of(out) / "lock").is_file() and not (out / "index.html").exists()
    monkeypatch.undo()
    assert build(src, out) == 0


def test_files_a_swap_cut_short_moved_in_stay_reportgens(tmp_path, monkeypatch):
    """A kill half-way through the swap leaves new files in the site that the manifest does not
    name yet: the swap's journal names them, so the next build owns them (replaces or deletes
    them) and does not take the site as intact."""
    import reportgen.site.output as output

    src, out = sample_folder(tmp_path / "in", 2), tmp_path / "site"
    assert build(src, out) == 0
    shutil.copy(SAMPLE_PHOTOS[2], src / "added.jpg")
    moves = []
    replace = os.replace

    def killed_after_six(source, target):  # the new photo's pictures, the charts, a page
        into_site = Path(target).is_relative_to(out) and Path(target).name != output.MARKER
        if into_site and len(moves) == 6:
            raise KeyboardInterrupt
        if into_site:
            moves.append(Path(target))
        replace(source, target)

    monkeypatch.setattr(output.os, "replace", killed_after_six)
    assert build(src, out) == 130
    monkeypatch.undo()
    moved = [p.relative_to(out).as_posix() for p in moves]
    assert moved and all((out / rel).is_file() for rel in moved)
    folder = output.OutputFolder(out)
    assert folder.intact() is None
    assert set(moved) <= folder.owned_files().keys()

    (src / "added.jpg").unlink()  # the files moved in for it are no longer in the site
    assert build(src, out) == 0
    its_own = [rel for rel in moved if "added" in rel or rel.endswith(("-input.jpg", "-conv1.jpg"))]
    assert len(its_own) >= 2 and not any((out / rel).exists() for rel in its_own)
    assert not (state_of(out) / output.SWAPPING).exists()
    assert build(src, out) == 0 and folder.intact() is not None


# --- bugs -----------------------------------------------------------------------------------


def test_an_internal_error_is_one_line_with_a_log_of_its_traceback(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(reportgen.build, "summarize_folder", broken)
    assert build(sample_folder(tmp_path / "in", 1), tmp_path / "site") == 1
    line = one_error_line(capsys)
    prefix = "reportgen: error: internal error (ValueError: boom); please report this: "
    assert line.startswith(prefix + "the traceback is in ")
    log = Path(line.removeprefix(prefix + "the traceback is in "))
    text = log.read_text()
    log.unlink()
    assert "Traceback (most recent call last)" in text and "in broken" in text
    with pytest.raises(ValueError, match="boom"):
        build(sample_folder(tmp_path / "in", 1), tmp_path / "site", "--debug")


def test_a_batch_the_memory_cannot_hold_is_one_line_saying_what_to_change(
    tmp_path, monkeypatch, capsys
):
    """A real allocation the system refuses (100 TB), where the model's run would make it: the
    build stops with what to change, not with an internal error, and the previous site stays."""
    src, out = sample_folder(tmp_path / "in", 2), tmp_path / "site"
    assert build(src, out) == 0
    before = site_files(out)
    sample_folder(src, 3)  # one photo more: the model must run

    def too_large(*args, **kwargs):
        torch.empty(10**14, dtype=torch.uint8)
        yield

    monkeypatch.setattr(reportgen.inference.stage, "run_batches", too_large)
    assert build(src, out, "--batch-size", "4") == 1
    assert one_error_line(capsys) == (
        "reportgen: error: this machine ran out of memory running the model over a batch of 4"
        " photos (it asked for 100000000000000 bytes more); pass a --batch-size under 4"
    )
    assert site_files(out) == before


def test_a_gpu_out_of_memory_says_how_much_and_what_to_change():
    said = reportgen.inference.stage._said
    cuda = torch.device("cuda")
    oom = torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 7.6 GiB"
    )
    assert str(said(oom, cuda, 256)) == (
        "the GPU ran out of memory running the model over a batch of 256 photos (it asked for"
        " 2.50 GiB more); pass a --batch-size under 256"
    )
    assert str(said(oom, cuda, 1)).endswith("a batch of 1 photo (it asked for 2.50 GiB more);"
                                            " run it with --device cpu")  # fmt: skip
    mps = RuntimeError("MPS backend out of memory (MPS allocated: 17.2 GB, other allocations: …)")
    assert str(said(mps, torch.device("mps"), 64)) == (
        "the GPU ran out of memory running the model over a batch of 64 photos; pass a"
        " --batch-size under 64"
    )
    assert said(RuntimeError("shape mismatch"), cuda, 8) is None  # a bug: the internal error


# --- what the pages say ---------------------------------------------------------------------


def test_the_near_miss_list_says_when_it_is_cut(tmp_path):
    # Random weights spread the probabilities thin: every photo is a near-miss.
    src, out = sample_folder(tmp_path / "in", 12), tmp_path / "site"
    result = reportgen.build_site(src, out, weights="random", workers=0)
    assert len(result.photos) == 12
    text = " ".join((out / "summary.html").read_text().split())
    assert "less than 5 points apart: 12; the 10 closest are listed." in text
    assert text.split('id="near-h"')[1].split("</section>")[0].count("<li>") == 10


def test_layer_scaling_is_what_the_conv1_alt_text_says(tmp_path):
    src = sample_folder(tmp_path / "in", 1)
    for mode, words in (("layer", "all scaled to the layer's shared range"),
                        ("map", "each scaled to its own range")):  # fmt: skip
        out = tmp_path / mode
        result = reportgen.build_site(src, out, weights="random", workers=0, normalize=mode)
        page = (out / result.photos[0].page).read_text()
        assert words.replace("'", "&#39;") in page
        other = "each scaled to its own range" if mode == "layer" else "shared range"
        assert other not in page.split("usemap")[1].split(">")[0]


def test_statistics_are_rounded_once_from_the_full_value(tmp_path):
    src, out = sample_folder(tmp_path / "in", 3), tmp_path / "site"
    result = reportgen.build_site(src, out, weights="random", workers=0)
    kernels = (out / "kernels.html").read_text()
    for k in range(64):
        mean = sum(p.conv1_mean[k] for p in result.photos) / len(result.photos)
        peak = max(p.conv1_max[k] for p in result.photos)
        section = kernels.split(f'id="kernel-{k}"')[1]
        assert f"<dt>Mean activation</dt><dd>{mean:.3f}</dd>" in section
        assert f"<dt>Highest activation</dt><dd>{peak:.3f}</dd>" in section
    # Stored whole: a float32 value, not one rounded to 4 decimals.
    values = [v for p in result.photos for v in p.conv1_max]
    assert any(round(v, 4) != v for v in values)
    assert all(float(_as_float32(v)) == v for v in values)


def _as_float32(value: float):
    import numpy as np

    return np.float32(value)


def test_a_same_size_change_in_place_after_hashing_is_caught(tmp_path, monkeypatch, capsys):
    """The workers check each file's stamp (size, mtime in ns, inode), not its size alone."""
    src, out = sample_folder(tmp_path / "in", 2), tmp_path / "site"

    def flip_a_byte():
        with open(src / "p1.jpg", "r+b") as fh:
            fh.seek(-3, os.SEEK_END)
            byte = fh.read(1)
            fh.seek(-3, os.SEEK_END)
            fh.write(bytes([byte[0] ^ 0xFF]))

    _after_discovery(monkeypatch, flip_a_byte)
    assert build(src, out) == 0
    assert "skipped p1.jpg: changed while the build ran; build again" in capsys.readouterr().err


def test_a_batch_size_past_the_free_memory_is_warned_of_before_the_model_runs(
    tmp_path, monkeypatch, capsys
):
    """On the CPU the system's OOM killer stops such a build with no word: it is said first. The
    memory module's figures are scaled so that three photos make a batch too large."""
    from reportgen.inference import memory

    src = sample_folder(tmp_path / "in", 3)
    monkeypatch.setattr(memory, "BATCH_PHOTO_BYTES", 200_000_000)
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.BUILD_BYTES + 500_000_000)
    assert build(src, tmp_path / "a", "--batch-size", "500") == 0  # of 3 photos: 1.6 GB in all
    err = capsys.readouterr().err
    assert err.count("reportgen: --batch-size") == 1, err
    assert (
        "--batch-size 500 makes the build need about 1.6 GB, more than the 1.5 GB free here: the"
        " system may stop it; a --batch-size of 2 fits"
    ) in err
    assert build(src, tmp_path / "b") == 0  # the default batch: not the user's to change
    assert build(src, tmp_path / "c", "--batch-size", "2") == 0  # 1.4 GB
    assert "--batch-size" not in capsys.readouterr().err
