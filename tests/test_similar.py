"""What AlexNet thinks is alike: fc7 codes, nearest photos, the map, near-duplicates.

Nearest photos are checked against brute-force NumPy over codes from a direct torchvision forward
pass (classifier[:6] of torchvision's AlexNet, after its own transforms).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import AlexNet_Weights, alexnet

from reportgen import interrupts, similar

from .conftest import SAMPLE_PHOTOS, run_cli, state_of


def brute_force(codes: np.ndarray, k: int = similar.NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Every pair's distance in float64; each row's k nearest others, ties by position."""
    c = codes.astype(np.float64)
    d = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def clustered_codes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, 4096))
    codes = centres[rng.integers(0, 8, n)] + 0.8 * rng.standard_normal((n, 4096))
    return np.maximum(codes, 0).astype(np.float16)


def find(codes: np.ndarray, names: list[str], keys: list[str], previous=None):
    return similar.find(names, keys, codes, previous)


def test_exact_search_equals_brute_force_and_copies_are_at_zero():
    codes = clustered_codes(200)
    codes[150] = codes[3]  # a copy
    names = [f"p{i:03d}" for i in range(200)]
    found = find(codes, names, names)
    order, dist = brute_force(codes)
    assert found.method == "exact"
    np.testing.assert_array_equal(found.nearest, order)
    np.testing.assert_allclose(found.distances, dist, rtol=1e-6)
    assert found.of(3)[0] == (150, 0.0)
    pairs = similar.near_duplicates(found)
    assert [(d.first, d.second, d.distance) for d in pairs] == [(3, 150, 0.0)]


def test_near_duplicate_pairs_read_as_a_list_of_pairs():
    rows = np.array([[0, 5, 1.0, 0.01], [2, 3, 2.0, 0.02], [1, 4, 3.0, 0.03]])
    pairs = similar.Duplicates(*(rows[:, c] if c > 1 else rows[:, c].astype(int) for c in range(4)))
    expected = [similar.Duplicate(int(a), int(b), d, r) for a, b, d, r in rows.tolist()]
    assert len(pairs) == 3 and list(pairs) == expected
    assert pairs[-1] == expected[-1] and pairs[1:] == expected[1:] and pairs[:0] == []
    assert type(pairs[0].first) is int and type(pairs[0].distance) is float
    with pytest.raises(IndexError):
        pairs[3]


def test_adding_and_removing_photos_updates_only_what_changed_and_matches_a_fresh_search():
    codes = clustered_codes(300, seed=1)
    names = [f"p{i:03d}" for i in range(300)]
    before = find(codes, names, names)
    # Remove 7 photos (some are others' neighbours), add 12, one a copy of a kept photo.
    gone = {5, 6, 40, 41, 42, 100, 299}
    kept = [i for i in range(300) if i not in gone]
    extra = clustered_codes(12, seed=2)
    extra[0] = codes[10]
    codes2 = np.concatenate([codes[kept], extra])
    names2 = [names[i] for i in kept] + [f"q{i:02d}" for i in range(12)]
    after = find(codes2, names2, names2, previous=before)
    assert after.method == "incremental"
    order, dist = brute_force(codes2)
    np.testing.assert_array_equal(after.nearest, order)
    np.testing.assert_allclose(after.distances, dist, rtol=1e-6)
    assert after.of(len(kept))[0] == (kept.index(10), 0.0)


def test_a_changed_photo_is_searched_again():
    codes = clustered_codes(100, seed=3)
    names = [f"p{i:03d}" for i in range(100)]
    before = find(codes, names, names)
    changed = codes.copy()
    changed[7] = clustered_codes(1, seed=9)[0]
    keys = list(names)
    keys[7] = "new bytes"
    after = find(changed, names, keys, previous=before)
    np.testing.assert_array_equal(after.nearest, brute_force(changed)[0])


