"""dagnn_runtime: torch-free serving of exported DAGNN bundles (onnxruntime, numpy, Pillow, hnswlib).

    import dagnn_runtime as dr
    model = dr.load("bundle.dagnn")                  # verifies every file before use
    emb = model.encode_images(["photo.jpg"])          # (n, d) L2-normalised
    model.tag(["photo.jpg"], top=5)                  # [[(label, score), ...]]
    index = dr.Index.load("index/text", model=model)  # refuses an index of another embedding space
    ids, scores, meta = index.query(emb, k=10)
"""
from .bundle import Bundle, read_bundle
from .errors import BundleError, DagnnError, ImageInputError, IndexFileError, InputError, MismatchError
from .index import Index
from .session import Model, load

__all__ = ["load", "Model", "Index", "Bundle", "read_bundle", "DagnnError", "BundleError", "InputError",
           "ImageInputError", "IndexFileError", "MismatchError"]
