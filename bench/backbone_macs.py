"""Multiply-accumulates of a backbone's convolutions per photo at several input sides (counted, not timed):
the cost side of "native 128-px input or 224 upscaling".

    python bench/backbone_macs.py [--backbone efficientnet_lite0] [--sizes 128 160 192 224]
"""
from __future__ import annotations

import argparse

import torch


def conv_macs(backbone, size: int) -> tuple[int, tuple]:
    total = [0]

    def count(module, _inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += output.numel() * module.in_channels // module.groups * k

    hooks = [m.register_forward_hook(count) for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            out = backbone.body(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return total[0], tuple(out.shape[1:])


def main(argv=None) -> None:
    from dagnn_export.backbones import build_backbone

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 192, 224])
    args = parser.parse_args(argv)
    backbone = build_backbone(args.backbone, pretrained=False)
    rows = [(size, *conv_macs(backbone, size)) for size in args.sizes]
    largest = max(macs for _, macs, _ in rows)
    print(f"| input side | convolution MACs per photo | vs {max(args.sizes)} px |\n|---|---|---|")
    for size, macs, _ in rows:
        print(f"| {size} px | {macs / 1e6:.0f} M | {macs / largest:.2f}× |")


if __name__ == "__main__":
    main()
