"""Names shared by the runtime, the training side and the CLI: one definition each."""
from __future__ import annotations

MODALITIES = ("image", "text")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
