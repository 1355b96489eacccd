"""A share of the work in a forked copy of the build: the pages and the summary's charts of large
folders, the model's run over a few photos added to one."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import reportgen
from reportgen import build as build_module
from reportgen import forked
from reportgen.cache import ResultCache
from reportgen.errors import BuildError
from reportgen.inference import stage
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


# --- a pool of copies: the pictures' encoders beside the model on a GPU machine ------------------


def test_a_pool_answers_every_task_in_its_copies_in_turn():
    with forked.Pool(lambda n: (n * n, os.getpid()), 3) as pool:
        answers = [pool.submit(n) for n in range(8)]
        late = answers[6].result()  # before the copy's earlier answers: each still its own
        results = [answer.result() for answer in answers]
    assert late == results[6]
    assert [square for square, _ in results] == [n * n for n in range(8)]
    pids = [pid for _, pid in results]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    assert pids[:3] == pids[3:6] == [*pids[6:], pids[2]]


def test_a_pool_takes_tasks_larger_than_the_socket_holds_arrays_of_every_layout():
    rng = np.random.default_rng(0)
    grids = rng.integers(0, 255, (32, 1024, 1024), dtype=np.uint8)  # sent as it is: 32 MB
    task = {
        "grids": grids,
        "codes": rng.standard_normal((8, 4096)).astype(np.float16),
        "columns": np.asfortranarray(rng.standard_normal((5, 7))),
        "strided": grids[:4, ::3, 1::2],  # not contiguous: inside the pickle
        "empty": np.zeros((0, 3), np.float32),
        "crops": [b"\xff\xd8 a JPEG", b""],
    }

    def digest(task: dict) -> dict:
        return {name: pickle.dumps(value) for name, value in task.items()}

    with forked.Pool(digest, 2) as pool:
        assert pool.submit(task).result() == digest(task)


def test_an_error_in_a_copy_is_raised_where_its_answer_is_taken_and_the_copy_goes_on():
    def work(name: str) -> str:
        if name == "bad":
            raise OSError(28, "No space left on device", name)
        return name.upper()

    with forked.Pool(work, 1) as pool:
        bad, good = pool.submit("bad"), pool.submit("good")
        with pytest.raises(OSError, match="No space left") as raised:
            bad.result()
        assert raised.value.errno == 28 and raised.value.filename == "bad"
        assert good.result() == "GOOD"


def test_an_error_that_cannot_travel_is_named_and_the_copy_goes_on():
    class Local(Exception):  # a class pickle cannot find by name
        pass

    def work(n: int) -> int:
        if n == 0:
            raise Local("disk on fire")
        return n

    with forked.Pool(work, 1) as pool:
        bad, good = pool.submit(0), pool.submit(1)
        with pytest.raises(BuildError, match="Local: disk on fire"):
            bad.result()
        assert good.result() == 1


def test_a_copy_that_dies_is_an_error_not_a_hang():
    with (
        forked.Pool(lambda code: os._exit(code), 1) as pool,
        pytest.raises(BuildError, match=r"ended unexpectedly \(exit status 3\)"),
    ):
        pool.submit(3).result()
    with forked.Pool(lambda task: None, 1) as pool:
        os.kill(pool._copies[0].pid, signal.SIGKILL)
        with pytest.raises(BuildError, match=r"ended unexpectedly \(killed by SIGKILL\)"):
            pool.submit(np.zeros(1 << 22, np.uint8)).result()  # more than the socket holds


def test_closing_a_pool_lets_each_copy_finish_its_task_and_reaps_it(tmp_path):
    def work(name: str) -> None:
        time.sleep(0.3)
        (tmp_path / name).write_text("done")

    with forked.Pool(work, 2) as pool:
        pool.submit("a")
        pool.submit("b")
        os.kill(pool._copies[0].pid, signal.SIGINT)  # Ctrl-C is the build's to handle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    for copy in pool._copies:
        with pytest.raises(ChildProcessError):
            os.waitpid(copy.pid, os.WNOHANG)


ORPHANS = """
import os, time
from reportgen import forked
from reportgen.cache import ResultCache
pool = forked.Pool(lambda task: None, 2)
holder = os.fork()
if holder == 0:  # as the decoding workers, forked after the copies: it holds the build's ends
    time.sleep(30)
    os._exit(0)
print(holder, *[copy.pid for copy in pool._copies], flush=True)
os._exit(0)  # killed, say: the pool is never closed
"""


def test_copies_end_by_themselves_when_the_build_is_gone(tmp_path):
    shown = tmp_path / "pids.txt"
    with shown.open("w") as fh:  # a file, not a pipe: run() returns when the build has ended
        subprocess.run([sys.executable, "-c", ORPHANS], stdout=fh, check=True)
    holder, *pids = (int(pid) for pid in shown.read_text().split())
    try:
        assert len(pids) == 2
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in pids)
    finally:
        os.kill(holder, signal.SIGKILL)


STRANDED = """
import multiprocessing, os, sys, time
import torch
from reportgen import forked
from reportgen.inference.pipeline import Decoding

class Stuck(torch.utils.data.Dataset):  # a worker deep in a photo, not looking for its parent
    def __len__(self):
        return 4

    def __getitem__(self, index):
        time.sleep(60)

