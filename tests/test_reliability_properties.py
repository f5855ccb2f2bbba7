"""Property-based tests of the two parsers that take arbitrary user input: the image decoder and the
text parser. Whatever comes in, the result is a correct value or the library's own input error."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bundle_factory import bundle_dir, model  # noqa: E402,F401  (session fixtures)

from dagnn_runtime.errors import ImageInputError, InputError  # noqa: E402
from dagnn_runtime.preprocess import load_image  # noqa: E402

MODES = ["1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "I", "F", "I;16"]
FORMATS = {"PNG": ("1", "L", "P", "LA", "RGB", "RGBA", "I;16"), "TIFF": tuple(MODES),
           "JPEG": ("L", "RGB", "CMYK"), "GIF": ("L", "P"), "BMP": ("1", "L", "P", "RGB"), "WEBP": ("RGB", "RGBA")}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


def _check(item, size=32):
    try:
        out = load_image(item, size)
    except ImageInputError as exc:
        assert str(exc).startswith("image ") and "\n" not in str(exc)
        return None
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    return out


@st.composite
def encoded_images(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode if mode not in
                                                                                   ("I", "F", "I;16") else "L")
    if mode in ("I", "F", "I;16"):
        img = Image.fromarray(np.asarray(img).astype({"I": np.int32, "F": np.float32, "I;16": np.uint16}[mode])
                              * {"I": 257, "F": 1 / 255, "I;16": 257}[mode])
    buf = io.BytesIO()
    img.save(buf, fmt)
    data = buf.getvalue()
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))   # sometimes truncated
    flips = draw(st.lists(st.integers(0, len(data) - 1), max_size=3))  # sometimes corrupted
    data = bytearray(data if cut is None else data[:cut])
    for i in flips:
        if i < len(data):
            data[i] ^= 0xFF
    return bytes(data), (w, h)


@SETTINGS
@given(encoded_images())
def test_any_encoded_image_decodes_to_pixels_or_is_refused(case):
    data, (w, h) = case
    out = _check(data)
    if out is not None and max(w, h) > 20 * min(w, h):
        raise AssertionError(f"{w}x{h} should have been refused as too elongated")


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes_never_escape_as_another_exception(data):
    _check(data)


@SETTINGS
@given(st.integers(1, 200), st.integers(1, 200), st.sampled_from([1, 3, 4]))
def test_any_uint8_array_of_a_sane_shape_is_accepted(w, h, channels):
    array = np.full((h, w, channels), 7, np.uint8)
    out = _check(array)
    assert (out is None) == (max(w, h) > 20 * min(w, h))


@SETTINGS
@given(st.one_of(st.text(max_size=12000), st.lists(st.text(max_size=40), max_size=600)))
def test_text_parser_returns_known_and_unknown_tags_or_input_error(model, text):
    try:
        known, unknown = model.parse_text(text)
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 300
        return
    assert set(known) <= set(model.vocab) and not set(unknown) & set(model.vocab)
    assert len(known) + len(unknown) <= 512
    assert len(set(known)) == len(known)
