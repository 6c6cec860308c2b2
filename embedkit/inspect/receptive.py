"""Receptive fields computed from the network itself: size, stride (jump) and padding of any conv layer.

One forward pass of a dummy input runs under a :class:`~torch.overrides.TorchFunctionMode`
that sees every torch call (module internals, functional ops, ``x + y``) and attaches to each
output tensor the receptive field of its first position. Convolutions, max/avg pooling and
explicit padding (``F.pad``, e.g. timm's TF "same" padding, whose amount depends on the input
size: hence a dummy input of the real size) compose the field with the usual recurrences::

    size  += (kernel - 1) * dilation * jump
    start -= padding * jump
    jump  *= stride

where ``start`` is the input coordinate of the first output position's top/left edge (so the
effective padding is ``-start``) and position ``i`` of the layer covers input pixels
``[start + i*jump, start + i*jump + size)``. Nothing is hard-coded per model.

Limits: branches (residual connections, concatenations, squeeze-excitation gates) take the
*largest* field among the inputs that share the output's spatial size, which is exact for
residual blocks whose shortcut sees less than the main path and an upper bound otherwise;
inputs of size 1x1 broadcast over the output (SE gates) do not count. Ops that change the
spatial size in other ways (adaptive pooling, interpolation, NHWC permutes) make the field
*global*: such layers are not spatial for :func:`receptive_field`. Tensors are assumed NCHW.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from embedkit.errors import ConfigError


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one layer's positions, per axis ``(h, w)``, in input pixels."""

    size: tuple[int, int]
    jump: tuple[int, int]  # stride of the layer relative to the input
    start: tuple[int, int]  # input coordinate of position 0's top/left edge (negative inside the padding)

    @property
    def padding(self) -> tuple[int, int]:
        """Effective padding of the input: how far position 0's field reaches beyond the top/left edge."""
        return (-self.start[0], -self.start[1])

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Input box ``(left, top, right, bottom)`` (right/bottom exclusive) seen by position ``(y, x)``."""
        top = self.start[0] + y * self.jump[0]
        left = self.start[1] + x * self.jump[1]
        return left, top, left + self.size[1], top + self.size[0]

    def describe(self) -> str:
        s = lambda t: str(t[0]) if t[0] == t[1] else f"{t[0]}x{t[1]}"  # noqa: E731 - square fields print once
        return f"receptive field {s(self.size)} px, stride {s(self.jump)}, padding {s(self.padding)}"


IDENTITY = ReceptiveField((1, 1), (1, 1), (0, 0))
GLOBAL = "global"  # marker: this tensor's positions are not a spatial map of the input


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1])) if len(v) else (0, 0)
    return (int(v), int(v))


def _compose(rf: ReceptiveField, kernel, stride, padding, dilation) -> ReceptiveField:
    k, s, p, d = _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
    return ReceptiveField(
        size=tuple(rf.size[i] + (k[i] - 1) * d[i] * rf.jump[i] for i in range(2)),
        jump=tuple(rf.jump[i] * s[i] for i in range(2)),
        start=tuple(rf.start[i] - p[i] * rf.jump[i] for i in range(2)),
    )


def _bind(args, kwargs, names: tuple[str, ...], defaults: dict) -> dict:
    """Positional + keyword arguments of a functional op by name (the builtins have no signature)."""
    got = dict(defaults)
    got.update(dict(zip(names, args)))
    got.update(kwargs)
    return got


_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_POOL = ("input", "kernel_size", "stride", "padding", "dilation")


def _spatial_op(name: str, args, kwargs, rf: ReceptiveField):
    """The field after a known spatial op, or None when ``name`` is not one."""
    if name == "conv2d":
        a = _bind(args, kwargs, _CONV, {"stride": 1, "padding": 0, "dilation": 1})
        k = tuple(a["weight"].shape[-2:])
        pad = a["padding"]
        if isinstance(pad, str):  # "valid" or "same" (stride 1): same pads (k-1)*d//2 on the top/left
            d = _pair(a["dilation"])
            pad = (0, 0) if pad == "valid" else tuple((k[i] - 1) * d[i] // 2 for i in range(2))
        return _compose(rf, k, a["stride"], pad, a["dilation"])
    if name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        a = _bind(args, kwargs, _POOL, {"stride": None, "padding": 0, "dilation": 1})
        stride = a["stride"] if a["stride"] not in (None, [], ()) else a["kernel_size"]
        dil = 1 if name == "avg_pool2d" else a["dilation"]  # avg_pool2d's 5th argument is ceil_mode
        return _compose(rf, a["kernel_size"], stride, a["padding"], dil)
    if name == "pad":
        pad = list(args[1] if len(args) > 1 else kwargs["pad"])
        left, top = (pad + [0, 0, 0, 0])[0], (pad + [0, 0, 0, 0])[2]  # F.pad order: (left, right, top, bottom)
        return ReceptiveField(rf.size, rf.jump, (rf.start[0] - top * rf.jump[0], rf.start[1] - left * rf.jump[1]))
    return None


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class FieldTracker(TorchFunctionMode):
    """Attach a receptive field (or :data:`GLOBAL`) to every tensor computed from the tracked input."""

    def __init__(self):
        super().__init__()
        self.fields = WeakIdKeyDictionary()

    def track(self, x: torch.Tensor) -> torch.Tensor:
        self.fields[x] = IDENTITY
        return x

    def field(self, t: torch.Tensor):
        return self.fields.get(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        known = [(t, self.fields[t]) for t in _tensors((args, kwargs)) if t in self.fields]
        outs = list(_tensors(out))
        if not known or not outs:
            return out
        name = getattr(func, "__name__", "")
        first, rf0 = known[0]
        for o in outs:
            self.fields[o] = self._propagate(name, args, kwargs, first, rf0, known, o)
        return out

    @staticmethod
    def _propagate(name, args, kwargs, first, rf0, known, out):
        if out.ndim != 4:
            return GLOBAL
        if first.ndim == 4 and isinstance(rf0, ReceptiveField) and args and args[0] is first:
            rf = _spatial_op(name, args, kwargs, rf0)
            if rf is not None:
                return rf
        # Any other op keeps the spatial layout only if an input has the output's height and width;
        # over several such inputs (a residual add, a concatenation) the largest field is taken.
        same = [rf for t, rf in known if t.ndim == 4 and t.shape[-2:] == out.shape[-2:]]
        if any(rf == GLOBAL for rf in same) and not any(isinstance(rf, ReceptiveField) for rf in same):
            return GLOBAL
        fields = [rf for rf in same if isinstance(rf, ReceptiveField)]
        if not fields:
            return GLOBAL
        return max(fields, key=lambda r: (r.size[0] * r.size[1], r.jump))


def receptive_field(forward, input_size: int | tuple[int, int] = 224, in_channels: int = 3) -> ReceptiveField:
    """Receptive field of the tensor returned by ``forward(x)`` for a dummy ``(1, C, H, W)`` input.

    ``forward`` is a network truncated at the layer (e.g. :class:`embedkit.inspect.activations.Probe`) or any
    callable returning the layer's (1, C, h, w) activation. Raises :class:`ConfigError` when that
    activation is not a spatial map of the input (a pooled, flattened or fully connected layer).
    """
    h, w = _pair(input_size)
    tracker = FieldTracker()
    with torch.no_grad():
        x = torch.zeros(1, in_channels, h, w)
        with tracker:
            tracker.track(x)
            out = forward(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        rf = tracker.field(out) if isinstance(out, torch.Tensor) else None
    if not isinstance(rf, ReceptiveField):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"this layer's output {shape} is not a spatial map of the input (pooled, flattened or "
                          "fully connected); choose a convolution or pooling layer")
    return rf


def sequential_field(layers: list[nn.Module]) -> ReceptiveField:
    """Receptive field of a plain chain of modules, from their attributes alone (no forward).

    A cross-check of :func:`receptive_field` for simple networks; modules without a kernel pass through.
    """
    rf = IDENTITY
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            dil = getattr(m, "dilation", 1)
            rf = _compose(rf, m.kernel_size, m.stride or m.kernel_size, m.padding, dil)
    return rf


__all__ = ["GLOBAL", "IDENTITY", "FieldTracker", "ReceptiveField", "receptive_field", "sequential_field"]