def test_the_graph_search_finds_nearly_all_exact_neighbours(monkeypatch):
    """Past EXACT_LIMIT the faiss HNSW graph finds the candidates; distances stay exact."""
    monkeypatch.setattr(similar, "EXACT_LIMIT", 100)
    codes = clustered_codes(600, seed=4)
    names = [f"p{i:03d}" for i in range(600)]
    found = find(codes, names, names)
    order, dist = brute_force(codes)
    assert found.method == "faiss-hnsw"
    pairs = zip(found.nearest, order, strict=True)
    recall = np.mean([len(set(a) & set(b)) / len(b) for a, b in pairs])
    assert recall >= 0.95
    # Whatever was found is measured exactly, nearest first.
    c = codes.astype(np.float64)
    for i in range(0, 600, 50):
        want = np.sqrt(((c[found.nearest[i]] - c[i]) ** 2).sum(1))
        np.testing.assert_allclose(found.distances[i], want, rtol=1e-6)
        assert list(found.distances[i]) == sorted(found.distances[i])


def test_small_folders():
    one = find(clustered_codes(1), ["a"], ["a"])
    assert one.of(0) == []
    three = find(clustered_codes(3), ["a", "b", "c"], ["a", "b", "c"])
    assert [len(three.of(i)) for i in range(3)] == [2, 2, 2]


def test_saved_neighbours_round_trip(tmp_path):
    codes = clustered_codes(20)
    names = [f"ü{i}" for i in range(20)]
    found = find(codes, names, names)
    places = np.random.default_rng(0).random((20, 2))
    similar.save(tmp_path / "s.npz", found, places)
    loaded, loaded_places = similar.load(tmp_path / "s.npz")
    assert loaded.sources == found.sources and loaded.keys == found.keys
    np.testing.assert_array_equal(loaded.nearest, found.nearest)
    np.testing.assert_array_equal(loaded_places, places)
    (tmp_path / "s.npz").write_bytes(b"not an npz")
    assert similar.load(tmp_path / "s.npz") is None


# --- end to end -------------------------------------------------------------------------------


def reference_codes(weights_file: Path, paths: list[Path]) -> np.ndarray:
    """fc7 codes by a direct torchvision pass: transforms, features, avgpool, classifier[:6]."""
    model = alexnet(weights=None)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    model.eval()
    transform = AlexNet_Weights.IMAGENET1K_V1.transforms()
    with torch.no_grad():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        h = torch.flatten(model.avgpool(model.features(x)), 1)
        return model.classifier[:6](h).numpy()


