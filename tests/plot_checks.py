"""Shared check of written figures: each PNG exists, decodes, and is not blank (pixel variance)."""
from pathlib import Path

import numpy as np
from PIL import Image


def assert_figures(folder: Path, names) -> None:
    for name in names:
        path = Path(folder) / name
        assert path.is_file(), f"{name} was not written"
        with Image.open(path) as im:
            assert im.format == "PNG", name
            pixels = np.asarray(im.convert("L"), dtype=np.float64)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, name
        # A blank (or single-colour) canvas has variance 0; a drawn figure has axes, text and data.
        assert pixels.var() > 50, f"{name} looks blank (pixel variance {pixels.var():.1f})"
