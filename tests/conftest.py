import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_shared() -> Path | None:
    """The read-only reference data: $DAGNN_SHARED, else ``../shared`` beside the repository."""
    env = os.environ.get("DAGNN_SHARED")
    candidate = Path(env) if env else REPO.parent / "shared"
    return candidate if (candidate / "data" / "mirflickr25k" / "pairs.jsonl").is_file() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    found = find_shared()
    if found is None:
        pytest.skip("real data not found: set DAGNN_SHARED or place shared/ beside the repository")
    return found


@pytest.fixture(scope="session")
def mirflickr_dir(shared_dir) -> Path:
    return shared_dir / "data" / "mirflickr25k"


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch", reason="needs the [train] extra (torch)")


@pytest.fixture(scope="module")
def bb(torch):
    """The backbones module, torch on 2 threads."""
    from dagnn_export import backbones

    torch.set_num_threads(2)
    return backbones


def run_backbone(model, pixels):
    """A backbone's features (numpy) of uint8 pixels, without autograd."""
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(pixels)).numpy()
