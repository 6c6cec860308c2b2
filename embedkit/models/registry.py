"""Backbone registry: networks built by name, with their preprocessing and code layers.

A :class:`BackboneSpec` is registered once (as timm and torchvision do) and
carries everything needed to turn an image into a code: how to build the
network, its input preprocessing, its named code layers and which one is the
default. Names that are not registered resolve to any timm or torchvision
model (``timm:convnext_tiny``, ``torchvision:mobilenet_v3_large`` or a bare
name), with the penultimate layer as default code. The built-ins live in :mod:`embedkit.models.zoo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from embedkit.errors import ConfigError
from embedkit.models.preprocessing import IMAGENET, Preprocessing

PENULTIMATE = "penultimate"  # the input of the final classifier, for any model


LOGITS = "logits"


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


def _builtins() -> None:
    """Register the built-in zoo on first use (its module registers at import)."""
    import embedkit.models.zoo  # noqa: F401


def list_backbones() -> list[str]:
    """Names of the registered backbones (any timm/torchvision name works too)."""
    _builtins()
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
    _builtins()
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
