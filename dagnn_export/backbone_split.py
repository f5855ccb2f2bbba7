"""Cutting an image backbone in two for fine-tuning on a CPU: a frozen trunk and a trainable head.

The paper trains the CNN with the rest of the model (θcnn in θv, Eq. 1). Backpropagating through all of
EfficientNet-Lite0 costs about 25 minutes per epoch on 2 cores, so dagnn runs the frozen trunk once, caches
its activation maps (``dagnn features --trunk-blocks D``), and trains the last ``k <= D`` blocks of the head
jointly with DAGNN. The head's blocks before those ``k`` stay frozen; all of its batch norms keep their
ImageNet statistics (eval mode), which keeps small batches of 7×7 maps from disturbing them.

The trunk is an ``ImageBackbone`` whose "features" are the flattened maps, so the feature cache, the
content keys and the ONNX export work on it unchanged; the exported image graph is trunk → head → Gv1.
Where a backbone comes apart (``backbone_parts``) is defined with the backbones, and the caches are written
by ``features``: this module only imports ``backbones``, so no import cycle runs through it.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import ImageBackbone, Trunk, backbone_of_run, backbone_parts
from .errors import BackboneError


class BackboneHead(nn.Module):
    """Flattened trunk maps ``(N, C*H*W)`` → pooled features ``(N, F)``; only the last ``trainable`` blocks
    (and the finishing layers) learn."""

    def __init__(self, blocks: list[nn.Module], finish: nn.Module, map_shape: tuple[int, int, int],
                 trainable: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.finish = finish
        self.map_shape = tuple(int(s) for s in map_shape)
        self.requires_grad_(False)
        if trainable:
            for block in self.blocks[len(self.blocks) - trainable:]:
                block.requires_grad_(True)
            self.finish.requires_grad_(True)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen batch-norm statistics and no stochastic depth, always

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps.reshape(maps.shape[0], *self.map_shape)
        for block in self.blocks:
            x = block(x)
        return self.finish(x).mean(dim=(2, 3))


def split_backbone(backbone: ImageBackbone, depth: int, trainable: int = 0) -> tuple[ImageBackbone, BackboneHead]:
    """The trunk before the last ``depth`` blocks (as an ``ImageBackbone`` of flattened maps) and the head
    after it, whose last ``trainable`` blocks learn. Both share the backbone's modules (and weights)."""
    stem, blocks, finish = backbone_parts(backbone)
    if not 1 <= depth <= len(blocks):
        raise BackboneError(f"{backbone.name} has {len(blocks)} blocks: the trunk cut must leave 1 to "
                            f"{len(blocks)} of them in the head, got {depth}")
    if not 0 <= trainable <= depth:
        raise BackboneError(f"cannot train the last {trainable} blocks of a head of {depth} blocks "
                            f"(cache the trunk with --trunk-blocks {trainable} or more)")
    trunk = Trunk(stem, blocks[:len(blocks) - depth]).eval()
    with torch.no_grad():
        probe = torch.zeros(1, 3, backbone.image_size, backbone.image_size)
        map_shape = tuple(trunk(probe).shape[1:])
    dim = map_shape[0] * map_shape[1] * map_shape[2]
    trunk_backbone = ImageBackbone(backbone.name, trunk, dim, backbone.image_size)
    trunk_backbone.scale.copy_(backbone.scale)
    trunk_backbone.shift.copy_(backbone.shift)
    return trunk_backbone, BackboneHead(blocks[len(blocks) - depth:], finish, map_shape, trainable)


def build_head(config, pretrained: bool = False) -> BackboneHead:
    """The head of a fine-tuning run (a config dict or ``TrainConfig``): with ``pretrained``, the backbone's
    weights, where its training starts; without, random ones that its state_dict then fills in."""
    config = config if isinstance(config, dict) else config.to_dict()
    return split_backbone(backbone_of_run(config, pretrained), int(config["trunk_blocks"]),
                          int(config["finetune_backbone"]))[1]


def export_trunk(config: dict) -> ImageBackbone:
    """The frozen trunk (pretrained) an exported fine-tuning run starts from; the run's head follows it."""
    return split_backbone(backbone_of_run(config), int(config["trunk_blocks"]))[0]
