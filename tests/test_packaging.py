"""A plain (non-editable) wheel install carries the templates and static files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import reportgen, sys
from reportgen.site.pages import environment, STATIC_FILES
from importlib import resources
assert reportgen.__file__.startswith(sys.argv[1]), reportgen.__file__
env = environment()
for name in ("index.html", "photo.html", "kernels.html", "model.html", "_partials/top5.html"):
    env.get_template(name)
static = resources.files("reportgen.templates.static")
for name in STATIC_FILES:
    assert static.joinpath(name).read_bytes(), name
print("ok", reportgen.__file__)
"""


def test_wheel_install_finds_templates(tmp_path):
    dist = tmp_path / "dist"
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
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheels = list(dist.glob("reportgen-*.whl"))
    assert len(wheels) == 1
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
