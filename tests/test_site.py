"""The built site: links, names, escaping, bad files, and the user's own files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import hypothesis
import markupsafe
import pytest
from hypothesis import strategies as st
from PIL import Image

from reportgen.records import PhotoRecord, Prediction
from reportgen.site.pages import _breakable, _visible, image_line

from .conftest import SAMPLE_PHOTOS, run_cli
from .htmltools import images, links

AWKWARD_NAMES = ['a <b>&"quote\'s".jpg', "café ü.jpg", "with space.JPG"]


def assert_links_resolve(site: Path) -> int:
    """Every href/src in every page is relative and names a file inside the site."""
    count = 0
    root = site.resolve()
    for page in site.rglob("*.html"):
        for url in links(page.read_text(encoding="utf-8")):
            parts = urlsplit(url)
            if parts.scheme == "data":
                continue  # inline pictures (the Grad-CAM maps) fetch nothing
            assert not parts.scheme and not parts.netloc, f"{page.name}: absolute URL {url}"
            assert not url.startswith("/"), f"{page.name}: root-relative URL {url}"
            if not parts.path:
                continue  # a fragment such as #main
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_relative_to(root), f"{page.name}: {url} leaves the site"
            assert target.is_file(), f"{page.name}: {url} does not exist"
            count += 1
    return count


def test_every_link_resolves_inside_the_site(built_site):
    assert assert_links_resolve(built_site) > 30
    assert (built_site / ".nojekyll").is_file()  # for publishing from a branch


def test_pages_show_what_the_issue_lists(built_site):
    data = json.loads((built_site / "predictions.json").read_text(encoding="utf-8"))
    index = (built_site / "index.html").read_text(encoding="utf-8")
    assert "5 photos" in index
    for entry in data["images"]:
        assert f'href="{entry["page"]}"' in index
        page = (built_site / entry["page"]).read_text(encoding="utf-8")
        assert "3×224×224" in page and "64×3×11×11" in page and "64×55×55" in page
        assert entry["source"] in page
        assert f"{entry['top5'][0]['probability'] * 100:.2f}%" in page
        imgs = images(page)
        assert all("alt" in img for img in imgs)
        # The notes' three pictures and five Grad-CAM maps say what they show; the crops under
        # the heat maps repeat the first picture and are marked decorative (alt="").
        assert len([img for img in imgs if img["alt"]]) == 8
    model = (built_site / "model.html").read_text(encoding="utf-8")
    assert "61,100,840" in model  # AlexNet's parameter count
    assert "256×6×6" in model and "1000" in model
    kernels = (built_site / "kernels.html").read_text(encoding="utf-8")
    assert "64×3×11×11" in kernels


def test_prev_next_walk_every_photo_in_order(built_site):
    data = json.loads((built_site / "predictions.json").read_text(encoding="utf-8"))
    pages = [e["page"] for e in data["images"]]
    for i, page in enumerate(pages):
        html = (built_site / page).read_text(encoding="utf-8")
        if i + 1 < len(pages):
            assert f'href="{Path(pages[i + 1]).name}" rel="next"' in html
        else:
            assert 'rel="next"' not in html


@pytest.fixture(scope="module")
def awkward_site(tmp_path_factory, weights_file):
    """Awkward names, a duplicate name in two folders, and files that are not good photos."""
    src = tmp_path_factory.mktemp("awkward")
    photo = SAMPLE_PHOTOS[0]
    for name in AWKWARD_NAMES:
        shutil.copy(photo, src / name)
    for folder in ("one", "two"):
        (src / folder).mkdir()
        shutil.copy(photo, src / folder / "same.jpg")
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.png").write_text("this is not a picture")
    data = photo.read_bytes()
    (src / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("1", (20000, 10000)).save(src / "bomb.png")
    (src / ".hidden.jpg").write_bytes(data)
    (src / "notes.txt").write_text("ignored: not an image extension")
    out = tmp_path_factory.mktemp("awkward-out") / "site"
    return src, out


def test_bad_files_are_skipped_with_a_reason_and_the_build_goes_on(
    awkward_site, capsys, weights_file
):
    src, out = awkward_site
    code = run_cli(
        "build", str(src), "--out", str(out), "--weights", str(weights_file), "--workers", "0"
    )
    assert code == 0
    err = capsys.readouterr().err.splitlines()
    reasons = {
        "bomb.png": "too large",
        "empty.jpg": "empty file",
        "text.png": "not an image Pillow can read",
        "truncated.jpg": "truncated image data",
    }
    for name, reason in reasons.items():
        line = next(line for line in err if name in line)
        assert line.startswith(f"reportgen: skipped {name}: {reason}")
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert [s["source"] for s in data["skipped"]] == sorted(reasons)
    index = (out / "index.html").read_text(encoding="utf-8")
    for name in reasons:
        assert f"<code>{name}</code>" in index
    assert sorted(e["source"] for e in data["images"]) == sorted(
        [*AWKWARD_NAMES, "one/same.jpg", "two/same.jpg"]
    )
    assert_links_resolve(out)


def test_awkward_names_are_escaped_and_pages_unique(awkward_site):
    src, out = awkward_site
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    pages = [e["page"] for e in data["images"]]
    assert len(set(pages)) == len(pages)
    for page in pages:
        assert all(c.isascii() and (c.isalnum() or c in "-/._") for c in page), page
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<b>" not in html
    assert "a &lt;b&gt;&amp;&#34;quote&#39;s&#34;.jpg" in html
    assert "café ü.jpg" in html


def test_refuses_a_non_empty_folder_that_is_not_a_site(tmp_path, photos_dir, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert run_cli("build", str(photos_dir), "--out", str(out), "--weights", "random") == 2
    assert capsys.readouterr().err == (
        f"reportgen: error: output folder '{out}' is not empty and is not a reportgen site; "
        "choose another --out, empty it, or pass --force to add the site beside its files\n"
    )
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_rebuild_keeps_the_users_files_and_drops_removed_photos(tmp_path, weights_file):
    src = tmp_path / "in"
    src.mkdir()
    for photo in SAMPLE_PHOTOS[:3]:
        shutil.copy(photo, src / photo.name)
    out = tmp_path / "site"
    args = ("build", str(src), "--out", str(out), "--weights", str(weights_file), "--workers", "0")
    assert run_cli(*args) == 0
    (out / "CNAME").write_text("photos.example.org")
    first = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    removed = first["images"][0]
    (src / removed["source"]).unlink()
    assert run_cli(*args) == 0
    assert (out / "CNAME").read_text() == "photos.example.org"
    assert not (out / removed["page"]).exists()
    second = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert len(second["images"]) == 2
    assert len(list((out / "img").glob("*-input.jpg"))) == 2
    assert not (out / ".reportgen-staging").exists()
    assert_links_resolve(out)


@pytest.mark.parametrize(
    ("target", "page"),
    [
        ("index.html", "index.html"),
        ("assets/style.css", "index.html"),
        ("assets/style.css", "photos/a.html"),
        ("photos/b.html", "photos/a.html"),
        ("img/x.jpg", "photos/a.html"),
        ("index.html", "a/b/c.html"),
        ("a/bc/d.html", "a/b/c.html"),
        ("photosx/y.html", "photos/a.html"),
    ],
)
def test_rel_agrees_with_posixpath(target, page):
    import posixpath

    from reportgen.site.pages import rel

    assert rel(target, page) == posixpath.relpath(target, posixpath.dirname(page) or ".")


def test_a_label_of_thousands_of_photos_costs_the_filter_what_the_filter_shows():
    """Predictions concentrate (thousands of photos of one class): a shard keeps a label's count
    and the first FILTER_SHOWN of its photos, in folder order, and stays small."""
    import hashlib
    import json
    import re

    from reportgen.records import LayerRange, PhotoRecord, Prediction
    from reportgen.site import pages

    photos = [
        PhotoRecord(width=1, height=1, frames=1,
                    top5=(Prediction(18, "magpie" if i % 500 else "mailbag", 0.5),),
                    conv1_mean=(), conv1_max=(), ranges=(LayerRange("conv1", 0, 1),),
                    source=f"p{i:05d}.jpg", key=hashlib.sha256(str(i).encode()).hexdigest())
        for i in range(5000)
    ]  # fmt: skip
    files = pages.search_index(pages.SiteContent(photos=photos, skipped=(), model=None, per_page=9))
    data = files["search/6d-61.js"].decode()
    assert len(data) < 40_000
    labels = json.loads(re.fullmatch(r'reportgenShard\("6d-61", (.*)\);\n', data).group(1))
    counts = {label: count for label, count, _ in labels}
    assert counts == {"magpie": 4990, "mailbag": 10}
    shown = {label: [p[1] for p in ps] for label, _, ps in labels}
    assert shown["magpie"] == [p.source for p in photos if p.top5[0].label == "magpie"][:120]
    assert len(shown["mailbag"]) == 10


def test_filter_shards_hold_every_match_and_stay_small(monkeypatch):
    """The filter's shards, split where large (made small here to split often), hold exactly the
    photos whose label has a word starting with a query, wherever the browser looks for them."""
    import hashlib
    import json
    import re

    from torchvision.models import AlexNet_Weights

    from reportgen.records import LayerRange, PhotoRecord, Prediction
    from reportgen.site import pages

    monkeypatch.setattr(pages, "SHARD_BYTES", 4096)
    labels = AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    photos = [
        PhotoRecord(width=1, height=1, frames=1,
                    top5=(Prediction(i % 1000, labels[(i * 7) % 1000], 0.5),),
                    conv1_mean=(), conv1_max=(), ranges=(LayerRange("conv1", 0, 1),),
                    source=f"p{i:05d}.jpg", key=hashlib.sha256(str(i).encode()).hexdigest())
        for i in range(3000)
    ]  # fmt: skip
    files = pages.search_index(pages.SiteContent(photos=photos, skipped=(), model=None, per_page=9))
    keys = set(json.loads(files.pop("search/keys.js").decode()[len("reportgenShardKeys(") : -3]))
    shards = {}
    for path, data in files.items():
        key, body = re.fullmatch(r'reportgenShard\("(.*?)", (.*)\);\n', data.decode()).groups()
        shards[key] = {photo[1] for _, _, shown in json.loads(body) for photo in shown}
        assert path == f"search/{key}.js" and key in keys
        assert len(data) <= 4096 or key.count("-") == pages.MAX_SHARD_LETTERS - 1
    assert any(k.count("-") >= 2 for k in keys), "nothing was split"

    def shard_for(query):  # filter.js's shardFor
        for letters in range(2, 5):
            key = pages.shard_key(query, letters)
            if key in keys:
                return key
            if not any(k.startswith(key + "-") for k in keys):
                return None
            if len(query) <= letters:
                return ""
        return None

    for query in ("re", "ret", "retr", "sp", "spi", "ca", "cat", "tabby", "dog", "zz", "ze"):
        expected = {
            p.source for p in photos
            if any(w.startswith(query) for w in re.split(r"[^0-9a-z]+", p.top5[0].label.lower()))
        }  # fmt: skip
        key = shard_for(query)
        if key == "":
            assert len(query) < 4  # "type another letter"
            continue
        found = set() if key is None else shards[key]
        matching = {
            s for s in found
            if any(w.startswith(query) for w in re.split(r"[^0-9a-z]+",
                   next(p for p in photos if p.source == s).top5[0].label.lower()))
        }  # fmt: skip
        assert matching == expected, query


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    source=st.text(min_size=1),
    labels=st.lists(st.text(), min_size=1, max_size=5),
    probabilities=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
    index=st.integers(0, 10**6),
)
def test_a_photo_line_of_predictions_json_is_what_json_writes(source, labels, probabilities, index):
    """predictions.json's lines are put together by hand for speed: the same text as json.dumps."""
    top5 = tuple(Prediction(index + i, label, probabilities[i]) for i, label in enumerate(labels))
    record = PhotoRecord(1, 1, 1, top5, (), (), (), source=source)
    expected = {
        "source": source,
        "page": record.page,
        "top5": [
            {"index": t.index, "label": t.label, "probability": round(t.probability, 6)}
            for t in top5
        ],
    }
    assert image_line(record) == json.dumps(expected, ensure_ascii=False)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    name=st.text(alphabet=st.sampled_from("ab/_.-&<>'\"\\1é日 "), max_size=30) | st.text()
)
def test_a_breakable_name_is_each_part_escaped_with_a_break_after_each_separator(name):
    """The filter finds separators in the escaped name, for speed: the same markup as escaping
    each part apart and adding <wbr> after each separator (of the name as a page shows it: its
    control characters written as escapes, which hold no separator)."""
    parts = re.split(r"([/_.\-])", _visible(name))
    expected = "".join(
        str(markupsafe.escape(part)) + ("<wbr>" if part in ("/", "_", ".", "-") else "")
        for part in parts
    )
    got = _breakable(name)
    assert isinstance(got, markupsafe.Markup) and str(got) == expected
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", got)
