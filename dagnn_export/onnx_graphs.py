"""The two graphs of a bundle as torch modules, their ONNX export and ``onnx.checker``.

The label classifiers Z come in as a constant: produced once by the GNN at export time and folded into
both graphs' ``label_scores``, so serving never runs the GNN.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ExportError

OUTPUTS = ("embedding", "label_scores")


class ImageEncoder(nn.Module):
    """uint8 pixels (N, S, S, 3) → backbone → Gv1 → (v, cos(v, Z)) with Z a constant."""

    def __init__(self, backbone: nn.Module, model: nn.Module, z_unit: torch.Tensor):
        super().__init__()
        self.backbone, self.model = backbone, model
        self.register_buffer("z_unit", z_unit)

    def forward(self, pixels):
        v = self.model.image_common(self.backbone(pixels))
        return v, F.normalize(v, dim=1, eps=1e-12) @ self.z_unit.T


class TextEncoder(nn.Module):
    """0/1 bag of words (N, V) → text MLP → Gt1 → (t, cos(t, Z))."""

    def __init__(self, model: nn.Module, z_unit: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("z_unit", z_unit)

    def forward(self, bow):
        t = self.model.text_common(bow)
        return t, F.normalize(t, dim=1, eps=1e-12) @ self.z_unit.T


def export_onnx(module: nn.Module, example: torch.Tensor, input_name: str, path: Path, opset: int) -> None:
    """Write ``module`` as ONNX with a dynamic batch axis and the bundle's output names."""
    # The TorchScript-based exporter writes the requested opset natively; the torch.export-based one emits
    # opset 18 and its down-conversion to 17 fails on these graphs (ReduceMean), so use the former.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=list(OUTPUTS),
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={name: {0: "N"} for name in (input_name, *OUTPUTS)})


def check_graph(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ExportError(f"{path.name} fails onnx.checker: {exc}") from exc
