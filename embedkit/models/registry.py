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
from embedkit.models.preprocessing import Preprocessing
from embedkit.models.sources import get_source, source_names

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
    source: str  # a registered source (embedkit.models.sources): "timm" or "torchvision"
    arch: str  # model name inside the source library
    preprocessing: Preprocessing
    layers: dict = field(default_factory=lambda: {PENULTIMATE: PENULTIMATE})
    default_layer: str = PENULTIMATE
    package_weights: Callable | None = None
    # Ordered weight layers (conv/linear module names) for layer-index based fine-tuning.
    description: str = ""

    def create_model(self, num_classes: int | None = None) -> nn.Module:
        """Build the network with random weights (weights are loaded by :mod:`embedkit.models.weights`)."""
        return get_source(self.source).create(self.arch, num_classes)

    def node_for(self, layer: str | None) -> tuple[str, str]:
        """Resolve a user's layer name to ``(friendly_name, graph_node)``; unknown names pass through as nodes."""
        layer = layer or self.default_layer
        return layer, self.layers.get(layer, layer)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ConfigError(f"backbone {spec.name!r} is already registered")
    get_source(spec.source)  # a ConfigError naming the valid sources
    _REGISTRY[spec.name] = spec
    return spec


def _builtins() -> None:
    """Register the built-in zoo on first use (its module registers at import)."""
    import embedkit.models.zoo  # noqa: F401


def list_backbones() -> list[str]:
    """Names of the registered backbones (any timm/torchvision name works too)."""
    _builtins()
    return sorted(_REGISTRY)


def _generic(source: str, arch: str) -> BackboneSpec | None:
    """A spec for any model of a source library: its own preprocessing, penultimate and logits layers."""
    src = get_source(source)
    if not src.exists(arch):
        return None
    return BackboneSpec(name=f"{source}:{arch}", source=source, arch=arch, preprocessing=src.preprocessing(arch),
                        layers={PENULTIMATE: PENULTIMATE, LOGITS: LOGITS})


def get_spec(name: str) -> BackboneSpec:
    """Look up a backbone by name: registered first, then ``timm:``/``torchvision:`` names, then bare names."""
    _builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, _, arch = name.partition(":")
    if arch and prefix in source_names():
        spec = _generic(prefix, arch)
    else:  # a bare name: the first source that has it (torchvision's, then timm's)
        spec = next((s for s in (_generic(src, name) for src in source_names()) if s is not None), None)
    if spec is None:
        raise ConfigError(
            f"backbone {name!r} is not known; use one of {', '.join(list_backbones())}, "
            "or any timm / torchvision model name (e.g. timm:convnext_tiny, torchvision:mobilenet_v3_large)"
        )
    return spec
