"""A network stopped at one layer: resolve a user's layer name, return that layer's activation map.

A layer is a backbone's friendly name (``pool5``), a module name (``features.14``, ``blocks.2``) or
a torch.fx graph node (``layer1.0.add``). Module layers are read with a forward hook that stops the
forward pass right after them (the rest of the network is never computed); graph nodes go through
:func:`embedkit.models.features._truncate`, the same graph cut as ``embed --layer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from embedkit.errors import ConfigError, invalid
from embedkit.models.preprocessing import Preprocessing
from embedkit.models.registry import BackboneSpec


class _Stop(Exception):
    """Raised by the hook once the layer's output is captured: skips the rest of the network."""


def conv_layer_names(model: nn.Module) -> list[str]:
    """Module names of every Conv2d, in definition order (the layers worth inspecting)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _examples(model: nn.Module, given: str) -> list[str]:
    convs = conv_layer_names(model)
    close = [n for n in convs if given and (given in n or n.startswith(given.split(".")[0]))]
    return (close or convs)[:8]


def resolve_module(model: nn.Module, spec: BackboneSpec | None, layer: str) -> tuple[str, nn.Module | None]:
    """``(name, module)`` of ``layer``; ``module`` is None when it is a graph node but not a module."""
    if spec is not None:
        layer = spec.layers.get(layer, layer)
    try:
        return layer, model.get_submodule(layer) if layer else None
    except AttributeError:
        return layer, None


class Probe(nn.Module):
    """``forward(x)`` returns the activation of one layer of ``model``, shape (B, C, h, w)."""

    def __init__(self, model: nn.Module, layer: str, spec: BackboneSpec | None = None):
        super().__init__()
        self.model = model.eval()
        self.layer, module = resolve_module(model, spec, layer)
        self.body = None
        self._out = None
        self._module = module if module is not model else None
        if self._module is None:
            self.body = self._graph_cut(model, self.layer, spec, layer)

    @staticmethod
    def _graph_cut(model, node, spec, given):
        from embedkit.models.features import _truncate

        source = spec.source if spec is not None else "torchvision"
        listed = f"`embedkit layers {spec.name}` lists every one" if spec is not None else "see the model's modules"
        try:
            return _truncate(model, node, source, spec)
        except ConfigError as exc:  # not a node: one message, with the conv layers inspect is for
            raise invalid("layer", given, _examples(model, given),
                          fix=f"a conv layer listed here, any module name or graph node; {listed}") \
                from exc
        except Exception as exc:  # noqa: BLE001 - fx tracing of odd models fails in many ways; one message, whole
            raise ConfigError(f"layer {given!r}: the network cannot be cut there ({type(exc).__name__}: {exc}); "
                              f"choose a module name such as {', '.join(_examples(model, given))}") from exc

    def _capture(self, _module, _inputs, output):
        self._out = output
        raise _Stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.body is not None:
            out = self.body(x)
            return out["code"] if isinstance(out, dict) else out
        self._out = None
        # The hook lives only for this call: the same network can be probed at several layers.
        handle = self._module.register_forward_hook(self._capture)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        out, self._out = self._out, None
        if out is None:
            raise ConfigError(f"layer {self.layer!r} is never run by this network's forward pass; choose another")
        return out


@dataclass
class LoadedNet:
    """A backbone with its weights, ready to probe: the module, weights identity and preprocessing."""

    spec: BackboneSpec
    model: nn.Module
    weights: str
    identity: str
    preprocessing: Preprocessing

    @property
    def label(self) -> str:
        return "ImageNet" if self.weights in ("default", "imagenet", "pretrained") else self.identity


def load_net(backbone: str, weights="default") -> LoadedNet:
    """Build ``backbone`` with ``weights`` through the registry and :func:`load_model` (eval mode, CPU), with
    the preprocessing a :class:`~embedkit.models.backbone.Backbone` of them would use (the checkpoint's, else the spec's)."""
    from embedkit.models.registry import get_spec
    from embedkit.models.weights import load_model, resolve_preprocessing

    spec = get_spec(backbone)
    model, info = load_model(spec, weights)
    return LoadedNet(spec, model.eval(), str(weights), info.identity, resolve_preprocessing(spec, info))


__all__ = ["LoadedNet", "Probe", "conv_layer_names", "load_net", "resolve_module"]