@pytest.fixture(scope="module")
def alike_folder(tmp_path_factory) -> Path:
    """Class folders, an exact copy, a copy saved again as JPEG 75, and one resized to half."""
    folder = tmp_path_factory.mktemp("alike")
    for i, photo in enumerate(SAMPLE_PHOTOS):
        target = folder / ("tabby" if "chelsea" in photo.name else f"set{i % 2}") / photo.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(photo, target)
    chelsea = folder / "tabby" / "chelsea.jpg"
    (folder / "copies").mkdir()
    shutil.copy(chelsea, folder / "copies" / "exact.jpg")
    image = Image.open(chelsea)
    image.save(folder / "copies" / "q75.jpg", quality=75)
    image.resize((image.width // 2, image.height // 2)).save(folder / "copies" / "half.jpg")
    return folder


@pytest.fixture(scope="module")
def alike_site(alike_folder, weights_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("alike-site") / "site"
    code = run_cli("build", str(alike_folder), "--out", str(out), "--weights", str(weights_file),
                   "--decode", "exact")  # fmt: skip
    assert code == 0
    return out


def listed_similar(page: Path) -> list[tuple[str, float]]:
    html = page.read_text(encoding="utf-8")
    section = re.search(r'<section id="similar".*?</section>', html, re.S)
    assert section, page
    names = re.findall(r'alt="">(.*?) <span>', section.group(0))
    dists = re.findall(r"<span>([0-9.e+-]+)</span>", section.group(0))
    return [(n.replace("<wbr>", ""), float(d)) for n, d in zip(names, dists, strict=True)]


def test_similar_photos_match_brute_force_over_direct_torchvision_codes(
    alike_site, alike_folder, weights_file
):
    data = json.loads((alike_site / "predictions.json").read_text(encoding="utf-8"))
    sources = [img["source"] for img in data["images"]]
    codes = reference_codes(weights_file, [alike_folder / s for s in sources])
    c = codes.astype(np.float64)
    dist = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    for i, img in enumerate(data["images"]):
        listed = listed_similar(alike_site / img["page"])
        assert len(listed) == min(similar.NEIGHBOURS, len(sources) - 1)
        for (name, shown), following in zip(listed, [*listed[1:], None], strict=True):
            j = sources.index(name)
            # float16 codes: distances agree to about 3 significant digits.
            assert shown == pytest.approx(dist[i, j], rel=2e-2, abs=0.02 * dist[i].min())
            if following is not None:
                assert dist[i, j] <= dist[i, sources.index(following[0])] * 1.02
        # Nothing left out is nearer than the last listed (beyond float16 rounding).
        others = [j for j in range(len(sources)) if j != i and sources[j] not in dict(listed)]
        if others:
            assert min(dist[i, others]) >= dist[i, sources.index(listed[-1][0])] * 0.98


def test_near_duplicates_on_the_summary_are_the_planted_copies(alike_site):
    html = (alike_site / "summary.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="near-duplicates".*?</section>', html, re.S).group(0)
    items = re.findall(r"<li>(.*?)</li>", section, re.S)
    pairs = {
        frozenset(n.replace("<wbr>", "") for n in re.findall(r'">([^<]*(?:<wbr>[^<]*)*)</a>', li))
        for li in items
    }
    copies = ["tabby/chelsea.jpg", "copies/exact.jpg", "copies/q75.jpg", "copies/half.jpg"]
    assert pairs == {frozenset((a, b)) for a in copies for b in copies if a < b}
    assert "identical codes" in section


def test_photos_placed_among_the_landmarks_a_block_at_a_time_land_where_one_block_puts_them(
    monkeypatch,
):
    from reportgen import folder_map

    codes = clustered_codes(90, seed=3)
    names = [f"p{i:02d}" for i in range(90)]
    found = find(codes, names, [f"{i:064x}" for i in range(90)])
    monkeypatch.setattr(folder_map, "LANDMARKS", 30)
    monkeypatch.setattr(folder_map, "PLACE_BLOCK", 1000)
    whole = folder_map.layout(codes, found)
    monkeypatch.setattr(folder_map, "PLACE_BLOCK", 7)  # 60 photos to place: 8 blocks and a part
    # The same up to rounding: matrix products of other shapes may sum in another order.
    np.testing.assert_allclose(folder_map.layout(codes, found), whole, rtol=0, atol=1e-6)
    assert len(np.unique(whole.round(6), axis=0)) > 60  # placed, not left at one spot


@pytest.mark.parametrize("photos", [2, 3, 7])
def test_a_handful_of_photos_lie_where_scikit_learns_pca_puts_them(photos):
    """Below t-SNE's eight photos the map is the codes' two main directions, worked out with
    NumPy alone: the places of scikit-learn's PCA, each axis up to its sign (scikit-learn chose
    its signs otherwise before 1.5)."""
    import sklearn
    from sklearn.decomposition import PCA

    from reportgen import folder_map

    codes = clustered_codes(photos, seed=4)
    found = find(codes, [f"p{i}" for i in range(photos)], [f"{i:064x}" for i in range(photos)])
    places = folder_map.layout(codes, found)
    reference = PCA(min(2, photos - 1), svd_solver="full").fit_transform(codes.astype(np.float64))
    expected = np.zeros((photos, 2))
    expected[:, : reference.shape[1]] = reference
    signs = [
        s
        for s in itertools.product((1, -1), repeat=2)
        if np.allclose(places, folder_map._normalised(expected * s), rtol=0, atol=1e-9)
    ]
    assert signs, (places, folder_map._normalised(expected))
    if tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 5):
        assert (1, 1) in signs
    assert len(np.unique(places.round(6), axis=0)) == photos


def test_a_handful_of_photos_are_mapped_without_importing_scikit_learn():
    """Its import is 1.2 s, a fifth of a first build of the five sample photos."""
    script = (
        "import sys, numpy as np\n"
        "from reportgen import folder_map, similar\n"
        "codes = np.random.default_rng(0).random((5, 4096)).astype(np.float16)\n"
        "names = [f'{i:064x}' for i in range(5)]\n"
        "found = similar.find(names, names, codes)\n"
        "folder_map.layout(codes, found)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'openTSNE'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("photos", [300, 1100])  # exact neighbours, then Annoy's
def test_tsne_tells_the_maps_bar_as_it_goes_and_places_as_opentsne_alone_does(photos, monkeypatch):
    """The map's bar moves during t-SNE's iterations (2,000 landmarks are seconds of them), and
    neither telling it nor running on several cores moves a place from where openTSNE, on one
    thread with nothing to tell, puts it."""
    from openTSNE import TSNE

    from reportgen import folder_map

    monkeypatch.setattr(folder_map, "usable_cores", lambda: 4)  # whatever this machine has
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((6, 50))
    points = centres[rng.integers(0, 6, photos)] + rng.standard_normal((photos, 50))
    parts: list[int] = []
    places = folder_map._tsne(points, parts.append)
    alone = TSNE(
        perplexity=30.0,
        n_iter=350,
        negative_gradient_method="bh",
        n_jobs=1,
        random_state=folder_map.SEED,
        verbose=False,
    ).fit(points)
    assert np.array_equal(places, np.asarray(alone))
    # One part each 25 of its 250 + 350 iterations, the last at the end.
    assert len(parts) == 24 and sum(parts) == photos and min(parts) > 0


CTRL_C_IN_THE_QUAD_TREE = """
import os, signal
import numpy as np
import openTSNE.quad_tree as quad_tree
from reportgen import folder_map

class CtrlCInMin:  # numpy, but Ctrl-C comes as the quad tree's constructor calls np.min
    def __getattr__(self, name):
        return getattr(np, name)

    def min(self, *args, **kwargs):
        quad_tree.np = np
        os.kill(os.getpid(), signal.SIGINT)
        return np.min(*args, **kwargs)

quad_tree.np = CtrlCInMin()
try:
    folder_map._tsne(np.random.default_rng(0).normal(size=(200, 10)), lambda n: None)
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c_during_tsne_stops_the_map_without_crashing(ctrl_c_handled):
    """openTSNE's quad tree, stopped by an exception in its constructor, frees what it never
    made: a Ctrl-C landing there ended the build with a segmentation fault. The map holds Ctrl-C
    back until t-SNE's next callback. (In a process of its own: the old code crashed it.)"""
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_THE_QUAD_TREE],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "interrupted"), done.stderr[-2000:]


def test_signals_held_are_handled_when_the_block_ends_or_where_it_asks(ctrl_c_handled):
    reached = False
    with pytest.raises(KeyboardInterrupt), interrupts.held():
        os.kill(os.getpid(), signal.SIGINT)
        reached = True  # not raised here, but at the block's end
    assert reached
    with pytest.raises(KeyboardInterrupt), interrupts.held() as holding:
        holding.deliver()  # nothing held yet: nothing raised
        os.kill(os.getpid(), signal.SIGINT)
        holding.deliver()
        raise AssertionError("not reached")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_map_page_is_linked_everywhere_and_places_every_photo(alike_site):
    for page in [alike_site / "index.html", *sorted((alike_site / "photos").glob("*.html"))]:
        assert 'href="' in page.read_text() and re.search(
            r'<a href="(\.\./)?map\.html">Map</a>', page.read_text(encoding="utf-8")
        ), page
    text = (alike_site / "map-data.js").read_text(encoding="ascii")
    data = json.loads(text.removeprefix("reportgenMap(").removesuffix(");\n"))
    pages = sorted(p.stem for p in (alike_site / "photos").glob("*.html"))
    assert sorted(p[3] for p in data["points"]) == pages
    assert all(0 <= p[0] <= data["scale"] and 0 <= p[1] <= data["scale"] for p in data["points"])
    assert all((alike_site / "img" / f"{p[4]}{data['picture']}").is_file() for p in data["points"])
    assert data["by"] == "true class"  # tabby/ names a class
    html = (alike_site / "map.html").read_text(encoding="utf-8")
    assert 'id="map"' in html and "map-data.js" in html


def test_a_map_built_afresh_is_byte_identical(alike_folder, weights_file, alike_site, tmp_path,
                                              monkeypatch):  # fmt: skip
    monkeypatch.setenv("REPORTGEN_HOME", str(tmp_path / "elsewhere"))
    out = tmp_path / "again"
    assert run_cli("build", str(alike_folder), "--out", str(out), "--weights",
                   str(weights_file), "--decode", "exact") == 0  # fmt: skip
    assert (out / "map-data.js").read_bytes() == (alike_site / "map-data.js").read_bytes()
    for page in (alike_site / "photos").glob("*.html"):
        assert listed_similar(out / "photos" / page.name) == listed_similar(page)


def test_adding_photos_updates_neighbours_and_map_without_rerunning_the_rest(
    alike_folder, weights_file, tmp_path, capsys
):
    folder = tmp_path / "grow"
    shutil.copytree(alike_folder, folder)
    out = tmp_path / "site"
    args = ["--out", str(out), "--weights", str(weights_file), "--decode", "exact"]
    assert run_cli("build", str(folder), *args) == 0
    before = json.loads((out / "map-data.js").read_text().removeprefix("reportgenMap(")[:-3])
    shutil.copy(SAMPLE_PHOTOS[0], folder / "zz-new.jpg")
    Image.open(SAMPLE_PHOTOS[1]).rotate(90).save(folder / "aa-new.jpg")
    capsys.readouterr()
    assert run_cli("build", str(folder), *args) == 0
    # One is a copy of a photo already there: its results come from the cache.
    assert re.search(r"\(1 computed on \w+, 9 from the cache\)", capsys.readouterr().err)
    after = json.loads((out / "map-data.js").read_text().removeprefix("reportgenMap(")[:-3])
    old = {p[3]: p[:2] for p in before["points"]}
    assert all(p[:2] == old[p[3]] for p in after["points"] if p[3] in old)  # nobody moved
    assert len(after["points"]) == len(before["points"]) + 2
    # The neighbours equal a fresh build's.
    fresh = tmp_path / "fresh"
    assert run_cli("build", str(folder), "--out", str(fresh), *args[2:]) == 0
    for page in (fresh / "photos").glob("*.html"):
        assert listed_similar(out / "photos" / page.name) == listed_similar(page)
    saved = similar.load(state_of(out) / "similar.npz")
    assert saved is not None and len(saved[0].sources) == len(after["points"])


def test_codes_widen_alike_with_torch_and_without(monkeypatch):
    """float16 to float32 through torch when the build has it, else NumPy: the same numbers."""
    codes = np.random.default_rng(3).standard_normal((300, 64)).astype(np.float16)
    codes[0, :4] = [np.inf, -np.inf, np.nan, 6e-8]  # and a subnormal
    with_torch = similar.widen(codes)
    into = np.empty(codes.shape, np.float32)
    monkeypatch.delitem(sys.modules, "torch")
    assert similar.widen(codes).tobytes() == with_torch.tobytes()
    assert similar.widen(codes, into) is into and into.tobytes() == with_torch.tobytes()
