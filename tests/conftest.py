"""Shared fixtures: seeded random weights saved as a .pth, small real photos, one built site.

Nothing here touches the network or needs a GPU.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torchvision.models import alexnet

from reportgen.cli import main
from reportgen.site.output import OutputFolder
from reportgen.site.states import HOME_VARIABLE

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PHOTOS = sorted((REPO / "inputs").glob("*.jpg"))
SEED = 1234


@pytest.fixture(scope="session", autouse=True)
def reportgen_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """reportgen's state and caches go to a folder of the test session's, never the user's
    (session-wide, so the session's own built sites use it too; subprocesses inherit it)."""
    home = tmp_path_factory.mktemp("reportgen-home")
    os.environ[HOME_VARIABLE] = str(home)
    return home


@pytest.fixture(autouse=True)
def own_state(reportgen_home: Path) -> Iterator[None]:
    """Each test's sites keep their state in a folder of the test's own. A site's state is found
    by the site's path, and pytest may hand a later test the tmp_path of a passed one (removed
    meanwhile): a test would then find the state, and the cache, of another's site. (Fixtures of
    a wider scope build their sites under the session's folder.) A patch of its own, which a
    test's ``monkeypatch.undo()`` leaves in place."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_VARIABLE, tempfile.mkdtemp(prefix="test-", dir=reportgen_home))
        yield


def sample_folder(folder: Path, count: int = 3) -> Path:
    """``folder`` holding ``count`` photos, p0.jpg, p1.jpg …, copies of the samples in turn (more
    are added to one that has some)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copy(SAMPLE_PHOTOS[i % len(SAMPLE_PHOTOS)], folder / f"p{i}.jpg")
    return folder


def state_of(out: Path) -> Path:
    """reportgen's state folder for the site at ``out`` (manifest, stat index, lock, cache)."""
    return OutputFolder(out).state


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test downloads weights or reads the user's torch cache: an empty TORCH_HOME, and any
    download attempt fails as it would offline (subprocesses inherit the environment)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(f"tests are offline ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, randomly initialised AlexNet state_dict, saved like a user's .pth."""
    torch.manual_seed(SEED)
    model = alexnet(weights=None)
    path = tmp_path_factory.mktemp("weights") / "alexnet-random.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def photos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the sample photos, one of them in a subfolder."""
    folder = tmp_path_factory.mktemp("photos")
    for i, photo in enumerate(SAMPLE_PHOTOS):
        target = folder / ("sub" if i % 2 else "") / photo.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(photo, target)
    return folder


@pytest.fixture(scope="session")
def built_site(
    tmp_path_factory: pytest.TempPathFactory, weights_file: Path, photos_dir: Path
) -> Path:
    """One site built through the CLI with --weights PATH and the default worker settings."""
    out = tmp_path_factory.mktemp("built") / "site"
    code = main(["build", str(photos_dir), "--out", str(out), "--weights", str(weights_file)])
    assert code == 0
    return out


@pytest.fixture
def ctrl_c_handled() -> Iterator[None]:
    """Ctrl-C handled as Python does by default while the test runs, whatever this process
    inherited: a shell without job control (as CI may be) starts a background command with SIGINT
    ignored. A process the test starts then begins with the default too (exec resets handled
    signals, not ignored ones)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def run_cli(*args: str) -> int:
    """Run the CLI in-process (torch is imported once per test session)."""
    return main(list(args))
