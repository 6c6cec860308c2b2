"""A network cut at its code layer: ``forward`` returns (B, D) codes of one graph node."""

from __future__ import annotations

import difflib

import torch
from torch import nn

from embedkit.defaults import SPATIAL_REDUCTIONS as SPATIAL
from embedkit.errors import ConfigError, invalid
from embedkit.models.registry import LOGITS, PENULTIMATE, get_spec
from embedkit.models.sources import Source, get_source

# SPATIAL: the reductions of a spatial (B, C, H, W) or token (B, T, C) code. ``avg`` / ``max``: mean / max
# over positions (for tokens: over the patch tokens, without the class and other prefix tokens); ``cls``:
# the class token (token outputs of models with one); ``flatten``: everything.


class FeatureModel(nn.Module):
    """Wrap a network so that ``forward`` returns the code of one layer, shape (B, D).

    Uses torch.fx graph truncation (torchvision / timm feature extraction), so layers after the code
    layer are not computed. Spatial outputs (B, C, H, W) are reduced by ``spatial`` over H x W. Token
    outputs (B, T, C) of transformer blocks are reduced over the tokens: ``avg``/``max`` over the patch
    tokens (the model's ``num_prefix_tokens`` class/register tokens left out), ``cls`` takes the class
    token. :attr:`reduction` records what was done (None until the first forward: it depends on the output).
    """

    def __init__(self, model: nn.Module, node: str, source: str | Source, spatial: str = "avg", spec=None):
        super().__init__()
        if spatial not in SPATIAL:
            raise invalid("spatial reduction", spatial, SPATIAL)
        src = get_source(source)
        self.spatial = spatial
        self.node = node
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self.has_class_token = bool(getattr(model, "cls_token", None) is not None) or self.num_prefix_tokens > 0
        self.reduction: str | None = None
        if node == LOGITS:
            self.body = model
        elif node == PENULTIMATE:
            self.body = src.strip_classifier(model)
        else:
            self.body = _truncate(model, node, src, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if isinstance(out, dict):
            out = out["code"]
        # under autocast the code layer comes out in bf16/fp16: reduce it in fp32, so the reduction adds no
        # rounding of its own (a bf16 mean is ~0.4% off)
        out = out.float()
        if out.ndim == 4:
            out = self._reduce(out.flatten(2), dim=2, kind="spatial (B, C, H, W)")
        elif out.ndim == 3:
            out = self._reduce_tokens(out)
        else:
            self.reduction = self.reduction or "none"
        return out.flatten(1)

    def _reduce(self, out: torch.Tensor, dim: int, kind: str) -> torch.Tensor:
        if self.spatial == "cls":
            raise ConfigError(f"--spatial cls takes the class token of a token (B, T, C) output; layer {self.node!r} "
                              f"gives a {kind} output: use avg, max or flatten")
        self.reduction = f"{self.spatial} over {'H x W' if dim == 2 else 'tokens'}" if self.spatial != "flatten" \
            else "flatten"
        if self.spatial == "avg":
            return out.mean(dim=dim)
        if self.spatial == "max":
            return out.amax(dim=dim)
        return out

    def _reduce_tokens(self, out: torch.Tensor) -> torch.Tensor:
        """(B, T, C) tokens -> (B, C) (or (B, T*C) for flatten)."""
        p = self.num_prefix_tokens
        if self.spatial == "flatten":
            self.reduction = "flatten"
            return out
        if self.spatial == "cls":
            if not self.has_class_token or p < 1:
                raise ConfigError(f"--spatial cls: this model has no class token at layer {self.node!r}; "
                                  "use avg, max or flatten")
            self.reduction = "cls token"
            return out[:, 0]
        patches = out[:, p:] if 0 < p < out.shape[1] else out
        self.reduction = f"{self.spatial} over {patches.shape[1]} patch tokens" + (
            f" ({p} prefix token{'s' if p > 1 else ''} left out)" if patches is not out else "")
        return patches.mean(dim=1) if self.spatial == "avg" else patches.amax(dim=1)


def _truncate(model: nn.Module, node: str, source: str | Source, spec=None) -> nn.Module:
    src = get_source(source)
    nodes = src.graph_node_names(model)
    # A module name stands for the last node inside it (torchvision's shorthand, e.g. "layer4").
    if node not in nodes and not any(n.startswith(node + ".") for n in nodes):
        raise unknown_layer(node, nodes, spec)
    return src.feature_extractor(model, node)


def unknown_layer(given: str, nodes: list[str], spec=None) -> ConfigError:
    """The one message for a layer a network does not have: the backbone's own layer names, the graph nodes
    closest to what was given, and the `embedkit layers NAME` command that lists every one."""
    close = difflib.get_close_matches(given, nodes, n=6, cutoff=0.5) or [n for n in nodes if given in n][:6] \
        or nodes[-6:]
    if spec is None:
        return ConfigError(f"layer {given!r} is not a node of this model; graph nodes like it: {', '.join(close)}")
    return ConfigError(f"layer {given!r} is not a layer of {spec.name}: its layers are {', '.join(spec.layers)}; "
                       f"graph nodes like it: {', '.join(close)} (`embedkit layers {spec.name}` lists every name "
                       "--layer takes)")


def layer_nodes(name: str) -> tuple[dict, list[str]]:
    """``({friendly layer name: what it is}, every graph node)`` of a backbone.

    Friendly names map to their graph node (``penultimate`` / ``logits`` to the input / output of the
    classifier module). Traced on a randomly initialised network: no weights are loaded or downloaded.
    """
    spec = get_spec(name)
    src = get_source(spec.source)
    model = spec.create_model()
    try:
        head = src.classifier_name(model)
    except ConfigError:
        head = None
    special = {PENULTIMATE: f"input of the classifier {head}" if head else "input of the classifier",
               LOGITS: f"output of the classifier {head}" if head else "output of the model"}
    friendly = {k: special.get(v, v) for k, v in spec.layers.items()}
    return friendly, src.graph_node_names(model)

