"""The browser policy of a real ``dagnn serve`` (issue 24): writes only from the server's own origin, only
the server's own Host names (DNS rebinding), CORS only for the origins given. Headers are set by hand here
as a browser sets them; ``test_server_browser_page.py`` has a real Chromium send them."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx")

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import SERVE, assert_stopped_cleanly, build_index, serve  # noqa: E402

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model, data_dir):
    return build_index(model, data_dir, tmp_path_factory.mktemp("index") / "index")


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path_factory.mktemp("logs")) as srv:
        yield srv
    assert_stopped_cleanly(srv)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def error_of(res, status: int, code: str) -> str:
    assert res.status_code == status, (res.status_code, res.text)
    body = res.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "\n" not in body["error"]["message"]
    return body["error"]["message"]


def add_photo(client, data_dir, item_id: str, **headers):
    return client.post("/v1/items", data={"id": item_id}, headers=headers,
                       files={"image": ("p.jpg", (data_dir / "images" / "im1.jpg").read_bytes(), "image/jpeg")})


def test_writes_only_from_the_own_origin(client, server, data_dir):
    """The probe: a cross-origin "simple" multipart POST from any page was a write. Refused now (403, nothing
    changed), while the server's own page, a user typing the address, and clients that send neither
    Origin nor Sec-Fetch-Site (curl, apps) still write, and reads stay answered (without CORS headers)."""
    for headers in ({"Origin": EVIL}, {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"},
                    {"Origin": "http://127.0.0.1:1"}):  # same host, another port: another origin
        assert "another" in error_of(add_photo(client, data_dir, "csrf", **headers), 403, "forbidden")
    error_of(client.post("/v1/items", json={"items": [{"id": "csrf-t", "text": "sky"}]}, headers={"Origin": EVIL}),
             403, "forbidden")
    error_of(client.delete("/v1/items/3", headers={"Origin": EVIL}), 403, "forbidden")
    error_of(client.put("/v1/items/3", headers={"Sec-Fetch-Site": "cross-site"}), 403, "forbidden")
    assert client.get("/v1/items/csrf/image").json()["error"]["code"] == "unknown_id"
    assert client.get("/v1/items/3/image").status_code == 200  # not removed
    found = client.post("/v1/search", json={"text": "sky", "target": "text", "k": 50}).json()["results"]
    assert "csrf-t" not in [hit["id"] for hit in found]

    port = port_of(server)
    own = [{"Origin": server.url, "Sec-Fetch-Site": "same-origin"},
           {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},
           {"Sec-Fetch-Site": "none"},  # typed by the user (address bar, bookmark)
           {}]  # curl, apps, scripts: neither header
    for n, headers in enumerate(own):
        res = add_photo(client, data_dir, f"own-{n}", **headers)
        assert res.status_code == 201, (headers, res.text)
        assert client.delete(f"/v1/items/own-{n}", headers=headers).status_code == 200

    res = client.post("/v1/search", json={"text": "sky"}, headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    assert res.status_code == 200 and "access-control-allow-origin" not in res.headers
    preflight = client.options("/v1/items", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_other_host_names_are_421_but_probes_answer(client, server):
    """DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name as Host."""
    port = port_of(server)
    for path in ("/", "/v1/info", "/v1/items/3/image", "/metrics"):
        assert "evil.example" in error_of(client.get(path, headers={"Host": f"evil.example:{port}"}), 421,
                                          "misdirected")
    error_of(client.post("/v1/search", json={"text": "sky"}, headers={"Host": "evil.example"}), 421, "misdirected")
    error_of(client.get("/", headers={"Host": "localhost.evil.example"}), 421, "misdirected")
    error_of(client.get("/", headers={"Host": "bad host"}), 421, "misdirected")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost:9999", "LOCALHOST."):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    for probe in ("/healthz", "/readyz"):
        assert client.get(probe, headers={"Host": "evil.example"}).status_code == 200


def test_allowed_hosts_and_cors_origins_are_opt_in(tmp_path, bundle_dir, index_dir, data_dir):
    app = "http://app.example:3000"
    with serve(bundle_dir, index_dir, tmp_path, "--allowed-host", "photos.lan", "--cors-origin", app) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as client:
        port = port_of(srv)
        assert client.get("/", headers={"Host": f"photos.lan:{port}"}).status_code == 200
        error_of(client.get("/", headers={"Host": "other.lan"}), 421, "misdirected")
        preflight = client.options("/v1/items", headers={"Origin": app, "Access-Control-Request-Method": "POST",
                                                         "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == app
        refused = client.options("/v1/items", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in refused.headers
        res = add_photo(client, data_dir, "from-app", Origin=app, **{"Sec-Fetch-Site": "cross-site"})
        assert res.status_code == 201 and res.headers["access-control-allow-origin"] == app, res.text
        error_of(add_photo(client, data_dir, "from-evil", Origin=EVIL), 403, "forbidden")
        assert client.delete("/v1/items/from-app", headers={"Origin": app}).status_code == 200


@pytest.mark.parametrize("args, message", [
    (["--allowed-host", "http://photos.lan"], "--allowed-host 'http://photos.lan' is not a host name"),
    (["--allowed-host", "photos.lan:8080"], "without a port"),
    (["--cors-origin", "app.example"], "--cors-origin 'app.example' is not an origin"),
    (["--cors-origin", "https://app.example/path"], "is not an origin"),
    (["--cors-origin", "*"], "give --api-key too"),
])
def test_bad_browser_options_are_one_line_errors(tmp_path, args, message):
    res = subprocess.run([sys.executable, "-c", SERVE, "serve", "--bundle", str(tmp_path), "--index",
                          str(tmp_path / "none"), *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
