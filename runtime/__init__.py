"""dagnn_runtime: torch-free serving of exported DAGNN bundles (onnxruntime, numpy, Pillow, hnswlib).

    import dagnn_runtime as dr
    model = dr.load("bundle.dagnn")                  # verifies the manifest now, each graph at first use
    emb = model.encode_images(["photo.jpg"])          # (n, d) L2-normalised
    model.tag(["photo.jpg"], top=5)                  # [[(label, score), ...]]
    index = dr.Index.load("index/text", model=model)  # refuses an index of another embedding space
    ids, scores, meta = index.query(emb, k=10)

Importing the package imports only the error types: numpy, onnxruntime, Pillow and hnswlib are imported
when a name that needs them is first used, so a command pays only for what it runs.
"""
from importlib import import_module

from .errors import BundleError, DagnnError, ImageInputError, IndexFileError, InputError, MismatchError

_LAZY = {"load": "session", "Model": "session", "Index": "index", "Bundle": "bundle", "read_bundle": "bundle"}

__all__ = ["load", "Model", "Index", "Bundle", "read_bundle", "DagnnError", "BundleError", "InputError",
           "ImageInputError", "IndexFileError", "MismatchError"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dagnn_runtime' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
