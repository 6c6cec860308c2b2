"""What a network's convolutions look for, read from their weights: ``embedkit inspect filters``.

The first convolution's filters are RGB images (each normalised to [0, 1] on its own, the usual
display: the pattern matters, not its scale). A later convolution has one filter per input
channel; it is shown as the mean over input channels, a grey-level map of each output channel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from embedkit.errors import ConfigError, invalid
from embedkit.inspect.figures import Panel, grid_figure
from embedkit.inspect.activations import LoadedNet, conv_layer_names, load_net, resolve_module


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """``(name, module)`` of the network's first weight layer, which must be a Conv2d on RGB input."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            if mod.in_channels != 3:
                raise ConfigError(f"the first convolution {name!r} takes {mod.in_channels} channels, not RGB; "
                                  "its filters cannot be drawn as colour images (use --layer NAME)")
            return name, mod
        if isinstance(mod, (nn.Linear, nn.MultiheadAttention, nn.Embedding)):
            break
    raise ConfigError("this backbone's first layer is not a convolution (a transformer or MLP?), so it has no "
                      "image filters to draw; choose a convolutional backbone (vgg16, resnet50, efficientnet_lite0...)")


def conv_module(model: nn.Module, spec, layer: str) -> tuple[str, nn.Conv2d]:
    """The Conv2d named ``layer`` (a module name or the backbone's friendly name), or a clear error."""
    name, mod = resolve_module(model, spec, layer)
    if not isinstance(mod, nn.Conv2d):
        convs = conv_layer_names(model)
        what = "is not a module of this network" if mod is None else f"is a {type(mod).__name__}, not a Conv2d"
        raise invalid("layer", layer, [c for c in convs if c.startswith(name.split(".")[0])][:8] or convs[:8],
                      fix=f"{layer!r} {what}; --layer takes a convolution's module name")
    return name, mod


def _unit(a: np.ndarray, axes: tuple) -> np.ndarray:
    lo, hi = a.min(axis=axes, keepdims=True), a.max(axis=axes, keepdims=True)
    return (a - lo) / np.maximum(hi - lo, 1e-12)


def filter_images(conv: nn.Conv2d, rgb: bool) -> np.ndarray:
    """(out, kh, kw, 3) float images in [0, 1]: RGB filters, or per-channel means as grey levels."""
    w = conv.weight.detach().float().cpu().numpy()  # (out, in/groups, kh, kw)
    if rgb:
        return _unit(w.transpose(0, 2, 3, 1), (1, 2, 3))
    grey = _unit(w.mean(axis=1), (1, 2))
    return np.repeat(grey[..., None], 3, axis=-1)


@dataclass
class FiltersResult:
    """What :func:`inspect_filters` drew."""

    out: Path
    layer: str
    shape: tuple
    networks: list

    def summary(self) -> str:
        return (f"drew {self.shape[0]} filters of {self.layer} ({'x'.join(map(str, self.shape[1:]))}) for "
                f"{' and '.join(self.networks)} -> {self.out}")


def _filters(net: LoadedNet, layer: str | None) -> tuple[np.ndarray, str, tuple]:
    if layer is None:
        name, conv = first_conv(net.model)
        return filter_images(conv, rgb=True), name, tuple(conv.weight.shape)
    name, conv = conv_module(net.model, net.spec, layer)
    return filter_images(conv, rgb=conv.in_channels == 3 and conv.groups == 1), name, tuple(conv.weight.shape)


#: pixels a filter grid spans at least: 32 filters at 24 px made a 517 x 248 px figure for two networks
MIN_GRID_PX = 480


def inspect_filters(backbone: str, out: str | os.PathLike, weights="default", layer: str | None = None,
                    compare_weights=None, max_filters: int = 256, cell: int = 24) -> FiltersResult:
    """Draw the first convolution's filters (or ``layer``'s) as a PNG grid, optionally beside ``compare_weights``'.

    At most ``max_filters`` filters per network, each drawn at least ``cell`` px wide (wider for a few
    filters: each grid spans :data:`MIN_GRID_PX`), in a near-square grid.
    """
    nets = [load_net(backbone, weights)]
    if compare_weights is not None:
        nets.append(load_net(backbone, compare_weights))
    panels = []
    for net in nets:
        imgs, name, shape = _filters(net, layer)
        imgs = imgs[:max_filters]
        cols = max(1, int(np.ceil(np.sqrt(len(imgs)))))
        rows = [list(imgs[i:i + cols]) for i in range(0, len(imgs), cols)]
        panels.append(Panel(f"{net.label}: {name}", rows, [str(i) for i in range(0, len(imgs), cols)]))
    kind = "RGB, each normalised" if layer is None else "mean over input channels, each normalised"
    cols = max(len(p.cells[0]) for p in panels)
    cell = max(int(cell), MIN_GRID_PX // cols)
    path = grid_figure(panels, out, cell, title=f"{backbone} {name} filters {shape} ({kind})")
    return FiltersResult(Path(path), name, shape, [n.label for n in nets])


__all__ = ["FiltersResult", "conv_module", "filter_images", "first_conv", "inspect_filters"]
