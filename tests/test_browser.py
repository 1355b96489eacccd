"""The built site in a real browser, served under a sub-path as GitHub Pages does, and the
Nu HTML Checker over every page.

Needs Debian's chromium, the playwright package (its driver, not its browsers) and, from
`npm ci`, axe-core and vnu-jar with a Java runtime. Where they are missing these tests skip,
unless REPORTGEN_REQUIRE_BROWSER=1 (as .ci/run sets) turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, SAMPLE_PHOTOS, run_cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
VNU = REPO / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
SCREENSHOTS = Path(os.environ.get("REPORTGEN_SCREENSHOTS", REPO / "test-artifacts" / "screenshots"))
REQUIRED = os.environ.get("REPORTGEN_REQUIRE_BROWSER") == "1"
SUB_PATH = "/REPO/"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need(condition: bool, what: str) -> None:
    if condition:
        return
    if REQUIRED:
        pytest.fail(f"{what} is required (REPORTGEN_REQUIRE_BROWSER=1) but missing")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site with pagination, an awkward file name and a skipped file."""
    src = tmp_path_factory.mktemp("browser-in")
    for photo in SAMPLE_PHOTOS:
        shutil.copy(photo, src / photo.name)
    shutil.copy(SAMPLE_PHOTOS[0], src / 'odd <name> & "quotes".jpg')
    shutil.copy(SAMPLE_PHOTOS[1], src / "a_very_long_holiday_photo_name_2024-07-14_beach.jpg")
    (src / "broken.jpg").write_text("not a photo")
    out = tmp_path_factory.mktemp("browser-out") / "site"
    assert (
        run_cli(
            "build",
            str(src),
            "--out",
            str(out),
            "--weights",
            "random",
            "--workers",
            "0",
            "--per-page",
            "4",
            "--quiet",
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def base_url(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site served at http://127.0.0.1:PORT/REPO/ by a static server."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(site, root / SUB_PATH.strip("/"), ignore=shutil.ignore_patterns(".reportgen"))

    with _served(root) as port:
        yield f"http://127.0.0.1:{port}{SUB_PATH}"


@contextlib.contextmanager
def _served(folder: Path) -> Iterator[int]:
    """``folder`` served over HTTP by a static server, on the port given; quiet: no line a
    request, and no traceback when the browser drops a connection it no longer needs."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright (pip)")
    need(Path(CHROMIUM).is_file(), "chromium (Debian package)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Visit:
    """One page load with everything that went wrong on the way."""

    def __init__(self, browser, url: str, *, dark: bool = False, width: int = 1280) -> None:
        self.context = browser.new_context(
            viewport={"width": width, "height": 900}, color_scheme="dark" if dark else "light"
        )
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on(
            "requestfailed", lambda r: self.problems.append(f"failed: {r.url} ({r.failure})")
        )
        self.page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"{r.status}: {r.url}"),
        )
        # networkidle: nothing is still in flight (a favicon, a lazy image) when a test moves on,
        # so a later navigation cannot abort it.
        response = self.page.goto(url, wait_until="networkidle")
        assert response is not None and response.ok, url
        self.load_every_image()

    def load_every_image(self) -> None:
        """Load every image (lazy ones too: scrolled past and back at once, the bottom ones would
        never start) and wait until all have loaded."""
        self.page.evaluate(
            "() => { for (const img of document.images) { img.loading = 'eager'; "
            "img.scrollIntoView(); } scrollTo(0, 0); }"
        )
        self.page.wait_for_function(
            "() => Array.from(document.images).every(i => i.complete)", timeout=15000
        )

    def broken_images(self) -> list[str]:
        return self.page.evaluate(
            "() => Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)"
        )

    def serious_violations(self) -> list[str]:
        self.page.add_script_tag(path=str(AXE))
        result = self.page.evaluate(
            "async () => { const r = await axe.run(); "
            "return {passes: r.passes.length, violations: r.violations}; }"
        )
        assert result["passes"] > 10, "axe-core checked nothing"
        violations = result["violations"]
        return [
            f"{v['id']} ({v['impact']}): {v['help']} — {len(v['nodes'])} node(s)"
            for v in violations
            if v["impact"] in ("serious", "critical")
        ]

    def links(self) -> list[str]:
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('a[href], link[href], script[src]'))"
            ".map(e => e.href || e.src)"
        )

    def close(self) -> None:
        self.context.close()


def pages_to_check(site: Path) -> dict[str, str]:
    data = json.loads((site / "predictions.json").read_text(encoding="utf-8"))
    return {
        "index": "index.html",
        "index-page-2": "index-2.html",
        "photo": data["images"][0]["page"],
        "kernels": "kernels.html",
        "model": "model.html",
        "summary": "summary.html",
        "map": "map.html",
    }


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_pages_load_cleanly_and_pass_axe(browser, base_url, site, dark):
    need(AXE.is_file(), "axe-core (npm ci)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    checked_links: set[str] = set()
    for name, path in pages_to_check(site).items():
        visit = Visit(browser, base_url + path, dark=dark)
        try:
            assert visit.broken_images() == [], name
            assert visit.serious_violations() == [], name
            for url in visit.links():
                if url.startswith(base_url) and url not in checked_links:
                    checked_links.add(url)
                    response = visit.page.request.get(url)
                    assert response.ok, f"{name}: {url} -> {response.status}"
                else:
                    assert url.startswith(base_url), f"{name}: link leaves the site: {url}"
            assert visit.problems == [], name
            scheme = "dark" if dark else "light"
            visit.page.screenshot(path=str(SCREENSHOTS / f"{name}-{scheme}.png"), full_page=True)
        finally:
            visit.close()
    assert len(checked_links) > 10


def test_phone_layout_has_no_horizontal_scroll_on_the_index(browser, base_url):
    visit = Visit(browser, base_url + "index.html", width=390)
    try:
        overflow = visit.page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        visit.page.screenshot(path=str(SCREENSHOTS / "index-phone.png"), full_page=True)
    finally:
        visit.close()


# Each picture of the photo page: inside the viewport, or in a frame that scrolls and says so.
PICTURES_SHOWN = """() => Array.from(document.querySelectorAll('main img')).map(img => {
  const r = img.getBoundingClientRect();
  const frame = img.closest('[data-scroll]');
  const hint = frame && frame.previousElementSibling;
  return {
    src: img.getAttribute('src'),
    fits: r.left >= 0 && r.right <= document.documentElement.clientWidth,
    scrolls: !!frame && frame.scrollWidth > frame.clientWidth,
    hinted: !!hint && hint.classList.contains('scroll-hint') && hint.offsetParent !== null,
  };
})"""


def test_phone_photo_page_labels_each_picture_and_shows_or_scrolls_each_grid(
    browser, base_url, site
):
    visit = Visit(browser, base_url + pages_to_check(site)["photo"], width=390)
    try:
        page = visit.page
        labels = page.evaluate(
            "() => Array.from(document.querySelectorAll('table.conv1-table td'), td => "
            "[getComputedStyle(td, '::before').content, td.getBoundingClientRect().height > 0])"
        )
        assert labels == [
            ['"input 3×224×224"', True],
            ['"conv1 64×3×11×11"', True],
            ['"output 64×55×55"', True],
        ]
        shown = page.evaluate(PICTURES_SHOWN)
        assert all(p["fits"] or (p["scrolls"] and p["hinted"]) for p in shown), shown
        assert any(p["scrolls"] for p in shown)  # the 454-px output grid, on a 390-px screen
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "photo-phone.png"), full_page=True)
        assert visit.problems == []
    finally:
        visit.close()


def test_desktop_photo_page_shows_every_grid_whole_and_the_five_maps_in_one_row(
    browser, base_url, site
):
    visit = Visit(browser, base_url + pages_to_check(site)["photo"], width=1280)
    try:
        shown = visit.page.evaluate(PICTURES_SHOWN)
        assert all(p["fits"] and not p["scrolls"] for p in shown), shown
        assert not visit.page.query_selector(".scroll-hint")
        tops = visit.page.evaluate(
            "() => Array.from(document.querySelectorAll('.cams li'), li => li.offsetTop)"
        )
        assert len(tops) == 5 and len(set(tops)) == 1, tops
    finally:
        visit.close()


# Where a name wraps, the character before the break: a separator, never a letter mid-word.
BREAKS = """(selector) => {
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let top = null, before = null, node;
    while ((node = walker.nextNode())) {
      for (let i = 0; i < node.length; i++) {
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = range.getClientRects()[0];
        if (!rect) continue;
        if (top !== null && rect.top > top + 2) found.push([el.textContent, before]);
        top = rect.top;
        before = node.data[i];
      }
    }
  }
  return found;
}"""


@pytest.mark.parametrize("name", ["kernels", "index", "index-page-2"])
def test_file_names_wrap_only_after_separators(browser, base_url, site, name):
    visit = Visit(browser, base_url + pages_to_check(site)[name], width=1280)
    try:
        breaks = visit.page.evaluate(BREAKS, ".examples .name, .gallery .name")
        assert breaks, "no name wrapped: the test photos' names are too short to tell"
        assert all(before in "/_.- " for _, before in breaks), breaks
    finally:
        visit.close()


def test_filter_finds_photos_on_every_index_page(browser, base_url, site):
    data = json.loads((site / "predictions.json").read_text(encoding="utf-8"))
    last = data["images"][-1]  # on the last index page, not the first
    label = last["top5"][0]["label"]
    expected = sum(1 for img in data["images"] if label.lower() in img["top5"][0]["label"].lower())
    visit = Visit(browser, base_url + "index.html")
    try:
        page = visit.page
        page.fill("#filter", label.upper())
        page.wait_for_selector("#filter-results li")
        page.wait_for_load_state("networkidle")  # search-index.js and the result thumbnails
        assert page.is_hidden("#gallery")
        names = page.locator("#filter-results .name").all_inner_texts()
        assert last["source"] in names and len(names) == expected
        # The favicon is fetched after "load": leaving before the network is quiet aborts it.
        with page.expect_navigation(wait_until="networkidle"):
            page.click(f"#filter-results a:has-text('{last['source']}')")
        assert page.url == base_url + last["page"]
        page.go_back()
        page.wait_for_load_state("networkidle")
        page.fill("#filter", "no label is called this")
        page.wait_for_function("() => document.querySelectorAll('#filter-results li').length == 0")
        assert "0 photos" in page.inner_text("#filter-status")
        page.fill("#filter", "")
        assert page.is_visible("#gallery")
        assert visit.problems == []
    finally:
        visit.close()


def test_keyboard_reaches_the_photos(browser, base_url):
    visit = Visit(browser, base_url + "index.html")
    try:
        page = visit.page
        # Loaded afresh, as a reader opens it. Visit scrolls every image into view and back, and
        # in Debian's Chromium 150 (what CI installs now) the first Tab then went to the pager's
        # link to page 2 instead of the skip link.
        page.reload(wait_until="networkidle")
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
        seen = []
        for _ in range(12):
            page.keyboard.press("Tab")
            seen.append(page.evaluate("() => document.activeElement.getAttribute('href')"))
        assert any(href and href.startswith("photos/") for href in seen)
    finally:
        visit.close()


@pytest.fixture(scope="module")
def big_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list]:
    """5,000 photos written by the site's own writer from made-up records (no model needed),
    served under /REPO/ as a folder of 100,000 would be: index pages and the filter's shards."""
    from torchvision.models import AlexNet_Weights

    from reportgen.records import LayerInfo, LayerRange, ModelSummary, PhotoRecord, Prediction
    from reportgen.site.folder import summarize_folder
    from reportgen.site.pages import SiteContent, write_site

    labels = AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    photos = [
        PhotoRecord(
            width=640,
            height=480,
            frames=1,
            top5=tuple(
                Prediction((i * 7 + k) % 1000, labels[(i * 7 + k) % 1000], 0.5 / (k + 1))
                for k in range(5)
            ),
            conv1_mean=(0.0,) * 64,
            conv1_max=(1.0,) * 64,
            ranges=(LayerRange("conv1", 0.0, 1.0),),
            source=f"album-{i // 500:02d}/photo-{i:05d}.jpg",
            file_size=1000,
            key=hashlib.sha256(str(i).encode()).hexdigest(),
        )  # fmt: skip
        for i in range(5000)
    ]
    model = ModelSummary(
        arch="alexnet", weights="random", sha256=None, untrained=True,
        layers=(LayerInfo("features.0", "Conv2d", (64, 55, 55), 23296),),
        kernel_shape=(64, 3, 11, 11), conv1_output_shape=(64, 55, 55), input_shape=(3, 224, 224),
    )  # fmt: skip
    charts = {name: f"img/summary-{name}.png" for name in ("classes", "confidence", "margin")}
    places = np.random.default_rng(0).random((len(photos), 2))
    site = SiteContent(photos=photos, skipped=(), model=model, per_page=120,
                       summary=summarize_folder(photos), charts=charts,
                       chart_sizes={name: (1, 1) for name in charts}, places=places)  # fmt: skip
    root = tmp_path_factory.mktemp("big") / SUB_PATH.strip("/")

    class Folder:
        def write(self, rel: str, data: bytes, key: str = "") -> None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)

        def keep(self, rel: str, key: str) -> bool:
            return False

        def keep_all(self, prefixes: tuple[str, ...], key: str) -> bool:
            return False

    write_site(site, Folder())
    thumb = root / "thumb.jpg"
    shutil.copy(SAMPLE_PHOTOS[0], thumb)
    for p in photos:
        target = root / p.crop
        target.parent.mkdir(exist_ok=True)
        os.link(thumb, target)

    with _served(root.parent) as port:
        yield f"http://127.0.0.1:{port}{SUB_PATH}", photos


# (url, bytes) of the page itself and of every resource it fetched since the last clearing.
FETCHED = """() => performance.getEntriesByType('navigation').concat(
  performance.getEntriesByType('resource')).map(e => [e.name, e.encodedBodySize])"""


def test_index_and_filter_stay_light_at_5000_photos(browser, big_site):
    base, photos = big_site
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(base + "index.html", wait_until="load")
        loaded = page.evaluate(FETCHED)
        weight = sum(size for url, size in loaded if not url.endswith(".jpg"))
        assert 20 * 1024 < weight <= 300 * 1024, loaded
        # The pager: first, last and nearby pages, and a box to jump to any other.
        links = page.locator("nav.pager").first.locator("a, span[aria-current]").count()
        assert links <= 2 * 2 + 3, links
        page.wait_for_load_state("networkidle")

        page.evaluate("() => performance.clearResourceTimings()")
        query = "ret"  # golden retriever, Labrador retriever, …
        page.fill("#filter", query)
        page.wait_for_function("() => /photos? predicted/.test("
                               "document.getElementById('filter-status').textContent)")  # fmt: skip
        page.wait_for_load_state("networkidle")
        typed = page.evaluate(FETCHED)
        data = sum(size for url, size in typed if "/search/" in url)
        assert 0 < data <= 300 * 1024, typed
        expected = sum(
            1 for p in photos
            if any(word.lower().startswith(query)
                   for word in re.split(r"[^0-9A-Za-z]+", p.top5[0].label))
        )  # fmt: skip
        assert expected > 0
        assert page.inner_text("#filter-status").startswith(f"{expected} photos predicted")

        page.fill("#filter", "")  # the pagers show again
        with page.expect_navigation(wait_until="load"):
            page.locator("form[data-jump] input").first.fill("37")
            page.locator("form[data-jump] button").first.click()
        assert page.url == base + "index-37.html"
        assert page.locator("nav.pager span[aria-current]").first.inner_text() == "37"
    finally:
        context.close()


def test_the_map_loads_light_at_5000_photos_and_draws_no_thumbnail_until_zoomed(browser, big_site):
    """At most 2 MB at 20,000 photos: a quarter of that here. Zoomed in, thumbnails come."""
    base, photos = big_site
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(base + "map.html", wait_until="networkidle")
        loaded = page.evaluate(FETCHED)
        assert not [url for url, _ in loaded if url.endswith(".jpg")]
        weight = sum(size for _, size in loaded)
        assert weight <= 2 * 1024 * 1024 * len(photos) / 20000, loaded
        status = page.inner_text("#map-status")
        assert status == f"{len(photos)} of {len(photos)} photos in view; zoom in to see them"
        for _ in range(14):
            page.mouse.move(640, 600)
            page.mouse.wheel(0, -100)
        page.wait_for_function("() => !/zoom in/.test(document.getElementById('map-status')"
                               ".textContent)")  # fmt: skip
        page.wait_for_function(
            "() => performance.getEntriesByType('resource').some(e => e.name.endsWith('.jpg'))"
        )
    finally:
        context.close()


MAP_POINT = """(i) => {
  const canvas = document.getElementById('map'), r = canvas.getBoundingClientRect();
  const data = window.mapData, p = data.points[i];
  const fit = Math.min(r.width, r.height) / data.scale * 0.95;
  return [r.left + (p[0] - data.scale / 2) * fit + r.width / 2,
          r.top + (p[1] - data.scale / 2) * fit + r.height / 2, p[3], p[4]];
}"""


def test_the_map_zooms_to_a_photo_shows_it_and_opens_its_page(browser, base_url, site):
    visit = Visit(browser, base_url + "map.html")
    try:
        page = visit.page
        count = len(json.loads((site / "predictions.json").read_text())["images"])
        assert page.inner_text("#map-status") == f"{count} of {count} photos in view"
        # The map's data, as the page got it (map-data.js calls reportgenMap with it).
        text = (site / "map-data.js").read_text(encoding="ascii")
        page.evaluate(f"() => {{ window.mapData = {text.removeprefix('reportgenMap(')[:-3]}; }}")
        points = json.loads(text.removeprefix("reportgenMap(")[:-3])["points"]
        alone = next(  # a photo no copy shares its place with
            i for i, p in enumerate(points)
            if all(abs(p[0] - q[0]) + abs(p[1] - q[1]) > 500 for q in points if q is not p)
        )  # fmt: skip
        x, y, stem, key = page.evaluate(MAP_POINT, alone)
        for _ in range(8):  # zoomed about the pointer, the photo stays under it
            page.mouse.move(x, y)
            page.mouse.wheel(0, -100)
            page.wait_for_timeout(50)
        page.wait_for_function(
            "(key) => performance.getEntriesByType('resource').some(e => e.name.includes(key))",
            arg=key,
        )
        page.wait_for_load_state("networkidle")  # a navigation would abort pictures on the way
        with page.expect_navigation():
            page.mouse.click(x, y)
        assert page.url == base_url + f"photos/{stem}.html"
        page.wait_for_load_state("networkidle")
        page.go_back(wait_until="networkidle")
        page.focus("#map")
        with page.expect_navigation():
            page.keyboard.press("Enter")  # the photo nearest the centre
        assert "/photos/" in page.url
        # Loads cut short by the test's own navigations are no fault of the site.
        assert [p for p in visit.problems if "ERR_ABORTED" not in p] == []
    finally:
        visit.close()


def test_nu_html_checker_finds_no_errors(site):
    java = shutil.which("java")
    need(java is not None, "java")
    need(VNU.is_file(), "vnu-jar (npm ci)")

    def check(folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                java,
                "-jar",
                str(VNU),
                "--skip-non-html",
                "--errors-only",
                "--format",
                "gnu",
                str(folder),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    proc = check(site)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    # The checker does find errors: a page with one is reported.
    control = site.parent / "control"
    control.mkdir(exist_ok=True)
    (control / "bad.html").write_text("<!DOCTYPE html><html><body><p><div></p></body></html>")
    bad = check(control)
    assert bad.returncode != 0 and "bad.html" in bad.stderr + bad.stdout
