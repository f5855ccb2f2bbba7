"""The search page in a real headless Chromium against a real server on 127.0.0.1.

After every step no image on the page may be broken: every rendered <img> has decoded (complete, naturalWidth > 0).
Hidden images are exempt, and so is a lazy thumbnail below the fold that the browser has not asked for yet.
The states a user meets are checked for what they show: the first visit, an upload that is not a photo, a search
that finds nothing, the page at phone width, and servers that hold only one of the two indexes.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the [dev] extra)")

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import build_index, serve  # noqa: E402

expect = sync_api.expect
CHROMIUM = os.environ.get("DAGNN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
NOT_A_PHOTO = {"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": b"this is not a photo\n"}  # 20 bytes
FIRST_VISIT = "Find photos by example or by tags"

# every rendered <img> that has not decoded, as a line saying which and why
IMG_PROBLEMS = """() => [...document.images].filter((i) => i.checkVisibility({ checkVisibilityCSS: true })).flatMap((i) => {
  if (i.complete && i.naturalWidth > 0) return [];
  const r = i.getBoundingClientRect();
  if (!i.complete && i.loading === "lazy" && (r.bottom < 0 || r.top > innerHeight)) return [];  // not asked for yet
  const src = (i.getAttribute("src") || "(no src)").slice(0, 80);
  return [`<img id="${i.id}" class="${i.className}" alt="${i.alt}" src="${src}">: ${i.complete ? "broken" : "not loaded"}`];
})"""


def assert_no_broken_images(page, timeout: float = 10.0) -> None:
    """Every visible <img> decodes (a pending one gets ``timeout`` seconds to load)."""
    deadline = time.monotonic() + timeout
    while problems := page.evaluate(IMG_PROBLEMS):
        if time.monotonic() > deadline:
            raise AssertionError("visible images that did not decode:\n" + "\n".join(problems))
        time.sleep(0.1)


def in_view_below_header(page, selector: str, timeout: float = 10.0) -> None:
    """``selector`` lies inside the viewport, not hidden under the sticky header."""
    js = f"""() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();
        const top = document.querySelector(".top").getBoundingClientRect().bottom;
        return {{ top: r.top, bottom: r.bottom, header: top, height: innerHeight, scrollY }}; }}"""
    deadline = time.monotonic() + timeout
    while True:
        box = page.evaluate(js)
        if box["top"] >= box["header"] - 1 and box["bottom"] <= box["height"] + 1 and box["bottom"] > box["top"]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} is not in view below the header: {box}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DAGNN_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, bundle_dir, model, data_dir):
    """One server with both indexes (24 photos, 28 tag sets) for the desktop and the phone test."""
    tmp = tmp_path_factory.mktemp("site")
    with serve(bundle_dir, build_index(model, data_dir, tmp / "index"), tmp) as srv:
        yield srv


def open_page(browser, url: str, viewport: dict, status: str | None = None):
    """A fresh page on ``url`` once the status pill says the index is loaded; page errors, and console errors
    other than a refused request's status line, are collected in ``page.problems``."""
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(30000)  # generous: CI machines may be busy
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.on("console", lambda m: page.problems.append(f"console: {m.text}")
            if m.type == "error" and not re.search(r"status of 4\d\d", m.text) else None)
    page.goto(url + "/")
    if status:
        expect(page.locator("#status")).to_have_text(status, timeout=30000)
    else:
        expect(page.locator("#status")).to_have_class("pill pill-ok", timeout=30000)
    return page


def first_visit_state(page, direction: str) -> None:
    """The empty state of a fresh page: its heading, the way to the drop zone, no photo preview, no broken image."""
    expect(page.locator("#empty h1")).to_have_text(FIRST_VISIT)
    expect(page.locator("#empty-text")).to_contain_text(direction)
    assert page.locator("#grid .card").count() == 0
    expect(page.locator("#query-img")).to_be_hidden()
    expect(page.locator("#drop-hint")).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()
    assert_no_broken_images(page)


