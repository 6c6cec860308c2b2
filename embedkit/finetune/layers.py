"""Weight layers of a network, numbered as in the paper, and layer-group specs like ``"1-10,17-19"``.

A network's *weight layers* are its ``Conv2d`` and ``Linear`` modules in
definition order, numbered from 1. For VGG19 that gives the paper's numbering:
16 convolutions (1 = conv1_1 ... 16 = conv5_4) then fc6 (17), fc7 (18) and the
classifier (19). Every other parameter (BatchNorm, biases of odd modules, layer
scales) belongs to the weight layer defined just before it, so a BatchNorm
follows its convolution: re-initialising a layer also resets the normalisation
after it, and freezing a layer freezes it too. Parameters defined before the
first weight layer go with layer 1.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from torch import nn

from embedkit.errors import ConfigError

WEIGHT_TYPES = (nn.Conv2d, nn.Linear)


@dataclass
class WeightLayer:
    """One numbered weight layer and the modules/parameters that go with it."""

    index: int  # 1-based
    name: str  # module name, e.g. "features.0"
    module: nn.Module
    attached: list = field(default_factory=list)  # (name, module) that follow it and own parameters (e.g. BatchNorm)
    params: list = field(default_factory=list)  # nn.Parameter, this layer's and its attached modules'

    @property
    def kind(self) -> str:
        return type(self.module).__name__

    @property
    def shape(self) -> tuple:
        return tuple(self.module.weight.shape)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)

    def reset(self) -> None:
        """Re-initialise the layer and its attached modules with their own default initialisers."""
        for mod in [self.module] + [m for _, m in self.attached]:
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()


def weight_layers(model: nn.Module) -> list[WeightLayer]:
    """The numbered weight layers of ``model`` (Conv2d/Linear in definition order), every parameter assigned."""
    layers: list[WeightLayer] = []
    before: list[tuple[str, nn.Module, list]] = []
    seen: set[int] = set()
    for name, mod in model.named_modules():
        own = [p for p in mod.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        if isinstance(mod, WEIGHT_TYPES):
            layers.append(WeightLayer(len(layers) + 1, name, mod, params=own))
        elif own:
            if layers:
                layers[-1].attached.append((name, mod))
                layers[-1].params.extend(own)
            else:
                before.append((name, mod, own))
    if not layers:
        raise ConfigError("this model has no Conv2d or Linear layers to fine-tune")
    for name, mod, own in reversed(before):  # e.g. a ViT's position embedding: goes with the first layer
        layers[0].attached.insert(0, (name, mod))
        layers[0].params[:0] = own
    return layers


_RANGE = re.compile(r"^(\d+)?\s*-\s*(\d+)?$")


def parse_layers(spec, layers: list[WeightLayer]) -> list[int]:
    """Indices (1-based, sorted) named by ``spec``.

    ``spec`` is a comma-separated string or a list of: an index (``17``, ``-1`` = last),
    a range (``1-10``, ``11-`` = to the end), a module name (``features.0``) or
    prefix (``classifier`` = every weight layer inside it), or a glob (``blocks.6.*``).
    Empty / None gives no layers.
    """
    if spec is None:
        return []
    tokens = [str(t).strip() for t in (spec.split(",") if isinstance(spec, str) else spec)]
    n = len(layers)
    chosen: set[int] = set()
    for tok in filter(None, tokens):
        if re.fullmatch(r"-?\d+", tok):
            i = int(tok)
            i = n + 1 + i if i < 0 else i
            if not 1 <= i <= n:
                raise ConfigError(f"layer {tok} is out of range; this backbone has weight layers 1-{n}")
            chosen.add(i)
            continue
        m = _RANGE.match(tok)
        if m and (m.group(1) or m.group(2)):
            lo, hi = int(m.group(1) or 1), int(m.group(2) or n)
            if not (1 <= lo <= hi <= n):
                raise ConfigError(f"layer range {tok!r} is not valid; this backbone has weight layers 1-{n}")
            chosen.update(range(lo, hi + 1))
            continue
        hits = [l.index for l in layers
                if l.name == tok or l.name.startswith(tok + ".") or fnmatch.fnmatchcase(l.name, tok)]
        if not hits:
            close = [l.name for l in layers if tok.split(".")[0] in l.name][:6] or [l.name for l in layers[:3]]
            raise ConfigError(f"{tok!r} names no weight layer; give indices 1-{n}, ranges like 1-10, or module names "
                              f"such as {', '.join(close)} (see the layer table printed by embedkit finetune)")
        chosen.update(hits)
    return sorted(chosen)


def format_ranges(indices) -> str:
    """``[1,2,3,5]`` -> ``"1-3,5"``."""
    out, idx = [], sorted(indices)
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ",".join(out) or "-"


def layer_table(layers: list[WeightLayer], plan: dict, max_rows: int = 40) -> str:
    """Text table of what fine-tuning does to each layer; ``plan[index] = (action, lr)``.

    Long tables (more than ``max_rows`` layers) merge runs of consecutive layers with the same plan.
    """
    rows = []
    for l in layers:
        action, lr = plan.get(l.index, ("frozen", 0.0))
        rows.append([str(l.index), l.name, l.kind, "x".join(map(str, l.shape)), l.n_params, action,
                     "-" if action == "frozen" else f"{lr:g}"])
    if len(rows) > max_rows:
        merged = []
        for r in rows:
            if merged and merged[-1][5:] == r[5:]:
                m = merged[-1]
                m[0] = f"{m[0].split('-')[0]}-{r[0]}"
                m[1] = f"{m[1].split(' .. ')[0]} .. {r[1]}"
                m[2] = m[3] = "..."
                m[4] += r[4]
            else:
                merged.append(list(r))
        rows = merged
    head = ["#", "layer", "type", "shape", "params", "action", "lr"]
    rows = [head] + [[str(c) if not isinstance(c, int) else f"{c:,}" for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
