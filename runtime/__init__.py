"""dagnn_runtime: torch-free serving of exported DAGNN bundles (onnxruntime, numpy, Pillow, hnswlib).

    import dagnn_runtime as dr
    model = dr.load("bundle/")                       # verifies the manifest now, each graph at first use
    index = dr.open_index("photos-index", model=model, modality="image", create=True)
    dr.ingest(model, dr.source_from_images(["photos/"]), index)
    searcher = dr.Searcher(model, {"image": index})
    searcher.search(text="sky, clouds", k=5).hits    # [Hit(id, score, metadata), ...]
    searcher.tag(["photo.jpg"], top=5)[0].labels     # [LabelScore(label, score, threshold, passes), ...]

Importing the package is cheap: the errors are loaded at once, everything else (onnxruntime, hnswlib) on
first use, so that ``dagnn --help`` and error handling do not pay for the inference stack.
"""
from __future__ import annotations

import importlib

from .errors import (BundleError, DagnnError, DatasetError, ImageInputError, IndexFileError, InputError,
                     MismatchError)
from .ingest import ingest  # eager: the submodule of the same name must not shadow the function


_LAZY = {
    "load": "session", "Model": "session", "Bundle": "bundle", "read_bundle": "bundle",
    "Searcher": "engine", "SearchResult": "engine", "TagResult": "engine", "LabelScore": "engine",
    "Hit": "indexes.base", "VectorIndex": "indexes.base", "open_index": "indexes", "locate_index": "indexes",
    "IndexSet": "indexes",
    "IngestReport": "ingest", "Source": "ingest", "source_from_images": "ingest",
    "source_from_texts": "ingest", "sources_from_data": "ingest", "evaluate_bundle": "evaluation",
}

__all__ = [*_LAZY, "ingest", "DagnnError", "BundleError", "InputError", "ImageInputError", "DatasetError", "IndexFileError",
           "MismatchError"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dagnn_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