copy = forked.Forked(lambda: time.sleep(60))
decoding = Decoding(Stuck(), batch_size=1, workers=2)
workers = [p.pid for p in multiprocessing.active_children()]
print(copy._pid, *workers, flush=True)
os._exit(0)  # killed, say: nothing is stopped or waited for
"""


def test_a_copy_and_the_decoding_workers_end_the_moment_the_build_does(tmp_path):
    shown = tmp_path / "pids.txt"
    with shown.open("w") as fh:  # a file, not a pipe: run() returns when the build has ended
        subprocess.run([sys.executable, "-c", STRANDED], stdout=fh, check=True)
    pids = [int(pid) for pid in shown.read_text().split()]
    try:
        assert len(pids) == 3
        deadline = time.monotonic() + 2
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not [pid for pid in pids if _running(pid)]
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


STARTED_BY_A_FORK_SERVER = """
import multiprocessing, os
import numpy as np
import torch
from reportgen.inference.pipeline import Decoding, DecodedPhoto

class Pids(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return DecodedPhoto(index, np.zeros((2, 2, 3), np.uint8), width=os.getpid())

if __name__ == "__main__":
    multiprocessing.set_start_method("forkserver")  # Python 3.14's default on Linux
    with Decoding(Pids(), batch_size=2, workers=2) as decoding:
        pids = {pid for batch in decoding for pid, _, _ in batch.sizes}
    print(len(pids - {os.getpid()}))
"""


def test_decoding_workers_that_a_fork_server_starts_decode(tmp_path):
    """They are not the build's children: nothing is asked of the kernel for them, and they run."""
    script = tmp_path / "fork_server.py"  # a file: a fork server's workers import the main module
    script.write_text(STARTED_BY_A_FORK_SERVER)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "2"), done.stderr[-2000:]


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has ended; its new parent may not reap it


def test_processes_to_encode_are_those_the_decoding_workers_leave_on_a_gpu(monkeypatch):
    monkeypatch.setattr(stage, "usable_cores", lambda: 16)
    assert stage.encoder_processes(torch.device("cpu"), 1) == 0
    assert stage.encoder_processes(torch.device("cuda"), 8) == 4
    monkeypatch.setattr(stage, "usable_cores", lambda: 8)
    assert stage.encoder_processes(torch.device("cuda"), 5) == 2
    assert stage.encoder_processes(torch.device("cuda"), 6) == 0  # one spare core: the thread


def test_pictures_encoded_in_copies_are_those_encoded_in_a_thread(tmp_path, monkeypatch):
    src = sample_folder(tmp_path / "in", 5)
    options = {"weights": "random", "workers": 0, "batch_size": 2}
    reportgen.build_site(src, tmp_path / "one", **options)
    stored_in = tmp_path / "stored-in.txt"
    store = stage._store_batch

    def recorded(keys, *args):
        with stored_in.open("a") as fh:
            fh.write(f"{os.getpid()} {len(keys)}\n")
        return store(keys, *args)

    monkeypatch.setattr(stage, "_store_batch", recorded)
    monkeypatch.setattr(stage, "encoder_processes", lambda device, workers: 2)
    reportgen.build_site(src, tmp_path / "two", **options)
    stores = [line.split() for line in stored_in.read_text().splitlines()]
    assert [count for _, count in stores] == ["2", "2", "1"]
    pids = [pid for pid, _ in stores]
    assert pids[0] == pids[2] != pids[1] and str(os.getpid()) not in pids
    assert site_files(tmp_path / "two") == site_files(tmp_path / "one")
    assert site_files(state_of(tmp_path / "two") / "cache") == site_files(
        state_of(tmp_path / "one") / "cache"
    )


def test_an_error_in_an_encoding_copy_fails_the_build_and_leaves_the_old_site(
    tmp_path, monkeypatch
):
    src = sample_folder(tmp_path / "in", 2)
    out = tmp_path / "site"
    reportgen.build_site(src, out, weights="random", workers=0)
    before = site_files(out)
    build = os.getpid()

    def full(*args):
        if os.getpid() != build:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(stage, "store_result", full)
    monkeypatch.setattr(stage, "encoder_processes", lambda device, workers: 2)
    shutil.copy(SAMPLE_PHOTOS[2], src / "p2.jpg")
    with pytest.raises(reportgen.ReportgenError, match="No space left"):
        reportgen.build_site(src, out, weights="random", workers=0)
    assert site_files(out) == before


def test_batches_handed_to_copies_are_stored_and_counted_when_the_build_stops_early(
    tmp_path, monkeypatch
):
    def store(keys, output, categories, cache):
        time.sleep(0.3)
        for key in keys:
            (tmp_path / key).write_text(str(os.getpid()))

    monkeypatch.setattr(stage, "_store_batch", store)
    cache = ResultCache(tmp_path / "cache", "fingerprint")
    with pytest.raises(KeyboardInterrupt), stage.Encoder(cache, 2) as encoder:
        encoder.submit(["a", "b"], None, [])
        encoder.submit(["c"], None, [])
        raise KeyboardInterrupt  # Ctrl-C while both copies work
    assert sorted(p.name for p in tmp_path.glob("?")) == ["a", "b", "c"]
    assert cache.stored == 3  # what the build says it kept
