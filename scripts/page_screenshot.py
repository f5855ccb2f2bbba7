"""Screenshot of the search page after a photo search: docs/img/search-page.png.

    python scripts/page_screenshot.py --bundle B --index I --photo P [--out docs/img/search-page.png]

Starts ``dagnn serve`` on a free loopback port, opens the page in headless Chromium (Playwright with the
system's chromium; set DAGNN_CHROMIUM to use another), searches with the photo and saves the screenshot.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

SERVE = "import dagnn_cli.serve_cmd; from dagnn_cli.app import main; main()"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--photo", required=True)
    ap.add_argument("--out", default="docs/img/search-page.png")
    ap.add_argument("--width", type=int, default=1360)
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--bundle", args.bundle, "--index", args.index,
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
        chromium = os.environ.get("DAGNN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height}, bypass_csp=True)
            page.goto(url + "/")
            expect(page.locator("#status")).to_have_class("pill pill-ok", timeout=30000)
            page.set_input_files("#file", args.photo)
            page.wait_for_selector("#grid .card img.thumb", timeout=30000)
            page.wait_for_function("[...document.querySelectorAll('#grid img.thumb')].every(i => i.complete)")
            page.wait_for_timeout(300)
            page.screenshot(path=args.out)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
