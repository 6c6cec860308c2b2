"""A network cut at its code layer: ``forward`` returns (B, D) codes of one graph node."""

from __future__ import annotations

import torch
from torch import nn

from embedkit.errors import ConfigError
from embedkit.models.registry import LOGITS, PENULTIMATE, get_spec


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
        from torchvision.models.feature_extraction import (
            create_feature_extractor,
            get_graph_node_names,
        )
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
