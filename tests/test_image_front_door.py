"""The image front door (issue 24): what is really decoded is checked before it is decoded, and a file
full of bad metadata makes one log line at most, not one per tag.

Every hostile file is generated here (tests/hostile.py). Memory is measured in fresh processes and against a
real ``dagnn serve`` by tests/test_reliability_memory.py (bench/hostile_memory.py).
"""
from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import hostile  # noqa: E402

from dagnn_runtime.errors import ImageInputError  # noqa: E402
from dagnn_runtime.preprocess import load_image  # noqa: E402


def refusal(path) -> str:
    with pytest.raises(ImageInputError) as caught:
        load_image(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def no_warnings():
    """Every warning raised inside, whatever the filters say (the front door must capture its own)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# ---- ICO: the directory says one size, the icon it holds is another -----------------------------------------
@pytest.mark.parametrize("image, real", [
    (hostile.png_header_bytes(12000, 12000), (12000, 12000)),  # under Pillow's own bomb limit: it decodes it
    (hostile.png_header_bytes(30000, 30000), (30000, 30000)),
    (hostile.dib_header_only(9000, 9000), (9000, 9000)),       # a BMP icon (colour image over AND mask)
], ids=["png_12000", "png_30000", "bmp_9000"])
def test_an_icon_far_larger_than_its_directory_says_is_refused_before_decoding(tmp_path, image, real):
    """Pillow decodes an icon inside Image.open, at the size of its embedded PNG or BMP header, whatever
    the directory says: before, a 0.7 MB icon took 763 MB before its size was checked."""
    path = hostile.icon(tmp_path / "icon.ico", image, declared=(16, 16))
    w, h = real
    t0 = time.perf_counter()
    message = refusal(path)
    assert re.fullmatch(rf"image '.*/icon\.ico': the icon it holds \({w}x{h}; its directory says 16x16\) is "
                        rf"{round(w * h / 1e6)} megapixels, more than the limit of 64", message), message
    assert time.perf_counter() - t0 < 2  # nothing was decoded (12000x12000 RGBA is 576 MB to fill)


def test_an_icon_within_the_budget_but_larger_than_declared_decodes_like_the_image_it_holds(tmp_path, no_warnings):
    """A 16x16 entry holding a 4000x4000 PNG: decoded at its real size (under the budget, with memory
    reserved for that size), the same pixels as the PNG alone, and Pillow's "Image was not the expected
    size" warning stays inside."""
    png = hostile.flat_png(4000, 4000, "RGBA", value=90)
    path = hostile.icon(tmp_path / "icon.ico", png, declared=(16, 16))
    assert (load_image(path) == load_image(png)).all()
    small = hostile.photo(48, 64)
    honest = hostile.icon(tmp_path / "honest.ico", png_bytes(small), declared=(64, 48))
    assert (load_image(honest) == load_image(small)).all()
    assert [str(w.message) for w in no_warnings] == []


# ---- many bad tags: one line at most ----------------------------------------------------------------------------
def _many_tags(kind: str, folder: Path) -> Path:
    if kind == "tiff":
        return hostile.tiff_with_tags(folder / "tags.tif", 3000)
    return hostile.jpeg_with_exif_tags(folder / "exif.jpg", hostile.photo(), 5000)


@pytest.mark.parametrize("kind", ["tiff", "jpeg_exif"])
def test_a_file_with_thousands_of_bad_tags_logs_at_most_one_line_per_image(tmp_path, caplog, no_warnings, kind):
    """A TIFF listing 3000 tags whose data lies past its end, or a JPEG whose EXIF block lists 5000 such
    tags: Pillow warns once per tag (and logs each at DEBUG). Both images still decode; per image at most
    one DEBUG line says how many problems there were."""
    path = _many_tags(kind, tmp_path)
    caplog.set_level(logging.DEBUG)
    first = load_image(path)
    assert (load_image(path) == first).all()
    assert [str(w.message) for w in no_warnings][:3] == []
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert len(records) <= 2, records[:5]
    for name, level, message in records:
        assert (name, level) == ("dagnn_runtime.preprocess", "DEBUG")
        assert re.match(r"image '.*': the decoder reported \d+ problems, not logged one by one \(first: .*tag",
                        message), message


@pytest.mark.parametrize("kind", ["tiff", "jpeg_exif"])
def test_a_file_with_thousands_of_bad_tags_prints_nothing_in_a_fresh_process(tmp_path, kind):
    """The same with Python's default warning filters and no logging set up (what `dagnn tag` and a script
    see): before, 3000 tags printed 6000 lines on stderr per image."""
    path = _many_tags(kind, tmp_path)
    code = ("import sys; from dagnn_runtime.preprocess import load_image; "
            "[load_image(sys.argv[1]) for _ in range(2)]; print('ok')")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-2000:]
    assert done.stderr == "", done.stderr.splitlines()[:4]


def test_a_tiff_directory_with_more_entries_than_the_limit_is_refused_before_pillow_reads_it(tmp_path):
    path = hostile.tiff_with_tags(tmp_path / "tags.tif", 20000)
    message = refusal(path)
    assert re.fullmatch(r"image '.*/tags\.tif': its TIFF directory lists 20009 entries, more than the limit "
                        r"of 4096", message), message


