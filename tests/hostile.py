"""Hostile inputs for the reliability tests and the memory benchmark: broken, odd and oversized images,
tampered bundles. Everything is generated (nothing downloaded) and small on disk."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from bundle_factory import bundle_parts, resign, write_bundle


def png_header_only(path, width: int, height: int, mode_bits=(8, 0)) -> Path:
    """A PNG whose header declares ``width`` x ``height`` but that holds a few bytes of pixel data: what
    a decompression bomb looks like to a reader that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    depth, colour = mode_bits
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) \
        + chunk(b"IEND", b"")
    Path(path).write_bytes(body)
    return Path(path)


def photo(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture (JPEG-friendly, not flat)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def exif_rotated_jpeg(path, pixels: np.ndarray, orientation: int = 6) -> Path:
    """A JPEG stored sideways with an EXIF orientation tag saying how to turn it upright."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this
    stored.save(path, quality=95, exif=exif.tobytes())
    return Path(path)


def make_images(d: Path) -> Path:
    """Every hostile or odd image the reliability table uses, in folder ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    pixels = photo()
    Image.fromarray(pixels).save(d / "ok.jpg", quality=95)
    Image.fromarray(pixels).save(d / "ok.png")
    (d / "corrupt.jpg").write_bytes(os.urandom(2048))
    data = (d / "ok.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "empty.jpg").write_bytes(b"")
    Image.fromarray(pixels).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    grey = pixels[..., 1]
    Image.fromarray(grey).save(d / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(d / "grey16.png")
    Image.fromarray(grey.astype(np.float32) / 255).save(d / "float.tif")
    pal = Image.fromarray(pixels).quantize(32)
    pal.save(d / "palette.png", transparency=0)
    frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif_rotated_jpeg(d / "rotated.jpg", pixels)
    Image.new("L", (20000, 1)).save(d / "strip20000.png")
    Image.new("L", (100000, 1)).save(d / "strip100000.png")
    png_header_only(d / "bomb.png", 30000, 30000)           # 900 Mpx: Pillow's own bomb limit
    png_header_only(d / "over_budget.png", 9000, 8000)      # 72 Mpx: over dagnn's 64 Mpx, under Pillow's
    (d / "folder.jpg").mkdir(exist_ok=True)
    if not (d / "fifo.jpg").exists():
        os.mkfifo(d / "fifo.jpg")
    bad_name = Path(os.fsdecode(bytes(d) + b"/caf\xe9.jpg"))  # Latin-1 name, not UTF-8
    bad_name.write_bytes(b"not an image")
    return d


def tampered_bundles(d: Path) -> Path:
    """Bundles each broken in one documented way, in folder ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    files, manifest = bundle_parts()
    write_bundle(d / "good", files, manifest)
    write_bundle(d / "good.dagnn", files, manifest, archive=True)

    flipped = bytearray(files["image_encoder.onnx"])
    flipped[len(flipped) // 2] ^= 1
    write_bundle(d / "tampered", dict(files, **{"image_encoder.onnx": bytes(flipped)}), manifest)
    write_bundle(d / "missing", {k: v for k, v in files.items() if k != "classifiers.npy"}, manifest)

    with warnings.catch_warnings(), zipfile.ZipFile(d / "duplicated.dagnn", "w") as zf:
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate we want
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("manifest.json", json.dumps(dict(manifest, labels=list(reversed(manifest["labels"])))))
    # manifest.json lists only the real files, the archive holds one more
    with zipfile.ZipFile(d / "unlisted.dagnn", "w") as zf:
        for name, data in {**files, "payload.bin": b"x" * 100}.items():
            zf.writestr(name, data)
        zf.writestr("manifest.json", json.dumps(manifest))

    # A listed 300 MiB member of zeros: 0.3 MB in the archive.
    zeros = hashlib.sha256()
    block = bytes(1 << 20)
    for _ in range(300):
        zeros.update(block)
    bomb_manifest = resign(dict(manifest, files=dict(manifest["files"], **{"extra.bin": zeros.hexdigest()})))
    with zipfile.ZipFile(d / "zipbomb.dagnn", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("manifest.json", json.dumps(bomb_manifest))
        with zf.open("extra.bin", "w", force_zip64=True) as f:
            for _ in range(300):
                f.write(block)

    labels = list(manifest["labels"])
    labels[0], labels[1] = labels[1], labels[0]
    write_bundle(d / "swapped", files, dict(manifest, labels=labels))
    # the same swap, re-signed: a valid bundle of the same embedding space but another identity
    write_bundle(d / "relabelled", files, resign(dict(manifest, labels=labels)))
    thr = dict(manifest["thresholds"], values=[-1.0] * len(labels))
    write_bundle(d / "thresholds_minus1", files, dict(manifest, thresholds=thr))
    thr = dict(manifest["thresholds"], values=[5.0] + manifest["thresholds"]["values"][1:])
    write_bundle(d / "thresholds_5", files, resign(dict(manifest, thresholds=thr)))
    write_bundle(d / "extra_label", files, resign(dict(manifest, labels=labels + ["extra"])))
    deep = write_bundle(d / "deep", files, manifest)
    (deep / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    dup = write_bundle(d / "dupkey", files, manifest)
    text = json.dumps(manifest)
    (dup / "manifest.json").write_text(text[:-1] + ', "labels": ["x"]}')
    old = write_bundle(d / "old_export", files, {k: v for k, v in manifest.items() if k != "bundle_digest"})
    assert old.is_dir()

    # format 3: a graph's weights beside it in <graph>.onnx.data
    files3, manifest3 = bundle_parts(tag_ids=True, weights_out=True)
    data = bytearray(files3["text_encoder.onnx.data"])
    data[len(data) // 2] ^= 1
    write_bundle(d / "weights_tampered", dict(files3, **{"text_encoder.onnx.data": bytes(data)}), manifest3)
    spec = manifest3["graphs"]["text_encoder"]["weights"]
    unlisted = dict(spec, tensors=spec["tensors"][1:])  # the graph still refers to the first tensor's data
    graphs = dict(manifest3["graphs"], text_encoder=dict(manifest3["graphs"]["text_encoder"], weights=unlisted))
    write_bundle(d / "weights_unlisted", files3, resign(dict(manifest3, graphs=graphs)))
    return d


# ---- the image front door: containers whose real frame differs from what they declare ------------------------
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flat_png(width: int, height: int, mode: str = "RGBA", value: int = 128) -> bytes:
    """A real PNG of one flat colour, compressed a row at a time: a few hundred KB for 8000x8000."""
    colour, channels = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}[mode]
    row = b"\x00" + bytes([value]) * (width * channels)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def png_header_bytes(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds a few bytes of pixel data."""
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def dib_header_only(width: int, height: int, bits: int = 24) -> bytes:
    """An icon's BMP (a BITMAPINFOHEADER without file header) for ``width`` x ``height``, height doubled
    as icons store it (colour image over AND mask), with no pixel data after it."""
    return struct.pack("<IiiHHIIiiII", 40, width, 2 * height, 1, bits, 0, 0, 0, 0, 0, 0)


def icon(path, image: bytes, declared=(16, 16), bits: int = 32) -> Path:
    """An ICO file whose one directory entry says ``declared`` (width, height; 256 is written as 0, as the
    format does) and holds ``image`` (PNG or BMP bytes), whatever size that image really is."""
    entry = struct.pack("<BBBBHHII", declared[0] % 256, declared[1] % 256, 0, 0, 1, bits, len(image), 6 + 16)
    Path(path).write_bytes(struct.pack("<HHH", 0, 1, 1) + entry + image)
    return Path(path)


def _tiff(pages) -> bytes:
    """A little-endian TIFF of ``pages``: each a list of (tag, type, values) and the bytes of its one strip
    or tile (tag 273 or 324 is pointed at them). Types: 1 BYTE, 3 SHORT, 4 LONG."""
    codes = {1: "B", 3: "H", 4: "I"}
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    link = 4  # where the offset of the next directory goes
    for tags, payload in pages:
        data_at = len(out)
        out += payload
        tags = sorted((tag, typ, [data_at] if tag in (273, 324) else list(values)) for tag, typ, values in tags)
        ifd_at = len(out) + (len(out) & 1)
        out += b"\x00" * (ifd_at - len(out))
        struct.pack_into("<I", out, link, ifd_at)
        extra_at = ifd_at + 2 + 12 * len(tags) + 4
        body, extra = bytearray(struct.pack("<H", len(tags))), bytearray()
        for tag, typ, values in tags:
            raw = struct.pack("<" + codes[typ] * len(values), *values)
            if len(raw) <= 4:
                body += struct.pack("<HHI", tag, typ, len(values)) + raw.ljust(4, b"\x00")
            else:
                body += struct.pack("<HHII", tag, typ, len(values), extra_at + len(extra))
                extra += raw + b"\x00" * (len(raw) & 1)
        link = len(out) + len(body)
        out += body + b"\x00\x00\x00\x00" + extra
    return bytes(out)


def _grey_tags(width: int, height: int, payload_len: int, compression: int = 1):
    return [(256, 4, [width]), (257, 4, [height]), (258, 3, [8]), (259, 3, [compression]), (262, 3, [1]),
            (273, 4, [0]), (277, 3, [1]), (278, 4, [height]), (279, 4, [payload_len])]


def tiff_with_tags(path, n: int) -> Path:
    """An 8x8 grey TIFF whose directory also lists ``n`` unknown tags, each with more data than the whole
    file holds: Pillow warns once per tag ("Tag data larger than file. Skipping tag …")."""
    pixels = bytes(range(64))
    junk = [(20000 + i, 1, [0]) for i in range(n)]
    body = bytearray(_tiff([(_grey_tags(8, 8, len(pixels)) + junk, pixels)]))
    # make each junk entry claim 10**8 bytes at offset 0x7FFFFFF0 (past the end of the file)
    count = struct.unpack_from("<H", body, struct.unpack_from("<I", body, 4)[0])[0]
    at = struct.unpack_from("<I", body, 4)[0] + 2
    for k in range(count):
        tag = struct.unpack_from("<H", body, at + 12 * k)[0]
        if tag >= 20000:
            struct.pack_into("<HHII", body, at + 12 * k, tag, 1, 10 ** 8, 0x7FFFFFF0)
    Path(path).write_bytes(bytes(body))
    return Path(path)


def tiff_tiled(path, width: int, height: int, tile: int, samples: int = 4) -> Path:
    """A ``width`` x ``height`` TIFF stored as one deflate-compressed ``tile`` x ``tile`` tile of zeros
    (``samples`` 8-bit samples per pixel): libtiff decodes a whole tile, so 16384 x 16384 x 4 costs 1 GB
    for a 64x64 image from a 1 MB file."""
    packer, block = zlib.compressobj(9), bytes(1 << 20)
    left, parts = tile * tile * samples, []
    while left > 0:
        parts.append(packer.compress(block[:min(left, len(block))]))
        left -= len(block)
    data = b"".join(parts) + packer.flush()
    tags = [(256, 4, [width]), (257, 4, [height]), (258, 3, [8] * samples), (259, 3, [8]),
            (262, 3, [1 if samples == 1 else 2]), (277, 3, [samples]), (284, 3, [1]), (322, 4, [tile]),
            (323, 4, [tile]), (324, 4, [0]), (325, 4, [len(data)])] + ([(338, 3, [2])] if samples == 4 else [])
    Path(path).write_bytes(_tiff([(tags, data)]))
    return Path(path)


def tiff_pages(path, first: np.ndarray, later=(30000, 30000)) -> Path:
    """A two-page TIFF: a real grey first page (``first``, uint8 (H, W)) and a second page that declares
    ``later`` (width, height) and holds a few bytes."""
    h, w = first.shape
    pixels = first.astype(np.uint8).tobytes()
    page2 = _grey_tags(later[0], later[1], 64)
    Path(path).write_bytes(_tiff([(_grey_tags(w, h, len(pixels)), pixels), (page2, bytes(64))]))
    return Path(path)


def jpeg_header_only(path, width: int, height: int, components: int = 3, progressive: bool = True,
                     interleaved: bool = True) -> Path:
    """A JPEG of markers only (tables, frame, first scan, a few bytes of data) declaring ``width`` x
    ``height``: progressive, or sequential with a first scan of one component (``interleaved=False``),
    libjpeg holds every coefficient of the image, reduced decoding or not (1 GB for 13000x13000x3)."""
    def seg(marker, data):
        return struct.pack(">HH", marker, len(data) + 2) + data
    ids = bytes(range(1, components + 1))
    sof = seg(0xFFC2 if progressive else 0xFFC0, struct.pack(">BHHB", 8, height, width, components)
              + b"".join(bytes([i, 0x11, 0]) for i in ids))
    dht = seg(0xFFC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00" + b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    scan = ids if progressive and interleaved else ids[:1]
    sos = seg(0xFFDA, bytes([len(scan)]) + b"".join(bytes([i, 0]) for i in scan)
              + (b"\x00\x00\x00" if progressive else b"\x00\x3f\x00"))
    Path(path).write_bytes(b"\xff\xd8" + seg(0xFFDB, b"\x00" + bytes([1] * 64)) + sof + dht + sos
                           + b"\x00" * 1000 + b"\xff\xd9")
    return Path(path)


def jpeg_with_exif_tags(path, pixels: np.ndarray, n: int = 5000) -> Path:
    """A real JPEG whose EXIF block lists ``n`` tags that each claim more data than the block holds:
    reading its orientation makes Pillow warn once per tag."""
    entries = b"".join(struct.pack("<HHII", 20000 + i, 1, 10 ** 6, 8) for i in range(n))
    exif = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", n) + entries + b"\x00" * 4
    Image.fromarray(pixels).save(path, quality=90, exif=exif)
    return Path(path)


def _sof_offsets(data: bytes):
    """Offsets of the SOF0 markers of a JPEG or MPO file (one per frame)."""
    at, found = 0, []
    while True:
        at = data.find(b"\xff\xc0", at)
        if at < 0:
            return found
        found.append(at)
        at += 2


def mpo_frames(path, pixels: np.ndarray, first=None, second=None, progressive_first: bool = False) -> Path:
    """A two-frame MPO (a stereo pair) whose frames' headers are rewritten to declare ``first`` / ``second``
    (width, height) when given; ``progressive_first`` marks the first frame progressive."""
    frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
    frames[0].save(path, "MPO", save_all=True, append_images=frames[1:], quality=90)
    data = bytearray(Path(path).read_bytes())
    sofs = _sof_offsets(bytes(data))
    for at, size in zip(sofs, (first, second)):
        if size is not None:
            struct.pack_into(">HH", data, at + 5, size[1], size[0])
    if progressive_first:
        data[sofs[0] + 1] = 0xC2
    Path(path).write_bytes(bytes(data))
    return Path(path)


def gif_frames(path, pixels: np.ndarray, later=(65535, 65535)) -> Path:
    """A GIF whose first frame is ``pixels`` and whose second frame's descriptor declares ``later``
    (width, height) with no pixel data."""
    Image.fromarray(pixels).save(path)
    data = Path(path).read_bytes()
    assert data.endswith(b";")
    second = b"," + struct.pack("<HHHHB", 0, 0, later[0], later[1], 0) + b"\x02\x01\x2c\x00"
    Path(path).write_bytes(data[:-1] + second + b";")
    return Path(path)


def animated_webp(path, width: int, height: int) -> Path:
    """A two-frame animated WEBP of flat colours on a ``width`` x ``height`` canvas (a few hundred bytes)."""
    frames = [Image.new("RGB", (width, height), c) for c in ((30, 120, 200), (200, 30, 20))]
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    return Path(path)
