"""Image decoding and resizing shared by training, export and the runtime — the one front door for images.

Training, export and serving must see identical pixels, so this is the only place that turns an image
into model input: decode with Pillow (first frame), apply the EXIF orientation, convert to RGB, resize the
shorter side to ``size`` (bicubic) and centre-crop to ``size`` x ``size``. The result is a uint8
``(size, size, 3)`` array; normalisation happens inside the model graph. ``iter_pixels`` is the one way a
list of images becomes such batches (the server's batcher stacks arrays made by ``load_image`` itself).

Images come from anywhere, so this is a front door: only the formats in ``FORMATS`` are opened, and the
size of what will really be decoded is checked from that frame's own header *before* it is decoded: at
most ``MAX_PIXELS`` decoded pixels (``MAX_WEBP_PIXELS`` for WEBP) and an aspect ratio of at most
``MAX_ASPECT`` (a 20000 x 1 strip would otherwise be upscaled to gigabytes). Only the first frame of a
multi-frame file (GIF, APNG, animated WEBP, TIFF pages, MPO) is ever decoded, so the others are never
looked at. Where a container's own header does not say what gets decoded, the frame's header is read:
an ICO's directory may say 16x16 for an icon whose embedded PNG or BMP is 30000x30000, and Pillow decodes
that icon inside ``Image.open``, so it is checked from the raw bytes first. Decoders that hold more than
the image are counted too: a progressive (or multi-scan) JPEG keeps every coefficient at full size even
when decoded at reduced scale, a TIFF tile is decoded whole (so a tile may not be larger than its image
or 1 megapixel), and a TIFF directory may list at most ``MAX_TIFF_TAGS`` entries.

Big JPEGs are decoded at 1/2 … 1/8 scale (``draft``) and other big images box-reduced right after
decoding, so memory stays a few hundred MB for the largest accepted image; images whose short side is
under ``4 * size`` are untouched by this, so their pixels are exactly those of plain decoding. Every decode
first reserves its estimated memory from the process's budget (``decode.decode_memory``), so concurrent
decodes (a server's uploads, ingest threads) wait for room instead of adding up. 16-bit and float images
are scaled to 8 bits by their range instead of being clipped to white.

Pillow reports problems of a malformed file as warnings (``warnings.warn``) or log records, one per bad
tag or chunk: while this module decodes an image they are captured and counted, and at most one line per
image is logged (at DEBUG, by the ``dagnn_runtime.preprocess`` logger). Every failure is an
``ImageInputError`` naming the image.
"""
from __future__ import annotations

import ctypes
import io
import logging
import os
import stat
import struct
import threading
import warnings
from contextlib import ExitStack, contextmanager
from typing import Sequence, Union

import numpy as np
from PIL import Image

from .decode import decode_memory, decode_pool
from .errors import ImageInputError, shorten

log = logging.getLogger(__name__)

DEFAULT_SIZE = 224
RESIZE_MODE = "shorter_side_bicubic_center_crop"
MAX_PIXELS = 64_000_000          # decoded width x height (after JPEG draft scaling)
MAX_WEBP_PIXELS = 32_000_000     # libwebp's animation decoder, which Pillow uses, holds the canvas 3 times
MAX_ASPECT = 20                  # long side / short side
MAX_FILE_BYTES = 256 << 20
MAX_TIFF_TAGS = 4096             # entries in a TIFF directory (real files have well under 200)
MAX_TILE_PIXELS = 1 << 20        # a TIFF tile may be larger than its image up to this many pixels
# Formats decoded by Pillow itself; others (EPS would run Ghostscript, for one) are refused.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "ICO", "TGA")  # JPEG covers MPO
# Estimated peak bytes per decoded pixel, decoder and conversions included (measured: 5.7 to 8.7 for PNG,
# GIF, TIFF, BMP and ICO at 64 megapixels, 14.7 for WEBP): what a decode reserves from ``decode_memory``.
_BYTES_PER_PIXEL = {"WEBP": 16}
_DEFAULT_BYTES_PER_PIXEL = 10
_TRIM_FROM = 16 << 20            # after a decode estimated at this many bytes or more, give memory back
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
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


# ---- what Pillow says about a malformed file: counted per image, at most one line logged ------------------
class _Captured(threading.local):
    active = False
    count = 0
    first = None
    pending = None


_captured = _Captured()


