"""Image decoding and resizing shared by training, export and the runtime: the one preprocessing path.

Training, export and serving must see identical pixels, so this is the only place that turns an image
into model input: decode with Pillow (first frame), apply the EXIF orientation, convert to RGB, resize the
shorter side to ``size`` (bicubic) and centre-crop to ``size`` x ``size``. The result is a uint8
``(size, size, 3)`` array; normalisation happens inside the model graph. ``iter_pixels`` is the one way a
list of images becomes such batches (the server's batcher stacks arrays made by ``load_image`` itself).

Images come from anywhere, so nothing is decoded before the front door's checks (``image_checks``: the
format allow-list, the pixel and aspect limits checked from the header of the frame that will really be
decoded). Only the first frame of a multi-frame file (GIF, APNG, animated WEBP, TIFF pages, MPO) is ever
decoded, so the others are never looked at. Every decode first reserves its estimated memory from the
process's budget (``decode.reserve_decoding_memory``), so concurrent decodes (a server's uploads, ingest
threads) wait for room instead of adding up, and Pillow's warnings about a malformed file are counted,
at most one DEBUG line per image on this module's logger (``decoder_messages``).

Big JPEGs are decoded at 1/2 … 1/8 scale (``draft``) and other big images box-reduced right after
decoding, so memory stays a few hundred MB for the largest accepted image; images whose short side is
under ``4 * size`` are untouched by this, so their pixels are exactly those of plain decoding. 16-bit and
float images are scaled to 8 bits by their range instead of being clipped to white. Every failure is an
``ImageInputError`` naming the image.
"""
from __future__ import annotations

import io
import logging
from contextlib import ExitStack
from typing import Sequence

import numpy as np
from PIL import Image

from .decode import decode_pool, reserve_decoding_memory
from .decoder_messages import decoder_messages
from .errors import ImageInputError
from .image_checks import (FORMATS, MAX_ASPECT, MAX_FILE_BYTES, MAX_PIXELS, MAX_TIFF_TAGS, MAX_TILE_PIXELS,
                           MAX_WEBP_PIXELS, ImageLike, check_bytes, check_header, check_size, describe,
                           read_bounded)

__all__ = ["DEFAULT_SIZE", "RESIZE_MODE", "FORMATS", "MAX_ASPECT", "MAX_FILE_BYTES", "MAX_PIXELS",
           "MAX_TIFF_TAGS", "MAX_TILE_PIXELS", "MAX_WEBP_PIXELS", "ImageLike", "describe", "open_image",
           "resize_center_crop", "load_image", "iter_pixels", "load_batch"]

log = logging.getLogger(__name__)

DEFAULT_SIZE = 224
RESIZE_MODE = "shorter_side_bicubic_center_crop"
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _open_bytes(data: bytes, item, size: int, held: ExitStack) -> Image.Image:
    """Checks from the raw bytes, ``Image.open`` (lazy: only headers), checks of the frame, a reservation
    of its memory, then the (possibly reduced) decode of the first frame in the file's own mode."""
    formats, icon_cost = check_bytes(data, item)
    if icon_cost is not None:  # Pillow decodes an icon inside Image.open: reserve its memory first
        reserve_decoding_memory(held, icon_cost)
    img = Image.open(io.BytesIO(data), formats=formats)
    cost = check_header(img, data, item, size)
    if icon_cost is None:  # an icon is decoded already, under the reservation taken above
        reserve_decoding_memory(held, cost)
    img.load()
    return img


def _decode(item: ImageLike, size: int, held: ExitStack) -> Image.Image:
    """Header, size checks, then the (possibly reduced) decode of the first frame, in the file's own mode."""
    if isinstance(item, Image.Image):
        check_size(item.width, item.height, item, decoded=True)
        return item
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
            raise ImageInputError(f"{describe(item)}: expected a uint8 array of shape (H, W), (H, W, 1|3|4); "
                                  f"got {item.dtype} {item.shape}")
        check_size(item.shape[1], item.shape[0], item, decoded=True)
        return Image.fromarray(item.squeeze(-1) if item.ndim == 3 and item.shape[2] == 1 else item)
    return _open_bytes(read_bounded(item), item, size, held)


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
        with decoder_messages(item, log), ExitStack() as held:  # held: the decode's reservation of memory
            decoded = _decode(item, size, held)
            orientation = decoded.getexif().get(0x0112) if hasattr(decoded, "getexif") else None
            img = _reduce_big(decoded, size)
            if img is not decoded and decoded is not item:
                decoded.close()  # the full-size pixels go now, inside the reservation, whatever refers to them
            del decoded
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
