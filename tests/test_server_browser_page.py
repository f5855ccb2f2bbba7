"""A real headless Chromium as the attacker (issue 24): a page of another origin posts a photo to a running
``dagnn serve`` (a "simple" multipart request, sent without a CORS preflight), and a page under a name
that resolves to 127.0.0.1 (DNS rebinding, by Chromium's host resolver rules) loads the server as its own
origin. Neither may change or read anything; the server's own page still works (``test_server_page.py``)."""
from __future__ import annotations

import base64
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the [dev] extra)")

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import build_index, free_port, serve  # noqa: E402

CHROMIUM = os.environ.get("DAGNN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REBOUND = "rebound.test"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DAGNN_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM,
                               args=["--no-sandbox", f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"])
        yield b
        b.close()


@pytest.fixture
def attacker_site(tmp_path):
    """A second web server on 127.0.0.1 (another port: another origin) serving ``tmp_path/site``."""
    site = tmp_path / "site"
    site.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(site), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_another_origins_page_cannot_add_or_remove_items(tmp_path, browser, attacker_site, bundle_dir, model,
                                                         data_dir):
    site, site_url = attacker_site
    photo = base64.b64encode((data_dir / "images" / "im1.jpg").read_bytes()).decode()
    index = build_index(model, data_dir, tmp_path / "index")
    with serve(bundle_dir, index, tmp_path) as srv:
        (site / "index.html").write_text(f"""<!doctype html><title>innocent</title><script>
        const bytes = Uint8Array.from(atob("{photo}"), c => c.charCodeAt(0));
        const form = new FormData();
        form.append("id", "csrf-1");
        form.append("image", new Blob([bytes], {{type: "image/jpeg"}}), "p.jpg");
        window.done = Promise.all([
          fetch("{srv.url}/v1/items", {{method: "POST", mode: "no-cors", body: form}}),
          fetch("{srv.url}/v1/items/3", {{method: "DELETE", mode: "no-cors"}}).catch(e => e),
        ]).then(() => "sent", e => "failed: " + e);
        </script>""")
        page = browser.new_page()
        page.goto(site_url + "/")
        assert page.evaluate("window.done") == "sent"  # the browser sent the multipart POST (opaque answer)
        page.close()
        assert httpx.get(srv.url + "/v1/items/csrf-1/image").json()["error"]["code"] == "unknown_id"
        assert httpx.get(srv.url + "/v1/items/3/image").status_code == 200
        assert "Traceback" not in srv.log()


def test_a_rebound_name_gets_nothing(tmp_path, browser, bundle_dir, model, data_dir):
    index = build_index(model, data_dir, tmp_path / "index")
    with serve(bundle_dir, index, tmp_path) as srv:
        port = srv.url.rsplit(":", 1)[1]
        page = browser.new_page()
        answer = page.goto(f"http://{REBOUND}:{port}/")
        assert answer.status == 421 and "is not a name of this server" in page.content()
        # the rebound page's own (same-origin, for the browser) requests: refused too
        status = page.evaluate("""async () => (await fetch("/v1/items", {method: "POST",
            body: new FormData()})).status""")
        assert status == 421
        page.close()
        page = browser.new_page()  # the real name still works
        assert page.goto(f"http://localhost:{port}/").status == 200
        page.close()
