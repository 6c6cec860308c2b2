"""Named fine-tuning recipes: a recipe is a set of :class:`FinetuneConfig` options, overridable one by one.

- ``paper``: the adaptive layer-based optimisation of Lagunas & Garces as published (for VGG19: layers
  1-10 and the classifier re-initialised at 1e-2, the rest kept at 1e-4; SGD momentum 0.9, weight decay
  5e-4, cross-entropy, 10 epochs here), photo-style augmentation.
- ``small``: the default for small illustration sets (a few hundred images), chosen by leave-designs-out
  cross-validation on emoji-dev (``benchmarks/paper_table.py``, ``benchmarks/results/paper_table.md``): over 7
  folds its codes + SVM scored 97.2% top-1 against 96.6% for ImageNet codes (+0.6 points, 95% CI -0.3 to
  +1.5: not shown better, and worse on no fold), and its own softmax 96.9% (82.1% with a random head); the
  paper's recipe was worse on 2 of the 5 folds it was measured on and equal on the others. It keeps every pretrained layer (re-initialising low layers destroys more
  than a few hundred images can re-learn) and fits a new head first: in closed form, a logistic regression
  on the frozen training codes (``head_init="logistic"``, :mod:`embedkit.finetune.probe`), then 2 epochs on
  frozen features, then the whole network at a low rate (LP-FT, Kumar et al. 2022: a fitted head keeps
  fine-tuning from distorting the pretrained features, which is what carries over to unseen styles). It
  keeps BatchNorm statistics at their pretrained values (batches of 32 augmented drawings are a poor
  estimate), augments the way illustrations vary (colour and grey-scale renderings, line weight, flat fills),
  and exports a weight-space mix of the linear probe and the fine-tuned network chosen on the validation
  designs (WiSE-FT, :mod:`embedkit.finetune.average`). The epoch is chosen on validation designs too, and
  often is the probe's: then the codes are the ImageNet codes, and the gain is the softmax's.
- ``codes``: ``small`` with the epoch chosen by the validation accuracy of the codes (``monitor="val_codes"``),
  for a network kept for its codes. On icons-dev (``benchmarks/results/paper_table_icons-dev.md``, 5
  leave-family-out folds) its codes + SVM scored 86.4% against 84.8% for ImageNet codes (+1.6, 95% CI -1.6 to
  +4.8: not shown better; better on 2 folds, worse on 1); not measured on emoji-dev. A ``glyph`` recipe (every
  layer at 3e-3, 128 px, adapted BatchNorm statistics) was measured worse there (-6.8) and withdrawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from embedkit.errors import invalid


@dataclass(frozen=True)
class Recipe:
    """A named set of fine-tuning options and the one-line reason for it."""

    name: str
    summary: str
    options: dict = field(default_factory=dict)


SMALL = {"strategy": "head-then-top", "top": "all", "epochs": 8, "head_epochs": 2, "lr_high": 1e-2, "lr_low": 1e-3,
         "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.1, "augment": True, "augment_strength": 0.5,
         "augment_style": "illustration", "schedule": "cosine", "freeze_bn_stats": True, "average": "wise",
         "head_init": "logistic", "monitor": "val_acc"}

RECIPES = {r.name: r for r in (
    Recipe("paper", "the paper's adaptive layer-based optimisation (re-initialise low layers, two rates)",
           {"strategy": "adaptive", "epochs": 10, "lr_high": 1e-2, "lr_low": 1e-4, "momentum": 0.9,
            "weight_decay": 5e-4, "label_smoothing": 0.0, "augment": True, "augment_strength": 1.0,
            "augment_style": "photo", "schedule": "cosine", "freeze_bn_stats": False, "average": "none",
            "monitor": "val_acc", "head_init": "random"}),
    Recipe("small", "small illustration sets: a new head fitted in closed form on frozen codes, then every layer at a "
                    "low rate, frozen BatchNorm statistics, illustration augmentation, weights mixed with the "
                    "linear probe's", SMALL),
    # the same training; only the choice of the epoch differs: by what the network is kept for, its codes
    Recipe("codes", "small, with the epoch chosen by the validation accuracy of its codes (--monitor val_codes): for "
                    "a network kept for its codes on a domain far from photos (icons, line art)",
           {**SMALL, "monitor": "val_codes"}),
)}
DEFAULT_RECIPE = "small"


def recipe_options(name: str | None) -> dict:
    """The options of recipe ``name`` (a copy; ``None`` = the default recipe)."""
    name = DEFAULT_RECIPE if name is None else name
    if name not in RECIPES:
        raise invalid("recipe", name, list(RECIPES), "see `embedkit finetune --help`")
    return dict(RECIPES[name].options)
