"""Screenshots of the search page for the docs: docs/img/search-page*.png.

    python scripts/page_screenshot.py --bundle B --index I --photo P [--out-dir docs/img] [--no-hits-label L]

Starts ``dagnn serve`` on a free loopback port, opens the page in headless Chromium (Playwright with the
system's chromium; set DAGNN_CHROMIUM to use another) and saves:

    search-page.png          desktop width, after a search with the photo
    search-page-phone.png    phone width (390x844), after the same search: the answer scrolled into view
    search-page-error.png    desktop width, after uploading a file that is not a photo
    search-page-no-hits.png  desktop width, the photo with a label filter that finds nothing: served from a
                             temporary copy of the index less the photos that carry --no-hits-label (default:
                             the label the fewest photos carry)
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

SERVE = "import dagnn_cli.serve_cmd; from dagnn_cli.app import main; main()"
PHONE = {"width": 390, "height": 844}
NOT_A_PHOTO = {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"this is not a photo\n"}


@contextmanager
def serve(bundle, index):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--bundle", str(bundle), "--index", str(index),
                             "--port", str(port), "--no-access-log", "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(url + "/readyz", timeout=2).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("the server did not become ready")
                time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def without_label(index: Path, out: Path, label: str | None) -> str:
    """A copy of ``index`` at ``out`` whose image index has no photo carrying ``label`` (as a label or a
    predicted label; None: the label the fewest photos carry). Returns the label."""
    from dagnn_runtime.indexes import open_index

    shutil.copytree(index, out)
    images = open_index(out / "image")
    try:
        carried = {i: {*images.metadata(i).get("labels", []), *images.metadata(i).get("predicted_labels", [])}
                   for i in images.ids}
        if label is None:
            label = min(collections.Counter(x for labels in carried.values() for x in labels).items(),
                        key=lambda kv: kv[1])[0]
        images.remove([i for i, labels in carried.items() if label in labels])
    finally:
        images.close()
    return label


def save(page, path: Path) -> None:
    """The page as a 256-colour PNG (a few hundred KB instead of about a MB for a page of photos)."""
    from PIL import Image

    page.screenshot(path=path)
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def open_page(browser, url, viewport):
    from playwright.sync_api import expect

    page = browser.new_page(viewport=viewport)
    page.goto(url + "/")
    expect(page.locator("#status")).to_have_class("pill pill-ok", timeout=30000)
    return page


def photo_search(page, photo) -> None:
    page.set_input_files("#file", photo)
    page.wait_for_selector("#grid .card img.thumb", timeout=30000)
    page.wait_for_function("[...document.querySelectorAll('#grid img.thumb')].every(i => i.complete || i.loading === 'lazy')")
    page.wait_for_timeout(800)  # the smooth scroll to the answer, at phone width


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--photo", required=True)
    ap.add_argument("--out-dir", default="docs/img")
    ap.add_argument("--no-hits-label", help="the label filter of the no-hits screenshot")
    ap.add_argument("--width", type=int, default=1360)
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    desktop = {"width": args.width, "height": args.height}
    chromium = os.environ.get("DAGNN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        with serve(args.bundle, args.index) as url:
            page = open_page(browser, url, desktop)
            photo_search(page, args.photo)
            save(page, out / "search-page.png")

            page = open_page(browser, url, PHONE)
            photo_search(page, args.photo)
            save(page, out / "search-page-phone.png")

            page = open_page(browser, url, desktop)
            page.set_input_files("#file", files=[NOT_A_PHOTO])
            expect(page.locator("#error")).to_be_visible(timeout=30000)
            save(page, out / "search-page-error.png")

        label = without_label(Path(args.index), Path(tmp) / "index", args.no_hits_label)
        with serve(args.bundle, Path(tmp) / "index") as url:
            page = open_page(browser, url, desktop)
            page.locator("#filter summary").click()
            page.locator("#label-chips").get_by_role("button", name=label, exact=True).click()
            page.set_input_files("#file", args.photo)
            expect(page.locator("#no-hits")).to_be_visible(timeout=30000)
            page.wait_for_timeout(300)
            save(page, out / "search-page-no-hits.png")
        browser.close()
    for name in ("search-page.png", "search-page-phone.png", "search-page-error.png", "search-page-no-hits.png"):
        print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