def test_search_page_end_to_end(site, browser, model, data_dir):
    page = open_page(browser, site.url, DESKTOP, "24 photos · 28 tag sets")
    first_visit_state(page, "on the left")
    expect(page.locator("#empty-text")).not_to_contain_text("above")
    drop_height = page.locator("#drop").bounding_box()["height"]

    # a file that is not a photo: a plain sentence (the API's words only under Details), the drop zone as it was
    page.set_input_files("#file", files=[NOT_A_PHOTO])
    expect(page.locator("#error")).to_be_visible(timeout=30000)
    expect(page.locator("#error-text")).to_have_text(
        "That file isn't a photo this server can read. Try a JPEG, PNG or WebP.")
    expect(page.locator("#error-details")).to_contain_text("invalid_image")
    expect(page.locator("#error-details")).not_to_have_attribute("open", "")
    expect(page.locator("#query-img")).to_be_hidden()
    expect(page.locator("#drop-hint")).to_be_visible()
    assert abs(page.locator("#drop").bounding_box()["height"] - drop_height) < 1
    assert page.locator("#drop img:visible").count() == 0
    expect(page.locator("#empty h1")).to_have_text(FIRST_VISIT)
    assert_no_broken_images(page)

    # a photo: its own item first with score 1, every thumbnail loaded, predicted labels shown, the error gone
    page.set_input_files("#file", str(data_dir / "images" / "im3.jpg"))
    first = page.locator("#grid .card").first
    expect(first.locator(".item-id")).to_have_text("3", timeout=30000)
    assert first.locator(".score").inner_text() == "1.000"
    assert page.locator("#grid .card").count() == 24
    expect(page.locator("#error")).to_be_hidden()
    page.locator("#grid .card").last.scroll_into_view_if_needed()  # every lazy thumbnail asked for
    assert_no_broken_images(page, timeout=30)
    assert page.evaluate("[...document.querySelectorAll('#grid img.thumb')].every(i => i.naturalWidth > 0)")
    assert page.locator("#tags").is_visible() and page.locator("#tag-list li").count() == 6
    scores = model.score_labels(model.encode_images([data_dir / "images" / "im3.jpg"]))
    expected = [label for label, _ in model.labels_above_threshold(scores)[0]]
    assert page.locator("#tag-list li.pass span:first-child").all_inner_texts() == expected
    expect(page.locator("#query-img")).to_be_visible()
    assert_no_broken_images(page)

    # clicking a result searches with that photo: it comes first
    second = page.locator("#grid .card").nth(1).locator(".item-id").inner_text()
    page.locator("#grid .card").nth(1).click()
    expect(page.locator("#grid .card").first.locator(".item-id")).to_have_text(second, timeout=30000)
    assert_no_broken_images(page)

    # tags, with a label filter: every card shows the label it was kept for
    page.fill("#text", "sea, beach")
    page.press("#text", "Enter")
    expect(page.locator("#summary")).to_contain_text("sea, beach", timeout=30000)
    expect(page.locator("#query-img")).to_be_hidden()
    assert_no_broken_images(page)
    page.locator("#filter summary").click()
    page.locator("#label-chips .chip", has_text="night").click()
    expect(page.locator("#summary")).to_contain_text("with label night", timeout=30000)
    cards = page.locator("#grid .card")
    assert cards.count() > 0
    for i in range(cards.count()):
        assert "night" in cards.nth(i).locator(".mini").all_inner_texts()
    assert_no_broken_images(page)

    # words the model does not know: a readable sentence, the API's message under Details
    page.locator("#label-chips .chip", has_text="night").click()
    page.fill("#text", "qwertyuiop")
    page.press("#text", "Enter")
    expect(page.locator("#error-text")).to_contain_text("know", timeout=30000)
    expect(page.locator("#error-details")).to_contain_text("vocabulary")
    assert page.locator("#grid .card").count() == 0
    assert_no_broken_images(page)
    assert page.problems == [], page.problems
    page.close()


def test_search_page_at_phone_width(site, browser, data_dir):
    page = open_page(browser, site.url, PHONE, "24 photos · 28 tag sets")
    first_visit_state(page, "above")
    expect(page.locator("#empty-text")).not_to_contain_text("on the left")
    page.set_viewport_size(DESKTOP)  # the wording follows the layout
    expect(page.locator("#empty-text")).to_contain_text("on the left")
    page.set_viewport_size(PHONE)
    expect(page.locator("#empty-text")).to_contain_text("above")

    # a photo: the query and its labels fill the screen; the results' summary is scrolled into view
    page.set_input_files("#file", str(data_dir / "images" / "im3.jpg"))
    expect(page.locator("#grid .card").first.locator(".item-id")).to_have_text("3", timeout=30000)
    in_view_below_header(page, "#summary")
    assert_no_broken_images(page)

    # tags typed at the top: the same
    page.evaluate("window.scrollTo(0, 0)")
    page.fill("#text", "sea, beach")
    page.press("#text", "Enter")
    expect(page.locator("#summary")).to_contain_text("sea, beach", timeout=30000)
    in_view_below_header(page, "#summary")
    assert_no_broken_images(page)

    # an error is brought into view too
    page.evaluate("window.scrollTo(0, 0)")
    page.set_input_files("#file", files=[NOT_A_PHOTO])
    expect(page.locator("#error-text")).to_contain_text("isn't a photo", timeout=30000)
    in_view_below_header(page, "#error")
    assert_no_broken_images(page)
    assert page.problems == [], page.problems
    page.close()


