"""`embedkit serve` in a real browser: headless Chromium (Debian's package) driven by Playwright.

It loads the page, finds points by label, clicks a point on the map and sees its neighbours, clicks a
neighbour, drops an image file and sees neighbours and predicted labels, and opens the duplicates view.
.ci/run installs Chromium and sets EMBEDKIT_BROWSER_TEST=require, so there the test fails instead of
skipping when the browser is missing.
"""

from __future__ import annotations

import base64
import os
import shutil

import pytest
from helpers import served_shapes

pytestmark = pytest.mark.slow  # a browser

REQUIRED = os.environ.get("EMBEDKIT_BROWSER_TEST") == "require"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _need(module: str):
    if REQUIRED:
        return __import__(module, fromlist=["_"])
    return pytest.importorskip(module, reason=f"the browser test needs {module} (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    _need("fastapi")
    sync_api = _need("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if REQUIRED:
            pytest.fail(f"Chromium is not at {CHROMIUM}; .ci/run installs it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from embedkit.serve.app import serving
    from embedkit.serve.service import SearchService

    images, store, model = served_shapes(tmp_path_factory.mktemp("browser"))
    svc = SearchService.open(store, model=model)
    with serving(svc) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(15_000)
        seen = {"errors": [], "requests": []}
        page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
        page.on("request", lambda req: seen["requests"].append(req.url))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        yield page, svc, images, url, seen
        browser.close()
    svc.close()


def query_text(page) -> str:
    return page.inner_text("#query")


def test_find_click_and_follow_neighbours(browser_page):
    page, svc, _, url, seen = browser_page
    assert "19 images" in page.inner_text("#info")
    # find on the map by label; Enter shows the first match's neighbours
    page.fill("#q", "triangle")
    page.wait_for_function("document.getElementById('qn').textContent.startsWith('6 of 19')")
    page.press("#q", "Enter")
    page.wait_for_selector("#grid .cell")
    assert "[triangle]" in query_text(page)
    # click a point on the canvas: its neighbours come up, the first of them with its own label
    row = svc.row_of_path(next(p for p in svc.paths if p.endswith("square_4.png")))
    box = page.locator("#map").bounding_box()
    page.mouse.dblclick(box["x"] + 2, box["y"] + 2)  # Enter zoomed in on the match: reset the view
    x, y = page.evaluate(f"embedkitMap.screenOf({row})")
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function(f"document.getElementById('query').textContent.includes('row {row} ')")
    page.wait_for_function("document.querySelectorAll('#grid .cell').length === 12")
    cells = page.locator("#grid .cell")
    assert "square" in cells.first.inner_text()
    page.wait_for_function("[...document.querySelectorAll('#grid .cell img')].every(i => i.complete && i.naturalWidth > 0)")
    # click a neighbour: its own neighbours replace the grid
    nrow = int(cells.nth(1).get_attribute("data-row"))
    cells.nth(1).click()
    page.wait_for_function(f"document.getElementById('query').textContent.includes('row {nrow} ')")
    assert page.locator("#grid .cell").count() == 12
    assert all(u.startswith(url) for u in seen["requests"]), "the page asked for something other than its server"
    assert not seen["errors"]


def test_drop_an_image_and_duplicates(browser_page, tmp_path):
    page, _, images, _, seen = browser_page
    data = base64.b64encode((images / "circle" / "circle_3.png").read_bytes()).decode()
    page.evaluate("""b64 => {const bin = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer(); dt.items.add(new File([bin], 'dropped.png', {type: 'image/png'}));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));}""",
                  data)
    page.wait_for_function("document.getElementById('query').textContent.includes('dropped.png')")
    page.wait_for_selector("#preds b")
    assert page.inner_text("#preds b").startswith("circle")
    assert "circle_3.png" in page.locator("#grid .cell").first.inner_text()
    # a file that is not an image: one clear message, no crash
    page.evaluate("""() => {const dt = new DataTransfer(); dt.items.add(new File(['hello'], 'notes.txt'));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));}""")
    page.wait_for_function("document.getElementById('msg').textContent.includes('notes.txt')")
    assert "not an image" in page.inner_text("#msg")
    # the duplicates view: circle_0 and its copy
    page.fill("#thr", "0.001")
    page.click("#dupbtn")
    page.wait_for_selector("#dups .cell")
    names = page.locator("#dups .cell").all_inner_texts()
    assert any("circle_copy.png" in n for n in names) and any("circle_0.png" in n for n in names)
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not seen["errors"]