class _MessageWhileDecoding:
    """The message part of a ``warnings`` filter that applies only in a thread decoding an image here."""

    def match(self, text) -> bool:
        if _captured.active:
            _captured.pending = text
            return True
        return False


class _ModuleWhileDecoding:
    """The module part of that filter: counts the warning (its message was seen just before)."""

    def match(self, module) -> bool:
        if _captured.active:
            _captured.count += 1
            if _captured.first is None:
                _captured.first = str(_captured.pending)
            return True
        return False


class _RecordsWhileDecoding(logging.Filter):
    """On Pillow's loggers: a record made while this thread decodes an image is not logged (its DEBUG
    records name every tag); one of WARNING or above is counted like a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _captured.active:
            return True
        if record.levelno >= logging.WARNING:
            _captured.count += 1
            if _captured.first is None:
                _captured.first = record.getMessage()
        return False


# ("ignore", message, category, module, lineno) — Python's warnings machinery calls ``match`` on the
# message and module parts, so this filter is inert in every thread that is not decoding here.
_WARNINGS_FILTER = ("ignore", _MessageWhileDecoding(), Warning, _ModuleWhileDecoding(), 0)
_RECORDS_FILTER = _RecordsWhileDecoding()
_install_lock = threading.Lock()
_pil_loggers_seen = -1


def _install_filters() -> None:
    """Keep the warnings filter first (a ``catch_warnings`` elsewhere may have put its own before it or
    dropped it) and the records filter on every ``PIL`` logger (plugins are imported lazily)."""
    global _pil_loggers_seen
    Image.init()  # import every plugin now, so that their loggers exist
    filters = warnings.filters
    loggers = logging.Logger.manager.loggerDict
    if filters and filters[0] is _WARNINGS_FILTER and len(loggers) == _pil_loggers_seen:
        return
    with _install_lock:
        filters = warnings.filters
        if not filters or filters[0] is not _WARNINGS_FILTER:
            while _WARNINGS_FILTER in filters:
                filters.remove(_WARNINGS_FILTER)
            filters.insert(0, _WARNINGS_FILTER)
        if len(loggers) != _pil_loggers_seen:
            for name in list(loggers):
                if name == "PIL" or name.startswith("PIL."):
                    logger = logging.getLogger(name)
                    if _RECORDS_FILTER not in logger.filters:
                        logger.addFilter(_RECORDS_FILTER)
            _pil_loggers_seen = len(loggers)


@contextmanager
def _decoder_messages(item):
    """Capture the warnings and Pillow log records of this thread while it decodes ``item``; afterwards
    log one DEBUG line if there were any (never one per bad tag: a TIFF can carry thousands)."""
    if _captured.active:  # nested: the outer capture counts them
        yield
        return
    _install_filters()
    _captured.active, _captured.count, _captured.first, _captured.pending = True, 0, None, None
    try:
        yield
    finally:
        count, first = _captured.count, _captured.first
        _captured.active, _captured.count, _captured.first, _captured.pending = False, 0, None, None
        if count:
            log.debug("%s: the decoder reported %d problem%s, not logged one by one (first: %s)", describe(item),
                      count, "" if count == 1 else "s", shorten(first or "", 120))


# ---- the front door ----------------------------------------------------------------------------------------
def _read(item) -> bytes:
    """The bytes of a path or bytes input, bounded by ``MAX_FILE_BYTES``."""
    if isinstance(item, (bytes, bytearray)):
        if len(item) > MAX_FILE_BYTES:
            raise ImageInputError(f"{describe(item)}: more than the {MAX_FILE_BYTES}-byte limit")
        return bytes(item)
    if not isinstance(item, (str, os.PathLike)):
        raise ImageInputError(f"{describe(item)}: unsupported input type (use a path, bytes, PIL image or uint8 array)")
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
    if len(data) > MAX_FILE_BYTES:  # grew since stat
        raise ImageInputError(f"{describe(item)}: more than the {MAX_FILE_BYTES}-byte limit")
    return data


def _check_size(width: int, height: int, item, decoded: bool, subject: str | None = None,
                limit: int = MAX_PIXELS, note: str = "") -> None:
    subject = subject or f"{width}x{height}"
    if width < 1 or height < 1:
        raise ImageInputError(f"{describe(item)}: empty image ({width}x{height})")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageInputError(f"{describe(item)}: {subject} is more elongated than {MAX_ASPECT}:1")
    if decoded and width * height > limit:
        mp = width * height / 1e6
        mp = f"{mp:.0f}" if round(mp) != limit / 1e6 else f"{mp:.2f}"  # never "32, more than the limit of 32"
        raise ImageInputError(f"{describe(item)}: {subject} is {mp} megapixels, "
                              f"more than the limit of {limit / 1e6:.0f}{note}")


def _icon_frame(data: bytes) -> tuple:
    """The size of the image an ICO file really holds for the entry Pillow decodes (which it does inside
    ``Image.open``), read from that image's own PNG or BMP header, and the size its directory gives."""
    from PIL import BmpImagePlugin, IcoImagePlugin, PngImagePlugin

    ico = IcoImagePlugin.IcoFile(io.BytesIO(data))
    # IcoImageFile._open takes the first (largest) entry's size, load() decodes getimage(that size)
    entry = ico.entry[ico.getentryindex(ico.entry[0].dim)]
    buf = io.BytesIO(data)
    buf.seek(entry.offset)
    if data[entry.offset:entry.offset + 8] == _PNG_MAGIC:
        width, height = PngImagePlugin.PngImageFile(buf).size
    else:
        width, height = BmpImagePlugin.DibImageFile(buf).size
        height = int(height / 2)  # the colour image above its AND mask, as IcoFile.frame cuts it
    return (width, height), entry.dim


