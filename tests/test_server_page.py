"""The search page in a real headless Chromium against a real server on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the [dev] extra)")

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import build_index, serve  # noqa: E402

CHROMIUM = os.environ.get("DAGNN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DAGNN_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_search_page_end_to_end(tmp_path, browser, bundle_dir, model, data_dir):
    index = build_index(model, data_dir, tmp_path / "index")
    with serve(bundle_dir, index, tmp_path) as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # for wait_for_function
        page.set_default_timeout(30000)  # generous: CI machines may be busy
        problems = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.goto(srv.url + "/")
        sync_api.expect(page.locator("#status")).to_have_text("24 photos · 28 tag sets", timeout=30000)
        assert page.locator("#empty").is_visible() and page.locator("#grid .card").count() == 0

        # a photo: its own item first with score 1, every thumbnail loaded, predicted labels shown
        page.set_input_files("#file", str(data_dir / "images" / "im3.jpg"))
        first = page.locator("#grid .card").first
        sync_api.expect(first.locator(".item-id")).to_have_text("3", timeout=30000)
        assert first.locator(".score").inner_text() == "1.000"
        assert page.locator("#grid .card").count() == 24
        page.wait_for_function("[...document.querySelectorAll('#grid img.thumb')].every(i => i.complete && i.naturalWidth > 0)",
                               timeout=30000)
        assert page.locator("#tags").is_visible() and page.locator("#tag-list li").count() == 6
        scores = model.score_labels(model.encode_images([data_dir / "images" / "im3.jpg"]))
        expected = [label for label, _ in model.labels_above_threshold(scores)[0]]
        assert page.locator("#tag-list li.pass span:first-child").all_inner_texts() == expected
        assert page.locator("#query-img").is_visible()

        # clicking a result searches with that photo: it comes first
        second = page.locator("#grid .card").nth(1).locator(".item-id").inner_text()
        page.locator("#grid .card").nth(1).click()
        sync_api.expect(page.locator("#grid .card").first.locator(".item-id")).to_have_text(second, timeout=30000)

        # tags, with a label filter: every card carries the label
        page.fill("#text", "sea, beach")
        page.press("#text", "Enter")
        sync_api.expect(page.locator("#summary")).to_contain_text("sea, beach", timeout=30000)
        page.locator("#filter summary").click()
        page.locator("#label-chips .chip", has_text="night").click()
        sync_api.expect(page.locator("#summary")).to_contain_text("with label night", timeout=30000)
        cards = page.locator("#grid .card")
        assert cards.count() > 0
        for i in range(cards.count()):
            assert "night" in cards.nth(i).locator(".mini").all_inner_texts()

        # an unusable query shows a readable error, not a broken page
        page.locator("#label-chips .chip", has_text="night").click()
        page.fill("#text", "qwertyuiop")
        page.press("#text", "Enter")
        sync_api.expect(page.locator("#error")).to_contain_text("vocabulary", timeout=30000)
        assert page.locator("#grid .card").count() == 0
        assert problems == [] or all("422" in p for p in problems), problems
        page.close()
