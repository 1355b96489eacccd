"""The Pages workflow builds the site the way the README says, and deploys it with the
permissions and concurrency of GitHub's static-site starter workflow."""

from __future__ import annotations

import yaml

from .conftest import REPO


def test_pages_workflow_builds_and_deploys_the_site():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "pages.yml").read_text())
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert workflow["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    build = workflow["jobs"]["build"]["steps"]
    uses = [step.get("uses", "").split("@")[0] for step in build]
    runs = [step.get("run", "") for step in build]
    assert uses.count("actions/cache") == 2
    assert "actions/configure-pages" in uses and "actions/upload-pages-artifact" in uses
    assert any(r.startswith("reportgen build inputs/ --out site/") for r in runs)
    cached = {
        step["with"]["path"] for step in build if step.get("uses", "").startswith("actions/cache")
    }
    assert cached == {"~/.cache/torch/hub/checkpoints", ".reportgen-cache"}
    assert any("--cache .reportgen-cache" in r for r in runs)
    upload = next(s for s in build if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"].rstrip("/") == "site"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["steps"][0]["uses"].startswith("actions/deploy-pages@")
