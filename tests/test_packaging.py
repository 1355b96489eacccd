"""A plain (non-editable) wheel install carries every module, the templates and static files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What a wheel is built from: a source tree as a clean clone has it. Building in the checkout
# itself would reuse its build/ folder, whose leftovers once hid three packages missing from the
# wheel (and the editable install hid them from the probe).
SOURCES = ("pyproject.toml", "README.md", "reportgen", "templates")

PROBE = """
import reportgen, sys
from reportgen.site.pages import environment, STATIC_FILES
from importlib import resources
import reportgen.site, reportgen.inference, reportgen.decoding
for module in (reportgen, reportgen.site, reportgen.inference, reportgen.decoding):
    assert module.__file__.startswith(sys.argv[1]), module.__file__
env = environment()
for name in ("index.html", "photo.html", "kernels.html", "model.html", "_partials/top5.html"):
    env.get_template(name)
static = resources.files("reportgen.templates.static")
for name in STATIC_FILES:
    assert static.joinpath(name).read_bytes(), name
print("ok", reportgen.__file__)
"""


def source_tree(folder: Path) -> Path:
    folder.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, folder / name)
    return folder


def test_wheel_install_finds_every_module_and_the_templates(tmp_path):
    dist, source = tmp_path / "dist", source_tree(tmp_path / "source")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheels = list(dist.glob("reportgen-*.whl"))
    assert len(wheels) == 1
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "reportgen").rglob("*.py")}
    packed = set(zipfile.ZipFile(wheels[0]).namelist())
    assert modules - packed == set(), "modules missing from the wheel"
    target = tmp_path / "installed"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheels[0]),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(target)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith("ok ")
