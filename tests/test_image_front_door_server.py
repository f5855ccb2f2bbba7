"""The image front door behind a real ``dagnn serve``: an upload full of bad metadata tags adds at most one
line to the server's log, and an icon whose directory lies is answered 422 with the sizes."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
sys.path.insert(0, str(Path(__file__).parent))
import hostile  # noqa: E402
from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import build_index, serve  # noqa: E402


@pytest.fixture(scope="module")
def index(tmp_path_factory, model, data_dir):
    return build_index(model, data_dir, tmp_path_factory.mktemp("front-door-index") / "index")


@pytest.mark.parametrize("log_level", ["info", "debug"])
def test_uploads_with_thousands_of_bad_tags_add_at_most_one_log_line_each(tmp_path, bundle_dir, index, log_level):
    """Two uploads of a TIFF listing 3000 tags with data past its end and two of a JPEG whose EXIF lists
    5000: before, Pillow's per-tag warnings (and, at --log-level debug, its per-tag DEBUG records) put
    about 12,000 lines per upload in the server's log."""
    files = [hostile.tiff_with_tags(tmp_path / "tags.tif", 3000),
             hostile.jpeg_with_exif_tags(tmp_path / "exif.jpg", hostile.photo(), 5000)]
    with serve(bundle_dir, index, tmp_path, "--log-level", log_level) as srv:
        before = srv.log().splitlines()
        for path in files * 2:
            answer = httpx.post(srv.url + "/v1/tag", files={"image": (path.name, path.read_bytes())}, timeout=60)
            assert answer.status_code == 200, answer.text
        added = srv.log().splitlines()[len(before):]
    assert len(added) <= 12, added[:12]  # a few lines per request at most, whatever else logs at DEBUG
    about_tags = [line for line in added if re.search(r"[Tt]ag|PIL|warn", line)]
    assert len(about_tags) <= 4, about_tags[:6]  # one per upload at most ...
    for line in about_tags:  # ... and only the front door's summary, at DEBUG
        assert re.search(r"DEBUG: .*dagnn_runtime\.preprocess: image bytes \(\d+ bytes\): the decoder reported "
                         r"\d+ problems, not logged one by one", line), line


def test_an_icon_whose_embedded_image_is_over_the_budget_is_answered_422_with_its_sizes(tmp_path, bundle_dir, index):
    path = hostile.icon(tmp_path / "icon.ico", hostile.flat_png(13000, 13000, "RGBA"), declared=(16, 16))
    with serve(bundle_dir, index, tmp_path) as srv:
        answer = httpx.post(srv.url + "/v1/tag", files={"image": ("icon.ico", path.read_bytes())}, timeout=60)
    assert answer.status_code == 422, answer.text
    assert "the icon it holds (13000x13000; its directory says 16x16) is 169 megapixels, more than the limit of 64" \
        in answer.text, answer.text