def _tiff_entries(data: bytes) -> int | None:
    """How many entries a TIFF file's first directory lists (None when it is no TIFF or cut short)."""
    if len(data) < 16 or data[:2] not in (b"II", b"MM") or not {42, 43} & set(data[2:4]):
        return None
    order = "<" if data[:2] == b"II" else ">"
    big = 43 in data[2:4]  # BigTIFF: 8-byte offsets and counts
    offset = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    width = 8 if big else 2
    if offset + width > len(data):
        return None
    return struct.unpack_from(order + ("Q" if big else "H"), data, offset)[0]


def _jpeg_whole_buffer(data: bytes) -> tuple[str, int]:
    """Why libjpeg would keep every DCT coefficient of the whole image while decoding, whatever the draft
    scale: "progressive", "multi-scan" (a first scan that does not interleave every component) or
    "unread" (the markers before the first scan cannot be followed: assume the worst); "" when it decodes
    a row of blocks at a time. Also the number of components."""
    i, n = 2, len(data)
    components, progressive, frame = 4, True, False
    while i + 2 <= n:
        if data[i] != 0xFF:
            break  # junk between markers
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            i += 2
            continue
        if marker == 0xD9 or i + 4 > n:
            break
        length = (data[i + 2] << 8) | data[i + 3]
        segment = data[i + 4:i + 2 + length]
        if length < 2 or len(segment) != length - 2:
            break
        if marker in _JPEG_SOF and len(segment) >= 6:
            components, progressive, frame = max(1, segment[5]), marker in _JPEG_PROGRESSIVE, True
        elif marker == 0xDA:
            if frame and segment:
                return "progressive" if progressive else "multi-scan" if segment[0] < components else "", components
            break
        i += 2 + length
    return "unread", components


def _as_int(value, default: int = 0) -> int:
    try:
        return int(value[0] if isinstance(value, tuple) else value)
    except (TypeError, ValueError, IndexError):
        return default


