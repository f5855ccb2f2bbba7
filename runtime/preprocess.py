"""Image decoding and resizing shared by training, export and the runtime — the one front door for images.

Training, export and serving must see identical pixels, so this is the only place that turns an image
into model input: decode with Pillow (first frame), apply the EXIF orientation, convert to RGB, resize the
shorter side to ``size`` (bicubic) and centre-crop to ``size`` x ``size``. The result is a uint8
``(size, size, 3)`` array; normalisation happens inside the model graph. ``iter_pixels`` is the one way a
list of images becomes such batches (the server's batcher stacks arrays made by ``load_image`` itself).

Images come from anywhere, so the size is checked from the file header *before* anything is decoded:
at most ``MAX_PIXELS`` decoded pixels and an aspect ratio of at most ``MAX_ASPECT`` (a 20000 x 1 strip
would otherwise be upscaled to gigabytes). Big JPEGs are decoded at 1/2 … 1/8 scale (``draft``) and other
big images box-reduced right after decoding, so memory stays a few hundred MB for the largest accepted
image; images whose short side is under ``4 * size`` are untouched by this, so their pixels are exactly
those of plain decoding. 16-bit and float images are scaled to 8 bits by their range instead of being
clipped to white. Every failure is an ``ImageInputError`` naming the image.
"""
from __future__ import annotations

import io
import os
import stat
from typing import Sequence, Union

import numpy as np
from PIL import Image

from .decode import decode_pool
from .errors import ImageInputError, shorten

DEFAULT_SIZE = 224
RESIZE_MODE = "shorter_side_bicubic_center_crop"
MAX_PIXELS = 64_000_000          # decoded width x height (after JPEG draft scaling)
MAX_ASPECT = 20                  # long side / short side
MAX_FILE_BYTES = 256 << 20
# Formats decoded by Pillow itself; others (EPS would run Ghostscript, for one) are refused.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "ICO", "TGA")  # JPEG covers MPO
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")

ImageLike = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


def describe(item: ImageLike) -> str:
    """How messages name an image: its path (undecodable bytes escaped, long names cut) or its kind."""
    if isinstance(item, (str, os.PathLike)):
        return f"image {shorten(os.fsdecode(item), 120, path=True)}"
    if isinstance(item, (bytes, bytearray)):
        return f"image bytes ({len(item)} bytes)"
    return f"image {type(item).__name__}"


