"""dagnn_export: DAGNN model, training and ONNX export (needs the [train] extra: torch, torchvision, onnx)."""