# ---- decoders that hold more than the image ---------------------------------------------------------------------
@pytest.mark.parametrize("progressive", [True, False], ids=["progressive", "multi_scan"])
def test_a_jpeg_that_libjpeg_holds_whole_counts_at_full_size(tmp_path, progressive):
    """A 1 KB progressive JPEG declaring 13000x13000 (or a sequential one whose first scan holds one of
    its three components) was accepted because its 1/8-scale decode is 2.6 megapixels, and libjpeg then
    allocated every coefficient of the full image: 1 GB."""
    path = hostile.jpeg_header_only(tmp_path / "big.jpg", 13000, 13000, progressive=progressive,
                                    interleaved=progressive)
    message = refusal(path)
    kind = "progressive" if progressive else "multi-scan"
    assert re.fullmatch(rf"image '.*/big\.jpg': {kind} JPEG 13000x13000 is 169 megapixels, more than the limit "
                        rf"of 64 \(libjpeg holds such a JPEG whole, even when decoding it at reduced scale\)",
                        message), message
    # an ordinary progressive photo still decodes, to nearly the pixels of its baseline twin
    pixels = hostile.photo(300, 400)
    Image.fromarray(pixels).save(tmp_path / "prog.jpg", quality=95, progressive=True)
    Image.fromarray(pixels).save(tmp_path / "base.jpg", quality=95)
    a, b = load_image(tmp_path / "prog.jpg").astype(int), load_image(tmp_path / "base.jpg").astype(int)
    assert np.abs(a - b).mean() < 1


def test_tiff_tiles_larger_than_their_image_are_refused(tmp_path):
    """A 64x64 TIFF stored as one 16384x16384 RGBA tile (1 MB of deflate): libtiff decodes the whole tile,
    1 GB. A small image in one 256x256 tile (what GDAL writes) still decodes."""
    message = refusal(hostile.tiff_tiled(tmp_path / "tiles.tif", 64, 64, 16384, samples=4))
    assert re.fullmatch(r"image '.*/tiles\.tif': TIFF tiles of 16384x16384 for a 64x64 image \(a tile may be "
                        r"at most as large as its image or 1 megapixel\)", message), message
    assert load_image(hostile.tiff_tiled(tmp_path / "small.tif", 64, 64, 256, samples=4)).shape == (224, 224, 3)


# ---- multi-frame files: the first frame is checked and decoded, the others are never read ----------------------
def test_an_animated_webp_canvas_over_the_webp_limit_is_refused(tmp_path):
    """Pillow decodes every WEBP through libwebp's animation decoder, which holds the canvas three times:
    a 144-byte 8000x8000 animation took 1 GB. A small animation decodes its first frame."""
    message = refusal(hostile.animated_webp(tmp_path / "big.webp", 8000, 8000))
    assert re.fullmatch(r"image '.*/big\.webp': 8000x8000 is 64 megapixels, more than the limit of 32 for WEBP",
                        message), message
    small = hostile.animated_webp(tmp_path / "small.webp", 300, 200)
    assert (load_image(small) == load_image(Image.new("RGB", (300, 200), (30, 120, 200)))).all()


def test_an_mpo_whose_first_frame_is_a_huge_progressive_jpeg_is_refused(tmp_path):
    path = hostile.mpo_frames(tmp_path / "pair.mpo", hostile.photo(), first=(13000, 13000), progressive_first=True)
    message = refusal(path)
    assert "progressive JPEG 13000x13000 is 169 megapixels" in message, message


@pytest.mark.parametrize("kind", ["gif", "tiff", "mpo"])
def test_only_the_first_frame_is_decoded_whatever_the_later_ones_declare(tmp_path, kind, no_warnings):
    """A second frame declaring 65535x65535 (GIF), 30000x30000 (TIFF page) or 60000x60000 (MPO) is never
    read: the result is that of the first frame alone."""
    pixels = hostile.photo()
    if kind == "gif":
        path = hostile.gif_frames(tmp_path / "two.gif", pixels)
        Image.fromarray(pixels).save(tmp_path / "one.gif")
        alone = tmp_path / "one.gif"
    elif kind == "tiff":
        path = hostile.tiff_pages(tmp_path / "two.tif", pixels[..., 1])
        alone = pixels[..., 1].copy()
    else:
        path = hostile.mpo_frames(tmp_path / "two.mpo", pixels, second=(60000, 60000))
        alone = Image.open(path)  # the first frame, decoded by Pillow itself
        alone.load()
    assert (load_image(path) == load_image(alone)).all()
    assert [str(w.message) for w in no_warnings] == []


# ---- the decoding-memory budget -----------------------------------------------------------------------------------
def test_the_memory_budget_makes_concurrent_decodes_wait_for_room_first_come_first_served():
    from dagnn_runtime.decode import MemoryBudget

    budget = MemoryBudget(100)
    events, lock = [], threading.Lock()

    def job(name, nbytes, hold):
        with budget.reserve(nbytes):
            with lock:
                events.append(("start", name, budget.in_use))
            time.sleep(hold)
        with lock:
            events.append(("end", name))

    threads = []
    for name, nbytes, hold in [("a", 60, 0.3), ("b", 60, 0.1), ("c", 30, 0.1), ("big", 500, 0.1), ("d", 10, 0)]:
        threads.append(threading.Thread(target=job, args=(name, nbytes, hold)))
        threads[-1].start()
        time.sleep(0.05)  # arrive in this order
    for t in threads:
        t.join(10)
    starts = [e[1] for e in events if e[0] == "start"]
    assert starts == ["a", "b", "c", "big", "d"]  # c (30) fits beside a, but waits its turn behind b
    order = [e[:2] for e in events]
    assert order.index(("start", "b")) > order.index(("end", "a"))
    assert order.index(("start", "big")) > max(order.index(("end", n)) for n in "abc")  # alone
    assert all(e[2] <= 100 for e in events if e[0] == "start" and e[1] != "big")
    assert budget.in_use == 0
