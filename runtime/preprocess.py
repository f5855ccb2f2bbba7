"""Image decoding and resizing shared by training, export and the runtime.

Training, export and serving must see identical pixels, so this is the only place that turns an image
into model input: decode with Pillow, apply the EXIF orientation, convert to RGB, resize the shorter side
to ``size`` (bicubic) and centre-crop to ``size`` x ``size``. The result is a uint8 ``(size, size, 3)``
array; normalisation happens inside the model graph.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageInputError

DEFAULT_SIZE = 224
RESIZE_MODE = "shorter_side_bicubic_center_crop"

ImageLike = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]




def _describe(item: ImageLike) -> str:
    if isinstance(item, (str, os.PathLike)):
        return f"image {os.fspath(item)!r}"
    if isinstance(item, (bytes, bytearray)):
        return f"image bytes ({len(item)} bytes)"
    return f"image {type(item).__name__}"


def open_image(item: ImageLike) -> Image.Image:
    """Decode a path, raw bytes, PIL image or uint8 array into an RGB PIL image."""
    try:
        if isinstance(item, Image.Image):
            img = item
        elif isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
                raise ImageInputError(
                    f"{_describe(item)}: expected a uint8 array of shape (H, W), (H, W, 1|3|4); "
                    f"got {item.dtype} {item.shape}"
                )
            img = Image.fromarray(item.squeeze(-1) if item.ndim == 3 and item.shape[2] == 1 else item)
        elif isinstance(item, (bytes, bytearray)):
            img = Image.open(io.BytesIO(bytes(item)))
            img.load()
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise ImageInputError(f"{_describe(item)}: no such file")
            img = Image.open(path)
            img.load()
        else:
            raise ImageInputError(f"{_describe(item)}: unsupported input type (use a path, bytes, PIL image or uint8 array)")
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img, item)
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageInputError(f"{_describe(item)}: cannot decode ({exc})") from exc


def _to_rgb(img: Image.Image, item: ImageLike) -> Image.Image:
    if img.width < 1 or img.height < 1:
        raise ImageInputError(f"{_describe(item)}: empty image ({img.width}x{img.height})")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels onto white rather than whatever colour hides under alpha = 0.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int = DEFAULT_SIZE) -> Image.Image:
    scale = size / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(item: ImageLike, size: int = DEFAULT_SIZE) -> np.ndarray:
    """One image → uint8 ``(size, size, 3)`` RGB array, exactly as the models were trained on."""
    return np.asarray(resize_center_crop(open_image(item), size), dtype=np.uint8)


def load_batch(items, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Several images → uint8 ``(n, size, size, 3)``."""
    arrays = [load_image(item, size) for item in items]
    if not arrays:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack(arrays)
