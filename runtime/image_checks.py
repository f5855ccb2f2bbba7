"""The image front door's checks: what an untrusted image must pass before any of its pixels are decoded.

Images come from anywhere (uploads, folders, tables of paths), so ``preprocess`` decodes nothing that has
not been checked here first. Only the formats in ``FORMATS`` are opened, files are read whole but bounded
(``MAX_FILE_BYTES``), and the size of what will really be decoded is checked from that frame's own header:
at most ``MAX_PIXELS`` decoded pixels (``MAX_WEBP_PIXELS`` for WEBP) and an aspect ratio of at most
``MAX_ASPECT`` (a 20000 x 1 strip would otherwise be upscaled to gigabytes). Where a container's own
header does not say what gets decoded, the frame's header is read: an ICO's directory may say 16x16 for an
icon whose embedded PNG or BMP is 30000x30000, and Pillow decodes that icon inside ``Image.open``, so it is
checked from the raw bytes first. Decoders that hold more than the image are counted too: a progressive (or
multi-scan) JPEG keeps every coefficient at full size even when decoded at reduced scale, a TIFF tile is
decoded whole (so a tile may not be larger than its image or ``MAX_TILE_PIXELS``), and a TIFF directory may
list at most ``MAX_TIFF_TAGS`` entries. The checks also estimate the bytes a decode will hold, which
``preprocess`` reserves from the process's decoding memory (``decode.decode_memory``) before decoding.

Every refusal is an ``ImageInputError`` naming the image (``describe``).
"""
from __future__ import annotations

import io
import os
import stat
import struct
from typing import Union

import numpy as np
from PIL import Image

from .errors import ImageInputError, shorten

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
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}

ImageLike = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


def describe(item: ImageLike) -> str:
    """How messages name an image: its path (undecodable bytes escaped, long names cut) or its kind."""
    if isinstance(item, (str, os.PathLike)):
        return f"image {shorten(os.fsdecode(item), 120, path=True)}"
    if isinstance(item, (bytes, bytearray)):
        return f"image bytes ({len(item)} bytes)"
    return f"image {type(item).__name__}"


def read_bounded(item) -> bytes:
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


def check_size(width: int, height: int, item, decoded: bool, subject: str | None = None,
               limit: int = MAX_PIXELS, note: str = "") -> None:
    """Refuse an empty or too elongated image and, when ``decoded`` (these are the pixels that will be
    decoded), one of more than ``limit`` pixels."""
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


def check_bytes(data: bytes, item) -> tuple[tuple[str, ...], int | None]:
    """The checks made from the raw bytes, before ``Image.open``: the formats it may open the file as, and
    the estimated bytes of decoding an ICO's icon (which Pillow decodes inside ``Image.open``, so this must
    be reserved first), or None for every other file."""
    formats, icon_cost = FORMATS, None
    if data[:4] == b"\x00\x00\x01\x00":  # ICO: Pillow decodes the icon inside Image.open
        try:
            (width, height), declared = _icon_frame(data)
        except Exception:  # noqa: BLE001 - not an icon Pillow can read: never let its ICO plugin try
            formats = tuple(f for f in FORMATS if f != "ICO")
        else:
            subject = f"the icon it holds ({width}x{height}; its directory says {declared[0]}x{declared[1]})"
            check_size(width, height, item, decoded=True, subject=subject)
            # One reservation per decode (a second one could wait for the first forever), so this file is
            # opened as nothing but the icon that was checked.
            formats, icon_cost = ("ICO",), width * height * _DEFAULT_BYTES_PER_PIXEL
    entries = _tiff_entries(data)
    if entries is not None and entries > MAX_TIFF_TAGS:
        raise ImageInputError(f"{describe(item)}: its TIFF directory lists {entries} entries, more than the "
                              f"limit of {MAX_TIFF_TAGS}")
    return formats, icon_cost


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


def check_header(img: Image.Image, data: bytes, item, size: int) -> int:
    """Every check of the opened (not yet decoded) first frame; asks JPEGs for a reduced decode. Returns
    the estimated peak bytes of decoding it."""
    check_size(img.width, img.height, item, decoded=False)
    extra = 0
    if img.format in ("JPEG", "MPO"):
        whole, components = _jpeg_whole_buffer(data)
        if whole:  # every coefficient is kept at full size: the reduced decode does not help memory
            subject = (f"{whole} JPEG {img.width}x{img.height}" if whole != "unread" else
                       f"JPEG {img.width}x{img.height} (its scans could not be read ahead)")
            check_size(img.width, img.height, item, decoded=True, subject=subject,
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
    check_size(img.width, img.height, item, decoded=True, limit=limit,
               note=" for WEBP" if img.format == "WEBP" else "")
    return img.width * img.height * _BYTES_PER_PIXEL.get(img.format, _DEFAULT_BYTES_PER_PIXEL) + extra
