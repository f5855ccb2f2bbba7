"""``GET /v1/items/{id}/image`` against a real ``dagnn serve``: only a regular file inside the index's photo
folders is served, checked when it is opened, at every request (issue 24). Photos are changed on disk
while the server runs, as a user (or another program) would change them after indexing."""
from __future__ import annotations

import os
import shutil
import stat
import time

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx")

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import assert_stopped_cleanly, build_index, serve  # noqa: E402

SECRET = b"secret: not a photo of the index\n"


@pytest.fixture(scope="module")
def layout(tmp_path_factory, model, data_dir):
    """A copy of the data set, its index, and two items whose stored path lies outside the photo folders
    (what a tampered index or another tool could record)."""
    from dagnn_runtime.indexes import open_index

    root = tmp_path_factory.mktemp("files")
    shutil.copytree(data_dir, root / "data")
    index = build_index(model, root / "data", root / "index")
    (root / "outside").mkdir()
    (root / "outside" / "secret.jpg").write_bytes(SECRET)
    moved = {"6": str(root / "outside" / "secret.jpg"), "7": "/etc/passwd"}
    image_index = open_index(index / "image", model=model, modality="image")
    image_index.rewrite(lambda ids, vectors, metas: [{**m, "path": moved[i]} if i in moved else None
                                                     for i, m in zip(ids, metas)])
    image_index.close()
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundle_dir, layout):
    with serve(bundle_dir, layout / "index", tmp_path_factory.mktemp("logs")) as srv:
        yield srv
    assert_stopped_cleanly(srv)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def photo_path(layout, item_id: str):
    return layout / "data" / "images" / f"im{item_id}.jpg"


def refused(res, item_id: str) -> None:
    assert res.status_code == 404, (res.status_code, res.content[:200])
    body = res.json()
    assert body == {"error": {"code": "no_file",
                              "message": f"the image file of item {item_id!r} is not available"}}, body


def test_a_photo_replaced_by_a_link_is_not_served(client, layout, server):
    """The probe: a registered photo replaced later by a link to /etc/passwd was served as image/jpeg. A
    photo left as it was is still served, with its bytes."""
    res = client.get("/v1/items/2/image")
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    assert res.content == photo_path(layout, "2").read_bytes()
    assert int(res.headers["content-length"]) == len(res.content)
    target = photo_path(layout, "0")
    target.unlink()
    target.symlink_to("/etc/passwd")
    res = client.get("/v1/items/0/image")
    refused(res, "0")
    assert b"root:" not in res.content
    other = photo_path(layout, "1")  # a link to another photo of the index: no link is followed at all
    other.unlink()
    other.symlink_to(photo_path(layout, "2"))
    refused(client.get("/v1/items/1/image"), "1")
    assert "not serving the photo of item '0'" in server.log() and "symbolic link" in server.log()


def test_a_folder_replaced_by_a_link_is_refused_at_each_request(client, layout):
    """A link anywhere below the photo folder, made after indexing: refused while it is there, served
    again once the real folder is back (checked when opened, not when registered)."""
    images = layout / "data" / "images"
    expected = photo_path(layout, "5").read_bytes()
    assert client.get("/v1/items/5/image").content == expected
    images.rename(layout / "data" / "images.real")
    images.symlink_to(layout / "data" / "images.real")
    try:
        refused(client.get("/v1/items/5/image"), "5")
    finally:
        images.unlink()
        (layout / "data" / "images.real").rename(images)
    assert client.get("/v1/items/5/image").content == expected


def test_special_files_are_refused_without_blocking(client, layout, server):
    """A FIFO (opening it for reading would wait for a writer), a folder, a device, and a /proc file (a
    "regular" file of size 0 that has content: it broke the response's Content-Length): all 404 at once,
    and the server keeps answering."""
    fifo = photo_path(layout, "3")
    fifo.unlink()
    os.mkfifo(fifo)
    folder = photo_path(layout, "4")
    folder.unlink()
    folder.mkdir()
    proc = photo_path(layout, "8")
    proc.unlink()
    proc.symlink_to("/proc/self/status")
    cases = ["3", "4", "8"]
    device = photo_path(layout, "9")
    device.unlink()
    try:
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
        cases.append("9")
    except (PermissionError, OSError):  # no CAP_MKNOD here: the other cases still run
        pass
    for item_id in cases:
        start = time.monotonic()
        refused(client.get(f"/v1/items/{item_id}/image", timeout=5), item_id)
        assert time.monotonic() - start < 3, item_id
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/items/2/image").status_code == 200
    assert "protocol" not in server.log().lower(), server.log()


def test_a_path_outside_the_photo_folders_is_not_served(client):
    """Stored paths of items 6 and 7 point outside the index's recorded roots (a regular file, and
    /etc/passwd): never served, whatever the index says."""
    for item_id in ("6", "7"):
        res = client.get(f"/v1/items/{item_id}/image")
        refused(res, item_id)
        assert SECRET not in res.content and b"root:" not in res.content


def test_a_file_over_the_size_limit_is_refused(client, layout):
    """A 65 MB file (sparse: nothing written) where a photo was: refused from its size, never read."""
    big = photo_path(layout, "10")
    with open(big, "r+b") as f:
        f.truncate(65 * 1024 * 1024)
    start = time.monotonic()
    refused(client.get("/v1/items/10/image"), "10")
    assert time.monotonic() - start < 3
