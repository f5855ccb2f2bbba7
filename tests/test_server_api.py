"""API v1 against a real ``dagnn serve`` (uvicorn on 127.0.0.1): every documented status code."""
from __future__ import annotations

import io
import shutil
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx")

from bundle_factory import LABELS, bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import assert_stopped_cleanly, build_index, serve  # noqa: E402


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model, data_dir):
    return build_index(model, data_dir, tmp_path_factory.mktemp("index") / "index")


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundle_dir, index_dir):
    logs = tmp_path_factory.mktemp("logs")
    with serve(bundle_dir, index_dir, logs, "--max-upload-mb", "2") as srv:
        yield srv
    assert_stopped_cleanly(srv)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def photo(data_dir, i: int) -> bytes:
    return (data_dir / "images" / f"im{i}.jpg").read_bytes()


def error_of(res, status: int, code: str | None = None) -> str:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


# ---- 200 --------------------------------------------------------------------------------------------------
def test_probes_page_docs_and_schema(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1") and "/v1/search" in spec["paths"]


def test_text_search_returns_images_best_first(client):
    res = client.post("/v1/search", json={"text": "sea, beach, nonsense_tag", "k": 5})
    body = res.json()
    assert res.status_code == 200 and body["target"] == "image"
    assert body["query"] == "sea, beach" and body["ignored_tags"] == ["nonsense_tag"]
    scores = [h["score"] for h in body["results"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert all("path" in h["metadata"] for h in body["results"])


def test_image_search_finds_the_same_photo_first(client, data_dir):
    res = client.post("/v1/search", files={"image": ("q.jpg", photo(data_dir, 3), "image/jpeg")},
                      data={"target": "image", "k": "3"})
    body = res.json()
    assert res.status_code == 200 and body["target"] == "image" and len(body["results"]) == 3
    assert body["results"][0]["id"] == "3" and body["results"][0]["score"] > 0.999


def test_image_search_defaults_to_texts(client, data_dir):
    res = client.post("/v1/search", files={"image": ("q.jpg", photo(data_dir, 0), "image/jpeg")})
    assert res.status_code == 200 and res.json()["target"] == "text" and len(res.json()["results"]) == 10


def test_label_filter_keeps_only_items_carrying_the_label(client):
    res = client.post("/v1/search", json={"text": "sky", "target": "image", "k": 50, "labels": ["night"]})
    hits = res.json()["results"]
    assert res.status_code == 200 and hits
    assert all("night" in h["metadata"].get("labels", []) + h["metadata"].get("predicted_labels", []) for h in hits)


def test_tag_scores_every_label_against_its_threshold(client, data_dir, model):
    res = client.post("/v1/tag", files={"image": ("q.jpg", photo(data_dir, 1), "image/jpeg")})
    body = res.json()
    assert res.status_code == 200 and len(body["scores"]) == len(LABELS)
    expected = model.labels_above_threshold(model.score_labels(model.encode_images([photo(data_dir, 1)])))[0]
    assert body["labels"] == [label for label, _ in expected]
    thresholds = {x["label"]: x["threshold"] for x in client.get("/v1/labels").json()["labels"]}
    for s in body["scores"]:
        assert s["passes"] == (s["score"] >= thresholds[s["label"]])


def test_info_names_the_bundle_and_sizes(client, model):
    info = client.get("/v1/info").json()
    assert info["model"]["embedding_space"] == model.embedding_space
    assert info["model"]["bundle_digest"] == model.bundle_digest
    assert info["indexes"]["image"]["items"] >= 20 and info["batching"]["max_batch"] == 16


# ---- writes: 201, 409, 404 ------------------------------------------------------------------------------
def test_add_search_serve_and_remove_an_image(client, data_dir):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((60, 80, 3), (250, 40, 200), dtype=np.uint8)).save(buf, format="PNG")
    png = buf.getvalue()
    res = client.post("/v1/items", files={"image": ("new.png", png, "image/png")},
                      data={"id": "new/1", "metadata": '{"labels": ["sky"], "note": "magenta"}'})
    assert res.status_code == 201, res.text
    assert res.json()["added"] == ["new/1"]
    found = client.post("/v1/search", files={"image": ("q.png", png, "image/png")}, data={"target": "image"}).json()
    top = found["results"][0]
    assert top["id"] == "new/1" and top["metadata"]["note"] == "magenta" and "predicted_labels" in top["metadata"]
    served = client.get("/v1/items/new%2F1/image")
    assert served.status_code == 200 and served.content == png and served.headers["content-type"] == "image/png"
    error_of(client.post("/v1/items", files={"image": ("new.png", png, "image/png")}, data={"id": "new/1"}),
             409, "duplicate_id")
    assert client.delete("/v1/items/new%2F1").json() == {"removed": "new/1", "from": ["image"]}
    after = client.post("/v1/search", files={"image": ("q.png", png, "image/png")}, data={"target": "image"}).json()
    assert "new/1" not in [h["id"] for h in after["results"]]
    error_of(client.delete("/v1/items/new%2F1"), 404, "unknown_id")
    error_of(client.get("/v1/items/new%2F1/image"), 404, "unknown_id")


def test_add_texts_with_predicted_labels(client):
    res = client.post("/v1/items", json={"items": [{"id": "t-1", "text": "night, city, lights"},
                                                   {"id": "t-2", "text": "dog, cat", "metadata": {"src": "x"}}]})
    assert res.status_code == 201, res.text
    hits = client.post("/v1/search", json={"text": "night, city, lights", "target": "text", "k": 3}).json()["results"]
    assert hits[0]["id"] == "t-1" and hits[0]["metadata"]["tags"] == ["night", "city", "lights"]
    assert isinstance(hits[0]["metadata"]["predicted_labels"], list)
    error_of(client.post("/v1/items", json={"items": [{"id": "t-1", "text": "sky"}]}), 409, "duplicate_id")
    error_of(client.post("/v1/items", json={"items": [{"id": "t-3", "text": "sky"}, {"id": "t-3", "text": "sea"}]}),
             409, "duplicate_id")
    assert client.delete("/v1/items/t-2").status_code == 200


def test_only_registered_files_are_served(client):
    error_of(client.get("/v1/items/..%2F..%2Fetc%2Fpasswd/image"), 404, "unknown_id")
    error_of(client.get("/v1/items/%2Fetc%2Fpasswd/image"), 404, "unknown_id")


# ---- 400, 404, 405, 413, 415, 422 ------------------------------------------------------------------------
@pytest.mark.parametrize("body, field", [
    ({"text": "sky", "k": 0}, "k"), ({"text": "sky", "k": "many"}, "k"), ({"text": "sky", "k": 1001}, "k"),
    ({"text": "sky", "target": "video"}, "target"), ({"text": ""}, "text"), ({"text": 3}, "text"),
    ({"k": 3}, "text"), ({"text": "sky", "lables": ["sky"]}, "lables"), ({"text": "sky", "labels": "sky"}, "labels"),
    ({"text": "x" * 1001}, "text"),
])
def test_bad_json_fields_are_400_naming_the_field(client, body, field):
    assert error_of(client.post("/v1/search", json=body), 400).startswith(field)


def test_malformed_bodies_are_400(client, data_dir):
    error_of(client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"}),
             400, "invalid_json")
    error_of(client.post("/v1/search", json=[1, 2]), 400, "invalid_json")
    error_of(client.post("/v1/search", data={"target": "image"}, files={"other": ("a", b"x")}), 400)
    error_of(client.post("/v1/search", files={"image": ("q.jpg", photo(data_dir, 0))}, data={"k": "0"}), 400)
    error_of(client.post("/v1/items", files={"image": ("a.jpg", photo(data_dir, 0))}), 400)  # no id
    error_of(client.post("/v1/items", json={"items": []}), 400)
    error_of(client.post("/v1/items", files={"image": ("a.jpg", photo(data_dir, 0))},
                         data={"id": "z", "metadata": '{"path": "/etc/passwd"}'}), 400)
    error_of(client.post("/v1/search", content=b"--x\r\nbroken", headers={
        "content-type": "multipart/form-data; boundary=x"}), 400)


def test_unusable_inputs_are_422(client):
    assert "vocabulary" in error_of(client.post("/v1/search", json={"text": "qwertyuiop"}), 422, "invalid_input")
    error_of(client.post("/v1/search", files={"image": ("q.jpg", b"not an image at all")}), 422, "invalid_image")
    error_of(client.post("/v1/tag", files={"image": ("q.jpg", b"")}), 422, "invalid_image")
    error_of(client.post("/v1/search", json={"text": "sky", "labels": ["unicorns"]}), 422, "unknown_label")


def test_images_over_the_pixel_budget_are_422(client):
    from PIL import Image

    for size in ((9000, 9000), (2100, 100)):  # 81 MP; 21:1
        buf = io.BytesIO()
        Image.new("1", size).save(buf, format="PNG")
        assert len(buf.getvalue()) < 1024 * 1024
        message = error_of(client.post("/v1/tag", files={"image": ("big.png", buf.getvalue())}), 422, "invalid_image")
        assert f"{size[0]}x{size[1]}" in message


def test_wrong_media_type_is_415_and_unknown_routes_404_405(client):
    error_of(client.post("/v1/search", content=b"sky", headers={"content-type": "text/plain"}), 415)
    error_of(client.post("/v1/tag", json={"text": "sky"}), 415)
    error_of(client.get("/v1/nothing"), 404, "not_found")
    res = client.get("/v1/search")
    error_of(res, 405, "method_not_allowed")
    assert "POST" in res.headers["allow"]


def test_bodies_over_the_limit_are_413_by_length_and_while_streaming(client):
    big = b"\0" * (3 * 1024 * 1024)
    res = client.post("/v1/search", files={"image": ("big.jpg", big)})
    assert "2 MB" in error_of(res, 413, "too_large")

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        yield b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        for _ in range(48):
            yield b"\0" * 65536

    try:
        res = client.post("/v1/search", content=chunks(), headers={
            "content-type": "multipart/form-data; boundary=xyz"})
    except httpx.TransportError:  # the server may close the connection before reading all of the body
        return
    error_of(res, 413, "too_large")


def test_metrics_count_requests_batches_and_items(client):
    text = client.get("/metrics").text
    assert 'dagnn_http_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert "dagnn_batch_size_count" in text and 'dagnn_index_items{modality="image"}' in text
    assert "dagnn_ready 1" in text


def test_concurrent_adds_and_searches_never_500(client, data_dir):
    statuses, lock = [], threading.Lock()

    def worker(n):
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
            for j in range(6):
                if (n + j) % 2:
                    r = c.post("/v1/items", files={"image": ("p.jpg", photo(data_dir, (n + j) % 20))},
                               data={"id": f"c{n}-{j}"})
                else:
                    r = c.post("/v1/search", json={"text": "sky, clouds", "target": "image", "k": 20})
                with lock:
                    statuses.append(r.status_code)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) == [200, 201], statuses
    ids = [f"c{n}-{j}" for n in range(8) for j in range(6) if (n + j) % 2]
    for item_id in ids:
        assert client.delete(f"/v1/items/{item_id}").status_code == 200


# ---- 401, 503, shutdown ---------------------------------------------------------------------------------
def test_api_key_is_required_when_set(tmp_path, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path, "--host", "127.0.0.1", env={"DAGNN_API_KEY": "s3cret"}) as srv:
        res = httpx.get(srv.url + "/v1/info")
        error_of(res, 401, "unauthorized")
        assert res.headers["www-authenticate"] == "Bearer"
        error_of(httpx.get(srv.url + "/v1/info", headers={"Authorization": "Bearer wrong"}), 401)
        error_of(httpx.get(srv.url + "/metrics"), 401)
        assert httpx.get(srv.url + "/v1/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(srv.url + "/healthz").status_code == 200 and httpx.get(srv.url + "/").status_code == 200


def test_overload_is_503_with_retry_after(tmp_path, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path, "--max-in-flight", "1") as srv:
        release = threading.Event()

        def slow_body():  # holds the only in-flight slot while its body trickles in
            yield b"--b\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n"
            release.wait(20)
            yield b"3\r\n--b--\r\n"

        holder = threading.Thread(target=lambda: httpx.post(
            srv.url + "/v1/search", content=slow_body(), headers={"content-type": "multipart/form-data; boundary=b"},
            timeout=30))
        holder.start()
        try:
            deadline = time.monotonic() + 10
            while True:
                res = httpx.get(srv.url + "/v1/labels")
                if res.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            error_of(res, 503, "overloaded")
            assert res.headers["retry-after"] == "1"
        finally:
            release.set()
            holder.join()
        assert httpx.get(srv.url + "/v1/labels").status_code == 200


def test_loading_and_failed_loads_are_503_never_500(tmp_path, bundle_dir, index_dir):
    from starlette.testclient import TestClient

    from dagnn_runtime.server import create_app

    loading = TestClient(create_app(bundle_dir, index_dir))  # lifespan not started: still loading
    res = loading.get("/v1/info")
    error_of(res, 503, "loading")
    assert res.headers["retry-after"] == "1"
    error_of(loading.get("/readyz"), 503, "loading")
    assert loading.get("/healthz").status_code == 200

    broken = tmp_path / "broken-bundle"
    shutil.copytree(bundle_dir, broken)
    (broken / "classifiers.npy").write_bytes(b"tampered")
    with serve(broken, index_dir, tmp_path, ready=False) as srv:
        deadline = time.monotonic() + 30
        while (res := httpx.get(srv.url + "/readyz")).json()["error"]["code"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "classifiers.npy" in error_of(res, 503, "load_failed")
        error_of(httpx.post(srv.url + "/v1/search", json={"text": "sky"}), 503, "load_failed")


def test_sigterm_shuts_down_gracefully(tmp_path, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path) as srv:
        assert httpx.get(srv.url + "/v1/labels").status_code == 200
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) in (0, -signal.SIGTERM)
    log = srv.log()
    assert "Application shutdown complete" in log and "closed the index and the model" in log
    assert "Traceback" not in log


def test_changes_saved_by_another_writer_are_picked_up(tmp_path, bundle_dir, index_dir, model):
    from dagnn_runtime.indexes import open_index

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    with serve(bundle_dir, copy, tmp_path, "--refresh-s", "0.2") as srv:
        other = open_index(copy / "text", model=model)  # e.g. `dagnn index add` in another process
        other.add(model.encode_texts(["snow, river"]), ["from-elsewhere"], [{"tags": ["snow", "river"]}])
        other.save()
        other.close()
        deadline = time.monotonic() + 20
        while True:
            hits = httpx.post(srv.url + "/v1/search", json={"text": "snow, river", "target": "text", "k": 1}).json()
            if hits["results"][0]["id"] == "from-elsewhere":
                break
            assert time.monotonic() < deadline, "the server never saw the other writer's item"
            time.sleep(0.1)


def test_binding_beyond_loopback_needs_a_key(tmp_path, bundle_dir, index_dir):
    import subprocess
    import sys

    from serve_helpers import SERVE

    out = subprocess.run([sys.executable, "-c", SERVE, "serve", "--bundle", str(bundle_dir), "--index",
                          str(index_dir), "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in __import__("os").environ.items() if k != "DAGNN_API_KEY"})
    assert out.returncode == 1 and "--api-key" in out.stderr and "Traceback" not in out.stderr
