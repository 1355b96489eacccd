"""The GitHub workflows: tests on every push and pull request, the Pages deployment only after
they pass on main, torch's CPU-only wheels on GitHub's GPU-less runners, and a clean audit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True


def test_tests_run_on_every_push_and_pull_request_as_ci_does():
    workflow = load("tests.yml")
    on = triggers(workflow)
    assert "pull_request" in on and "workflow_call" in on
    # A push to main runs them through pages.yml, which must not publish without them.
    assert on["push"] == {"branches-ignore": ["main"]}
    job = workflow["jobs"]["test"]
    assert job["container"].startswith("python:3.11-bookworm")  # Debian's chromium, as .ci/run
    runs = [step.get("run", "") for step in job["steps"]]
    assert "bash .ci/run" in runs
    run_step = next(s for s in job["steps"] if s.get("run") == "bash .ci/run")
    assert run_step["env"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    cached = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert cached and cached[0]["with"]["path"] == "~/.cache/pip"


def test_ci_run_takes_torch_from_the_given_index_and_runs_the_readme_command():
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert '${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==' in script
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = "pip install -e '.[test,ray]' && pytest"
    assert command in readme and script.rstrip().endswith(command)


def test_pages_deploys_only_after_the_tests_pass():
    workflow = load("pages.yml")
    assert set(triggers(workflow)) == {"push", "workflow_dispatch"}
    assert triggers(workflow)["push"] == {"branches": ["main"]}
    assert workflow["permissions"] == {}
    assert workflow["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    jobs = workflow["jobs"]
    assert jobs["tests"]["uses"].endswith(".github/workflows/tests.yml")
    assert jobs["build"]["needs"] == "tests" and jobs["deploy"]["needs"] == "build"
    # Only the deploying job may write to Pages or mint a token.
    assert jobs["build"]["permissions"] == {"contents": "read"}
    assert jobs["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}


def test_pages_builds_the_site_with_cpu_torch_and_both_caches():
    build = load("pages.yml")["jobs"]["build"]["steps"]
    uses = [step.get("uses", "").split("@")[0] for step in build]
    runs = "\n".join(step.get("run", "") for step in build)
    assert uses.count("actions/cache") == 2
    assert "actions/configure-pages" in uses and "actions/upload-pages-artifact" in uses
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in runs
    assert "reportgen build inputs/ --out site/ --cache .reportgen-cache" in runs
    cached = {step["with"]["path"] for step in build if "actions/cache@" in step.get("uses", "")}
    assert cached == {"~/.cache/torch/hub/checkpoints", ".reportgen-cache"}
    upload = next(s for s in build if "upload-pages-artifact@" in s.get("uses", ""))
    assert upload["with"]["path"].rstrip("/") == "site"
    deploy = load("pages.yml")["jobs"]["deploy"]
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["steps"][0]["uses"].startswith("actions/deploy-pages@")


@pytest.mark.parametrize("name", ["tests.yml", "pages.yml"])
def test_every_action_is_pinned_to_a_commit_and_checkouts_keep_no_credentials(name):
    for job in load(name)["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step:
                assert PINNED.match(step["uses"]), step["uses"]
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def _zizmor() -> str:
    found = shutil.which("zizmor") or str(Path(sys.executable).with_name("zizmor"))
    if not Path(found).exists():
        pytest.skip("zizmor is not installed (pip install -e '.[test]')")
    return found


def test_the_workflows_pass_zizmors_audit():
    result = subprocess.run(
        [_zizmor(), "--offline", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == "[]", result.stdout
    assert result.returncode == 0, result.stderr
