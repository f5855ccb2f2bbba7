"""Multiply-accumulates of a backbone per photo at several input sides (counted, not timed, by the counter the
export records in the manifest: convolutions and linear layers):
the cost side of "native 128-px input or 224 upscaling", and of fused backbones.

    python bench/backbone_macs.py [--backbone efficientnet_lite0] [--sizes 128 160 192 224]
"""
from __future__ import annotations

import argparse


def main(argv=None) -> None:
    from dagnn_export.backbones import build_backbone
    from dagnn_export.onnx_graphs import macs_per_photo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 192, 224])
    args = parser.parse_args(argv)
    backbone = build_backbone(args.backbone, pretrained=False)
    rows = [(size, macs_per_photo(backbone, size)) for size in args.sizes]
    largest = max(macs for _, macs in rows)
    print(f"| input side | MACs per photo | vs {max(args.sizes)} px |\n|---|---|---|")
    for size, macs in rows:
        print(f"| {size} px | {macs / 1e6:.0f} M | {macs / largest:.2f}× |")


if __name__ == "__main__":
    main()
