"""The two graphs of a bundle as torch modules, their ONNX export and ``onnx.checker``.

The label classifiers Z come in as a constant: produced once by the GNN at export time and folded into
both graphs' ``label_scores``, so serving never runs the GNN.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import ExportError

OUTPUTS = ("embedding", "label_scores")


class ImageEncoder(nn.Module):
    """uint8 pixels (N, S, S, 3) → backbone → Gv1 → (v, cos(v, Z)) with Z a constant.

    ``mirror``: v is the mean of Gv1's output for the photos and for their left-right mirror images
    (test-time augmentation), flipped in the graph; the backbone runs once on the batch and its mirror
    stacked, so the scores come from that mean."""

    def __init__(self, backbone: nn.Module, model: nn.Module, z_unit: torch.Tensor, mirror: bool = False):
        super().__init__()
        self.backbone, self.model, self.mirror = backbone, model, bool(mirror)
        self.register_buffer("z_unit", z_unit)

    def forward(self, pixels):
        if self.mirror:
            both = self.model.image_common(self.backbone(torch.cat([pixels, pixels.flip(2)])))
            v = both.reshape(2, -1, both.shape[1]).mean(0)
        else:
            v = self.model.image_common(self.backbone(pixels))
        return v, F.normalize(v, dim=1, eps=1e-12) @ self.z_unit.T


def macs_per_photo(module: nn.Module, side: int) -> int:
    """Multiply-accumulates of the convolutions and linear layers when ``module`` encodes one photo of
    ``side`` px (counted with forward hooks, not timed): a deterministic measure of the encoder's cost."""
    total = [0]

    def count(layer, _inputs, output):
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        else:
            per_output = layer.in_features
        total[0] += output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(torch.zeros((1, side, side, 3), dtype=torch.uint8))
    finally:
        for hook in hooks:
            hook.remove()
    return int(total[0])


class TextEncoder(nn.Module):
    """Tag ids (N, L), padded with the vocabulary size V → text MLP → Gt1 → (t, cos(t, Z)).

    The MLP's first layer is computed as what it is for a 0/1 bag of words: the sum of the columns of its
    weight for the tags present (a gather of L rows and a sum), plus its bias; the pad id gathers a zero
    row. A query of 3 tags so reads 3 of the 1386 rows instead of the whole matrix (format 2)."""

    def __init__(self, model: nn.Module, z_unit: torch.Tensor):
        super().__init__()
        self.model = model
        fc1 = model.text_mlp.fc1
        rows = torch.cat([fc1.weight.detach().T, torch.zeros(1, fc1.out_features)])
        self.register_buffer("tag_rows", rows.contiguous())
        self.register_buffer("z_unit", z_unit)

    def forward(self, tags):
        h1 = F.embedding(tags, self.tag_rows).sum(1) + self.model.text_mlp.fc1.bias
        t = self.model.text_common(None, h_t=self.model.text_mlp.after_first_layer(h1))
        return t, F.normalize(t, dim=1, eps=1e-12) @ self.z_unit.T


def tag_id_matrix(bow: np.ndarray) -> np.ndarray:
    """A 0/1 bag of words (N, V) → the text graph's input: tag ids (N, longest) padded with V."""
    ids = [np.flatnonzero(row) for row in bow]
    out = np.full((len(ids), max([1, *map(len, ids)])), bow.shape[1], dtype=np.int64)
    for i, row in enumerate(ids):
        out[i, :len(row)] = row
    return out


def export_onnx(module: nn.Module, example: torch.Tensor, input_name: str, path: Path, opset: int,
                input_axes: dict | None = None) -> None:
    """Write ``module`` as ONNX with a dynamic batch axis (``input_axes``: the input's dynamic axes, if
    more) and the bundle's output names."""
    # The TorchScript-based exporter writes the requested opset natively; the torch.export-based one emits
    # opset 18 and its down-conversion to 17 fails on these graphs (ReduceMean), so use the former.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=list(OUTPUTS),
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={input_name: input_axes or {0: "N"}, **{name: {0: "N"} for name in OUTPUTS}})


def check_graph(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ExportError(f"{path.name} fails onnx.checker: {exc}") from exc
