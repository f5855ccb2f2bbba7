"""dagnn_runtime: torch-free serving of exported DAGNN bundles (onnxruntime, numpy, Pillow, hnswlib)."""
