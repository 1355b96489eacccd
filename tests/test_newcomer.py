"""A newcomer's first hour: the mistakes new users make get a clear answer, and the words on the
pages and in --help mean something to someone who never read the study notes."""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from types import SimpleNamespace

import pytest
import torch

from reportgen.config import load_config
from reportgen.inference import stage

from .conftest import REPO, SAMPLE_PHOTOS, run_cli, sample_folder


def build(*args: str) -> int:
    return run_cli("build", *args, "--workers", "0")


def test_every_bad_key_and_value_of_a_yaml_file_is_reported_with_a_hint(tmp_path, capsys):
    config = tmp_path / "opts.yaml"
    config.write_text("batchsize: 32\nweights: pretrainned\n")
    code = build(str(tmp_path), "--config", str(config))
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "reportgen: error: invalid configuration:",
        f"  - unknown key 'batchsize' in {str(config)!r} (did you mean 'batch-size'?)",
        "  - weights: 'pretrainned' is neither 'pretrained', 'random' nor an existing file; "
        "did you mean 'pretrained'?",
    ]


def test_a_mistyped_weights_name_is_a_usage_error_not_a_missing_file(tmp_path, capsys):
    code = build(str(tmp_path), "--weights", "pretrainned", "--out", str(tmp_path / "s"))
    assert code == 2
    assert "did you mean 'pretrained'?" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_yaml_syntax_error_says_where(tmp_path, capsys):
    config = tmp_path / "opts.yaml"
    config.write_text("weights: random\nout: site\n  per-page: 3\n")
    assert build(str(tmp_path), "--config", str(config)) == 2
    assert capsys.readouterr().err.splitlines() == [
        "reportgen: error: invalid configuration:",
        f"  - config file {str(config)!r}: not valid YAML at line 3, column 11 "
        "(mapping values are not allowed here)",
    ]


def test_a_site_inside_the_input_folder_is_never_read_as_photos(tmp_path):
    src = tmp_path / "inputs"
    src.mkdir()
    for photo in SAMPLE_PHOTOS:
        shutil.copy(photo, src / photo.name)
    assert build(str(src), "--out", str(src / "site"), "--weights", "random") == 0
    assert build(str(src), "--out", str(tmp_path / "elsewhere"), "--weights", "random") == 0
    data = json.loads((tmp_path / "elsewhere" / "predictions.json").read_text())
    assert sorted(i["source"] for i in data["images"]) == sorted(p.name for p in SAMPLE_PHOTOS)


def test_the_model_page_names_the_layers_as_layers_takes_them(built_site):
    page = " ".join((built_site / "model.html").read_text().split())
    for name, module in [
        ("conv1", "features.0"),
        ("conv3", "features.6"),
        ("conv5", "features.10"),
    ]:
        assert f"<td><code>{module}</code></td><td><code>{name}</code></td>" in page


def test_the_closing_line_counts_pages_and_skipped_files_apart(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE_PHOTOS[0], src / "good.jpg")
    (src / "bad.jpg").write_text("not a photo")
    (src / "empty.png").write_bytes(b"")
    out = tmp_path / "site"
    assert build(str(src), "--out", str(out), "--weights", "random") == 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    published = sum(
        p.stat().st_size for p in out.rglob("*") if p.is_file() and ".reportgen" not in p.parts
    )
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"reportgen: wrote 1 photo page (1 computed on {device}, 0 from the cache) to "
        f"{out / 'index.html'} ({published / 1000:.1f} kB); 2 files skipped (see above)"
    )


def test_a_site_over_github_pages_limit_is_warned_about(tmp_path, monkeypatch, capsys):
    import reportgen.build

    monkeypatch.setattr(reportgen.build, "PAGES_LIMIT", 10_000)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE_PHOTOS[0], src / "good.jpg")
    warning = re.compile(
        r"^reportgen: the site is 0\.\d\d GB, over GitHub Pages' 1 GB limit: build it with "
        r"--lean \(and no --layers\), publish fewer photos, or use a static host without that "
        r"limit$",
        re.MULTILINE,
    )
    # Said again by a rebuild with nothing to do, as long as the site stays too large.
    for reused in ("0 from the cache", "all from the cache"):
        assert build(str(src), "--out", str(tmp_path / "site"), "--weights", "random") == 0
        err = capsys.readouterr().err
        assert len(warning.findall(err)) == 1
        assert reused in err.splitlines()[-1]


def test_a_lean_site_shows_one_grad_cam_and_is_lighter(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for photo in SAMPLE_PHOTOS[:2]:
        shutil.copy(photo, src / photo.name)
    sizes = {}
    for mode in ("full", "lean"):
        out = tmp_path / mode
        extra = ["--lean"] if mode == "lean" else []
        assert build(str(src), "--out", str(out), "--weights", "random", *extra) == 0
        page = (out / "photos").glob("*.html").__next__().read_text(encoding="utf-8")
        sizes[mode] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        assert page.count('class="heat"') == (1 if mode == "lean" else 5)
    assert sizes["lean"] < sizes["full"]
    capsys.readouterr()
    assert build(str(src), "--out", str(tmp_path / "x"), "--lean", "--layers", "conv3") == 2
    assert "a lean site draws conv1 only" in capsys.readouterr().err


NOTES = re.compile(r"\b(as (in )?the notes|the notes\b)", re.IGNORECASE)


def test_no_user_facing_text_points_at_notes_a_user_never_saw(built_site, capsys):
    with pytest.raises(SystemExit):
        run_cli("build", "--help")
    assert not NOTES.search(capsys.readouterr().out)
    for page in sorted(built_site.rglob("*.html")):
        assert not NOTES.search(page.read_text()), page.name
    readme = (REPO / "README.md").read_text()
    # The README may tell where the project came from, but never explain an option by it.
    assert not re.search(r"as (in )?the notes", readme)


def test_the_readme_shows_cpu_users_the_cpu_wheels():
    readme = (REPO / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme


def test_no_decoding_worker_is_started_without_a_batch_to_decode():
    five = [SimpleNamespace(size=1000)] * 5
    cpu = torch.device("cpu")
    assert stage.defaults(load_config({"workers": 999}), cpu, five) == (8, 1)
    assert stage.defaults(load_config({"workers": 999, "batch_size": 2}), cpu, five) == (2, 3)
    assert stage.defaults(load_config({"workers": 2, "batch_size": 2}), cpu, five) == (2, 2)
    assert stage.defaults(load_config({"workers": 0}), cpu, five) == (8, 0)
    assert stage.defaults(load_config({"workers": 4}), cpu, []) == (8, 0)


def test_more_workers_than_cores_is_said_once_in_reportgens_words(tmp_path, monkeypatch, capsys):
    # One core, for torch's DataLoader as for reportgen: three workers, one a batch, are too many.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    src = sample_folder(tmp_path / "in", 3)
    args = ["--out", str(tmp_path / "site"), "--weights", "random", "--batch-size", "1"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_cli("build", str(src), *args, "--workers", "9") == 0
    err = capsys.readouterr().err
    said = "--workers 9 starts 3 decoding workers on 1 core: those past one a core decode no faster"
    assert err.count(said) == 1, err
    assert not [w for w in caught if "DataLoader will create" in str(w.message)]
    assert "UserWarning" not in err
