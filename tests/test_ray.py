"""--engine ray: the model stage on Ray Data gives the local engine's site, byte for byte.

Runs on a local Ray (2 CPUs are enough): once started by the build itself, once as a cluster
started outside it (``ray start --head`` and a second node), and once with a model worker that
dies mid-job. Skipped where ray is not installed, unless REPORTGEN_REQUIRE_RAY=1 (as .ci/run
sets) turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reportgen
import reportgen.build
from reportgen.errors import BuildError

from .conftest import REPO, SAMPLE_PHOTOS, run_cli

REQUIRED = os.environ.get("REPORTGEN_REQUIRE_RAY") == "1"

try:
    import ray
except ImportError:
    ray = None
    if REQUIRED:
        raise
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed: pip install '.[ray]'")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Photos in two folders, one file that is not a photo, one that cannot be decoded."""
    folder = tmp_path_factory.mktemp("ray-photos")
    for i, photo in enumerate(SAMPLE_PHOTOS):
        target = folder / ("album" if i % 2 else "") / photo.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(photo, target)
    (folder / "broken.jpg").write_bytes(SAMPLE_PHOTOS[0].read_bytes()[:300])
    return folder


def site_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local_site(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray-local") / "site"
    reportgen.build_site(photos, out, weights="random")
    return out


def same_site(out: Path, reference: Path) -> None:
    built, expected = site_files(out), site_files(reference)
    assert built.keys() == expected.keys()
    differ = [name for name in expected if built[name] != expected[name]]
    assert not differ, f"{len(differ)} files differ, e.g. {differ[:5]}"


@needs_ray
def test_the_ray_engine_builds_the_local_engines_site(photos, local_site, tmp_path, capsys):
    out = tmp_path / "site"
    assert run_cli("build", str(photos), "--out", str(out), "--weights", "random",
                   "--engine", "ray") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "skipped broken.jpg: " in err  # with its reason, as the local engine says it
    assert "computed on ray (cpu)" in err
    same_site(out, local_site)
    assert not ray.is_initialized()  # the Ray it started is shut down


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """A Ray cluster started outside the build, as a user with a cluster has one: a head and a
    second node on this machine."""
    bin_dir = Path(sys.executable).parent
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    start = [str(bin_dir / "ray"), "start", "--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run([*start, "--head", "--port", str(port), "--include-dashboard", "false"],
                   check=True, capture_output=True, env=env)  # fmt: skip
    try:
        subprocess.run([*start, "--address", address], check=True, capture_output=True, env=env)
        yield address
    finally:
        subprocess.run([str(bin_dir / "ray"), "stop", "--force"], capture_output=True, env=env)


@needs_ray
def test_a_cluster_started_outside_the_build_gives_the_same_site(
    photos, local_site, tmp_path, cluster
):
    out = tmp_path / "site"
    result = reportgen.build_site(photos, out, weights="random", engine="ray", ray_address=cluster)
    assert result.computed == len(SAMPLE_PHOTOS)
    same_site(out, local_site)


@needs_ray
def test_a_model_worker_that_dies_mid_job_is_replaced_and_the_site_is_the_same(
    photos, local_site, tmp_path, cluster
):
    """The first model call on the cluster kills its worker process (tests/ray_faults.py): Ray
    restarts the actor and runs the batch again."""
    marker = tmp_path / "died"
    runtime_env = {
        "worker_process_setup_hook": "tests.ray_faults.die_once",
        "env_vars": {"REPORTGEN_TEST_DIE_ONCE": str(marker), "PYTHONPATH": str(REPO)},
    }
    ray.init(address=cluster, runtime_env=runtime_env, logging_level="ERROR")
    try:
        out = tmp_path / "site"
        reportgen.build_site(photos, out, weights="random", engine="ray", batch_size=2)
    finally:
        ray.shutdown()
    assert marker.is_file()  # a worker did die
    reference = tmp_path / "reference"
    reportgen.build_site(photos, reference, weights="random", batch_size=2)
    same_site(out, reference)


STOPPED_ON_THE_FIRST_RESULT = """
import os, signal, sys
from reportgen.cli import main
from reportgen.inference import ray_engine

keep = ray_engine._keep

def keep_then_stop(*args, **kwargs):
    keep(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)  # kill, timeout, a CI job cancelled

ray_engine._keep = keep_then_stop
sys.exit(main(sys.argv[1:]))
"""


@needs_ray
def test_sigterm_stops_a_ray_build_as_ctrl_c_does_and_says_only_that(photos, tmp_path):
    """ray.init sets a SIGTERM handler of its own (sys.exit): the build's is put back. (Run in
    a process of its own: the output Ray Data writes is out of reach of pytest's capture.)"""
    out = tmp_path / "site"
    args = ["build", str(photos), "--out", str(out), "--weights", "random", "--engine", "ray"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", STOPPED_ON_THE_FIRST_RESULT, *args],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines()[-1].startswith(
        "reportgen: error: interrupted; the previous site is unchanged, and the "
    )
    assert not out.exists()
    # Nor are Ray Data's own lines shown (the dataset's start and plan, its progress bars being
    # off, an argument of the build's deprecated): the local engine shows none either.
    for line in done.stderr.splitlines():
        assert not re.search(r"\s(INFO|WARNING)\s", line), line


def test_the_ray_engine_without_ray_is_one_line_and_exit_2(photos, tmp_path, capsys, monkeypatch):
    real = reportgen.build.importlib.util.find_spec
    monkeypatch.setattr(
        reportgen.build.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ray" else real(name, *a),
    )
    code = run_cli("build", str(photos), "--out", str(tmp_path / "s"), "--engine", "ray")
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "reportgen: error: --engine ray needs the ray extra: pip install 'reportgen[ray]'"
    )


@needs_ray
def test_an_unreachable_cluster_is_one_line_within_seconds(photos, tmp_path, capsys):
    started = time.monotonic()
    code = run_cli("build", str(photos), "--out", str(tmp_path / "s"), "--weights", "random",
                   "--engine", "ray", "--ray-address", f"127.0.0.1:{_free_port()}")  # fmt: skip
    assert code == 1 and time.monotonic() - started < 15
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("reportgen: error: cannot reach the Ray cluster at '127.0.0.1:")
    assert "check --ray-address or RAY_ADDRESS" in line


@needs_ray
def test_a_worker_that_cannot_read_a_photo_here_means_no_shared_file_system(tmp_path):
    from reportgen.inference.ray_engine import _keep

    photo = tmp_path / "p.jpg"
    shutil.copy(SAMPLE_PHOTOS[0], photo)
    row = {"key": "k", "error": "cannot be read now (No such file or directory)", "lasting": False}
    with pytest.raises(BuildError, match="must be at the same path on every node"):
        _keep(row, None, {"k": photo}, {})
    unread: dict[str, str] = {}
    _keep(row, None, {"k": tmp_path / "gone.jpg"}, unread)  # gone here too: removed meanwhile
    assert unread == {"k": "cannot be read now (No such file or directory)"}