def _check_header(img: Image.Image, data: bytes, item, size: int) -> int:
    """Every check of the opened (not yet decoded) first frame; asks JPEGs for a reduced decode. Returns
    the estimated peak bytes of decoding it."""
    _check_size(img.width, img.height, item, decoded=False)
    extra = 0
    if img.format in ("JPEG", "MPO"):
        whole, components = _jpeg_whole_buffer(data)
        if whole:  # every coefficient is kept at full size: the reduced decode does not help memory
            subject = (f"{whole} JPEG {img.width}x{img.height}" if whole != "unread" else
                       f"JPEG {img.width}x{img.height} (its scans could not be read ahead)")
            _check_size(img.width, img.height, item, decoded=True, subject=subject,
                        note=" (libjpeg holds such a JPEG whole, even when decoding it at reduced scale)")
            extra = img.width * img.height * components * 2
        if min(img.size) >= 4 * size:
            # Decode at the smallest 1/2^k scale that keeps the short side at least 2 * size.
            k = 2 * size / min(img.size)
            img.draft("RGB" if img.mode == "RGB" else img.mode, (round(img.width * k), round(img.height * k)))
    elif img.format == "TIFF":
        tags = img.tag_v2
        samples = max(1, _as_int(tags.get(277), 1))
        bits = tags.get(258, 8)
        bits = max([_as_int(b, 8) for b in (bits if isinstance(bits, tuple) else (bits,))] or [8])
        tile_w, tile_h = _as_int(tags.get(322)), _as_int(tags.get(323))
        if tile_w > 0 and tile_h > 0:
            if tile_w * tile_h > max(img.width * img.height, MAX_TILE_PIXELS):
                raise ImageInputError(f"{describe(item)}: TIFF tiles of {tile_w}x{tile_h} for a {img.width}x"
                                      f"{img.height} image (a tile may be at most as large as its image or "
                                      f"{MAX_TILE_PIXELS / 1e6:.0f} megapixel)")
            extra = tile_w * tile_h * samples * -(-bits // 8)
        else:  # libtiff decodes a strip at a time, at most the whole image
            rows = min(max(1, _as_int(tags.get(278), img.height)), img.height)
            extra = img.width * rows * samples * -(-bits // 8)
    limit = MAX_WEBP_PIXELS if img.format == "WEBP" else MAX_PIXELS
    _check_size(img.width, img.height, item, decoded=True, limit=limit,
                note=" for WEBP" if img.format == "WEBP" else "")
    return img.width * img.height * _BYTES_PER_PIXEL.get(img.format, _DEFAULT_BYTES_PER_PIXEL) + extra


_malloc_trim = None


def _give_back_memory() -> None:
    """Return freed memory to the system (glibc's ``malloc_trim``; elsewhere nothing). glibc keeps what a
    thread frees in that thread's own arena: a server's request threads decoding big images one after the
    other would each keep the few hundred MB of the last one (16 uploads of a 64-megapixel icon: 5.3 GB)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except Exception:  # noqa: BLE001 - not glibc (musl, macOS, Windows): nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def _reserve(held: ExitStack, cost: int) -> None:
    """Reserve ``cost`` bytes of the process's decoding memory until ``held`` closes; a big decode gives
    its memory back to the system before its reservation ends (``held`` unwinds last in, first out)."""
    held.enter_context(decode_memory().reserve(cost))
    if cost >= _TRIM_FROM:
        held.callback(_give_back_memory)


def _open_bytes(data: bytes, item, size: int, held: ExitStack) -> Image.Image:
    """Checks from the raw bytes, ``Image.open`` (lazy: only headers), checks of the frame, a reservation
    of its memory, then the (possibly reduced) decode of the first frame in the file's own mode."""
    formats, reserved = FORMATS, False
    if data[:4] == b"\x00\x00\x01\x00":  # ICO: Pillow decodes the icon inside Image.open
        try:
            (width, height), declared = _icon_frame(data)
        except Exception:  # noqa: BLE001 - not an icon Pillow can read: never let its ICO plugin try
            formats = tuple(f for f in FORMATS if f != "ICO")
        else:
            subject = f"the icon it holds ({width}x{height}; its directory says {declared[0]}x{declared[1]})"
            _check_size(width, height, item, decoded=True, subject=subject)
            _reserve(held, width * height * _DEFAULT_BYTES_PER_PIXEL)
            # One reservation per decode (a second one could wait for the first forever), so this file is
            # opened as nothing but the icon that was checked.
            formats, reserved = ("ICO",), True
    entries = _tiff_entries(data)
    if entries is not None and entries > MAX_TIFF_TAGS:
        raise ImageInputError(f"{describe(item)}: its TIFF directory lists {entries} entries, more than the "
                              f"limit of {MAX_TIFF_TAGS}")
    img = Image.open(io.BytesIO(data), formats=formats)
    cost = _check_header(img, data, item, size)
    if not reserved:  # an icon is decoded already, under the reservation taken above
        _reserve(held, cost)
    img.load()
    return img


def _decode(item: ImageLike, size: int, held: ExitStack) -> Image.Image:
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
    return _open_bytes(_read(item), item, size, held)


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
        with _decoder_messages(item), ExitStack() as held:  # held: the decode's reservation of memory
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