def _open_file(item) -> Image.Image:
    path = os.fsdecode(item)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageInputError(f"{describe(item)}: no such file") from None
    except OSError as exc:
        raise ImageInputError(f"{describe(item)}: cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ImageInputError(f"{describe(item)}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block forever, a device never ends
        raise ImageInputError(f"{describe(item)}: is not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageInputError(f"{describe(item)}: {st.st_size} bytes, more than the {MAX_FILE_BYTES}-byte limit")
    with open(path, "rb") as f:  # read whole (bounded above): no file handle outlives this call
        data = f.read(MAX_FILE_BYTES + 1)
    return Image.open(io.BytesIO(data), formats=FORMATS)


def _check_size(width: int, height: int, item, decoded: bool) -> None:
    if width < 1 or height < 1:
        raise ImageInputError(f"{describe(item)}: empty image ({width}x{height})")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageInputError(f"{describe(item)}: {width}x{height} is more elongated than {MAX_ASPECT}:1")
    if decoded and width * height > MAX_PIXELS:
        raise ImageInputError(f"{describe(item)}: {width}x{height} is {width * height / 1e6:.0f} megapixels, "
                              f"more than the limit of {MAX_PIXELS / 1e6:.0f}")


def _decode(item: ImageLike, size: int) -> Image.Image:
    """Header, size checks, then the (possibly reduced) decode of the first frame, in the file's own mode."""
    if isinstance(item, Image.Image):
        _check_size(item.width, item.height, item, decoded=True)
        return item
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
            raise ImageInputError(f"{describe(item)}: expected a uint8 array of shape (H, W), (H, W, 1|3|4); "
                                  f"got {item.dtype} {item.shape}")
        _check_size(item.shape[1], item.shape[0], item, decoded=True)
        return Image.fromarray(item.squeeze(-1) if item.ndim == 3 and item.shape[2] == 1 else item)
    if isinstance(item, (bytes, bytearray)):
        if len(item) > MAX_FILE_BYTES:
            raise ImageInputError(f"{describe(item)}: more than the {MAX_FILE_BYTES}-byte limit")
        img = Image.open(io.BytesIO(bytes(item)), formats=FORMATS)
    elif isinstance(item, (str, os.PathLike)):
        img = _open_file(item)
    else:
        raise ImageInputError(f"{describe(item)}: unsupported input type (use a path, bytes, PIL image or uint8 array)")
    _check_size(img.width, img.height, item, decoded=False)
    if img.format in ("JPEG", "MPO") and min(img.size) >= 4 * size:
        # Decode at the smallest 1/2^k scale that keeps the short side at least 2 * size.
        k = 2 * size / min(img.size)
        img.draft("RGB" if img.mode == "RGB" else img.mode, (round(img.width * k), round(img.height * k)))
    _check_size(img.width, img.height, item, decoded=True)
    img.load()
    return img


def _reduce_big(img: Image.Image, size: int) -> Image.Image:
    """Box-reduce an image whose short side is at least 4 * size, keeping it at least 2 * size."""
    factor = min(img.size) // (2 * size)
    if factor < 2:
        return img
    if img.mode in _SIXTEEN_BIT:  # Pillow cannot reduce these: box-average in numpy, still 16-bit
        a = np.asarray(img)
        h, w = (a.shape[0] // factor) * factor, (a.shape[1] // factor) * factor
        a = a[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
        return Image.fromarray(np.rint(a).astype(np.uint16))
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    return img.reduce(factor)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grey images → "L", scaled by their range (Pillow would clip)."""
    a = np.asarray(img)
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535):
        out = a.astype(np.uint32)                                     # 0..65535 → 0..255, exact for v * 257
        out *= 255
        out += 32767
        out //= 65535
    elif img.mode == "F" and a.size and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1:
        out = np.rint(a * 255)                                        # the usual 0..1 float image
    else:                                                             # any other range: stretch min..max
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
        out = np.zeros(a.shape) if hi <= lo else np.rint((a - lo) * (255 / (hi - lo)))
    return Image.fromarray(out.astype(np.uint8), "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels onto white rather than whatever colour hides under alpha = 0.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(item: ImageLike, size: int = DEFAULT_SIZE) -> Image.Image:
    """Decode a path, raw bytes, PIL image or uint8 array into an upright RGB PIL image (first frame);
    images much larger than ``size`` come back reduced (see the module docstring)."""
    try:
        img = _decode(item, size)
        orientation = img.getexif().get(0x0112) if hasattr(img, "getexif") else None
        img = _reduce_big(img, size)
        if orientation in _ORIENTATION:
            img = img.transpose(_ORIENTATION[orientation])
        return _to_rgb(img)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{describe(item)}: too many pixels, refused as a decompression bomb ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many kinds; one bad image is input
        reason = "not an image in a supported format" if "cannot identify image file" in str(exc) else str(exc)
        reason = reason if len(reason) <= 120 else reason[:119] + "…"
        raise ImageInputError(f"{describe(item)}: cannot decode ({reason})") from exc


def resize_center_crop(img: Image.Image, size: int = DEFAULT_SIZE) -> Image.Image:
    """Shorter side to ``size`` (bicubic), then the centre ``size`` x ``size``. The aspect limit of
    ``open_image`` bounds the intermediate to ``MAX_ASPECT * size * size`` pixels."""
    if max(img.size) > MAX_ASPECT * min(img.size):
        raise ImageInputError(f"image {img.width}x{img.height} is more elongated than {MAX_ASPECT}:1")
    scale = size / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(item: ImageLike, size: int = DEFAULT_SIZE) -> np.ndarray:
    """One image → uint8 ``(size, size, 3)`` RGB array, exactly as the models were trained on."""
    img = open_image(item, size)
    try:
        return np.asarray(resize_center_crop(img, size), dtype=np.uint8)
    except ImageInputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ImageInputError(f"{describe(item)}: cannot resize ({exc})") from exc


class _Done:
    """A job run on the spot, with the ``result()`` of a future (so that one code path serves both)."""

    def __init__(self, fn, *args):
        self._args, self._fn = args, fn

    def result(self):
        return self._fn(*self._args)


def iter_pixels(items: Sequence, size: int, batch_size: int):
    """Images → yields per batch ``(positions, pixels, errors)``: the positions in ``items`` that decoded,
    their uint8 ``(n, size, size, 3)`` batch, and ``(position, ImageInputError)`` for the others.

    The one place that turns images into the encoders' batches, so that every caller sees the same pixels.
    Pillow releases the GIL, so the decoding threads (``decode.decode_pool``) run beside the caller's
    encoder: the next batch decodes while the caller encodes this one, and at most two are in memory. A
    single item is decoded on the spot (a thread hand-off would only add latency)."""
    pool = decode_pool() if len(items) > 1 else None
    starts = range(0, len(items), batch_size)

    def submit(start):
        chunk = range(start, min(start + batch_size, len(items)))
        if pool is None:
            return [(i, _Done(load_image, items[i], size)) for i in chunk]
        return [(i, pool.submit(load_image, items[i], size)) for i in chunk]

    pending = submit(starts[0]) if len(starts) else []
    for k in range(len(starts)):
        current, pending = pending, (submit(starts[k + 1]) if k + 1 < len(starts) else [])
        positions, arrays, errors = [], [], []
        for i, job in current:
            try:
                arrays.append(job.result())
                positions.append(i)
            except ImageInputError as exc:
                errors.append((i, exc))
        pixels = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), dtype=np.uint8)
        yield positions, pixels, errors


def load_batch(items, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Several images → one uint8 ``(n, size, size, 3)`` batch (``iter_pixels``); a bad image raises."""
    items = list(items)
    for _, pixels, errors in iter_pixels(items, size, max(1, len(items))):
        if errors:
            raise errors[0][1]
        return pixels
    return np.zeros((0, size, size, 3), dtype=np.uint8)