def build_one_index(model, data_dir: Path, out: Path, modality: str, nobody: str) -> int:
    """``out/<modality>`` only, from the factory data set, less every item that carries the label ``nobody``
    (as a label or a predicted label): a filter on it finds nothing. Returns how many items are left."""
    from dagnn_runtime.indexes import open_index
    from dagnn_runtime.ingest import ingest, sources_from_data

    (source,) = sources_from_data(data_dir, [modality])
    index = open_index(out / modality, model=model, modality=modality, create=True)
    ingest(model, source, index)
    carriers = [i for i in index.ids if nobody in {*index.metadata(i).get("labels", []),
                                                    *index.metadata(i).get("predicted_labels", [])}]
    assert 0 < len(carriers) < len(index)
    index.remove(carriers)
    left = len(index)
    index.close()
    return left


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_index_server_and_no_matches(tmp_path, browser, bundle_dir, model, data_dir, modality):
    """A server holding one index offers only what it holds, and its text search finds that; a label that no
    item carries gives the zero-hit state (not the first-visit one)."""
    noun, other = ("photos", "tag sets") if modality == "image" else ("tag sets", "photos")
    left = build_one_index(model, data_dir, tmp_path / "index", modality, "animals")
    with serve(bundle_dir, tmp_path / "index", tmp_path) as srv:
        page = open_page(browser, srv.url, DESKTOP, f"{left} {noun}")
        first_visit_state(page, "on the left")
        expect(page.locator("#empty-text")).not_to_contain_text(other)
        expect(page.locator("#find")).not_to_contain_text(other, use_inner_text=True)  # not offered (nor shown)
        choice = page.locator(f"input[name=target][value={'text' if modality == 'image' else 'image'}]")
        assert choice.is_hidden() or choice.is_disabled()

        page.fill("#text", "sky, clouds")
        page.press("#text", "Enter")
        expect(page.locator("#summary")).to_contain_text(noun, timeout=30000)
        expect(page.locator("#error")).to_be_hidden()
        assert page.locator("#grid .card").count() > 0
        assert page.locator("#grid .card img.thumb").count() == (page.locator("#grid .card").count()
                                                                  if modality == "image" else 0)
        assert_no_broken_images(page)

        # a label no item carries: the zero-hit state says so, and what to try
        page.locator("#filter summary").click()
        page.locator("#label-chips .chip", has_text="animals").click()
        expect(page.locator("#summary")).to_contain_text(f"0 {noun}", timeout=30000)
        expect(page.locator("#no-hits")).to_be_visible()
        expect(page.locator("#no-hits h2")).to_have_text("No matches")
        expect(page.locator("#no-hits")).to_contain_text("animals")
        expect(page.locator("#no-hits")).to_contain_text("label filter")
        expect(page.get_by_text(FIRST_VISIT)).to_be_hidden()
        expect(page.locator("#error")).to_be_hidden()
        assert page.locator("#grid .card").count() == 0
        assert_no_broken_images(page)

        # a photo with that filter: the same state; taking the filter off finds items again
        page.set_input_files("#file", str(data_dir / "images" / "im3.jpg"))
        expect(page.locator("#summary")).to_contain_text("this photo", timeout=30000)
        expect(page.locator("#no-hits h2")).to_have_text("No matches")
        expect(page.locator("#query-img")).to_be_visible()
        assert_no_broken_images(page)
        page.locator("#label-chips .chip", has_text="animals").click()
        expect(page.locator("#grid .card").first).to_be_visible(timeout=30000)
        expect(page.locator("#no-hits")).to_be_hidden()
        assert_no_broken_images(page)
        assert page.problems == [], page.problems
        page.close()
