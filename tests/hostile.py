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
