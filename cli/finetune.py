"""`embedkit finetune IMAGES -o run/`: fine-tune a backbone (adaptive / head / head-then-top / full)."""

from __future__ import annotations

import click

from embedkit.cli.options import backbone_name, device_option, split_options, verbosity_options, words
from embedkit.cli.text import printable
from embedkit.errors import ConfigError
from embedkit.finetune.config import AUGMENT_STYLES, AVERAGES, HEAD_INITS, MONITORS, SCHEDULES, STRATEGIES
from embedkit.finetune.recipes import DEFAULT_RECIPE, RECIPES


def _renamed(old: str, new: str, value):
    if value is not None:  # an old spelling keeps working, with a note (classify's --gamma is the SVM kernel's)
        click.echo(f"note: {old} is deprecated here, it is now {new}", err=True)
    return value


# the options a recipe may set: left unset on the command line, they come from it
RECIPE_KEYS = {k for r in RECIPES.values() for k in r.options}


@click.command(name="finetune")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(), help="Run folder (best.pt, last.pt, history.csv, curves.png, split.json).")
@click.option("--backbone", default="efficientnet_lite0", show_default=True, callback=backbone_name,
              help="Registered name (vgg19 = the paper's, resnet50, efficientnet_lite0...) or any timm/torchvision model.")
@click.option("--weights", default="default", show_default=True,
              help="Starting weights: 'default' (ImageNet), 'none' (random) or a .pt/.pth file / finetune checkpoint.")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default=DEFAULT_RECIPE, show_default=True,
              help="Named set of the options below (any option given here overrides it): "
              + "; ".join(f"{r.name} = {r.summary}" for r in RECIPES.values()) + ".")
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default=None,
              help="adaptive = the paper's layer-based optimisation. [default: the recipe's]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (all phases together). [default: the recipe's]")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Training images per batch (also the evaluation batch).")
@click.option("--reinit", default=None, help="adaptive: layers re-initialised and trained at --lr-high, by index range "
              "or module name (e.g. 1-10,17-19 or features.0,classifier); default: the paper's for vgg19/vgg16, else the head.")
@click.option("--lr-high", type=float, default=None, help="Rate of re-initialised layers (and of the head). [default: the recipe's]")
@click.option("--lr-low", type=float, default=None, help="Rate of kept layers (adaptive) and of phase 2 (head-then-top). [default: the recipe's]")
@click.option("--lr", type=float, default=None, help="Single rate for head (default --lr-high) and full (default 1e-3).")
@click.option("--top", default=None, help="head-then-top: top N layers, 'all', or a layer spec, unfrozen in phase 2. [default: the recipe's]")
@click.option("--head-epochs", type=click.IntRange(min=0), default=None, help="head-then-top: epochs of phase 1. [default: the recipe's, else half]")
@click.option("--momentum", type=float, default=None, help="SGD momentum (the paper: 0.9). [default: the recipe's]")
@click.option("--weight-decay", type=float, default=None, help="SGD weight decay (the paper: 5e-4). [default: the recipe's]")
@click.option("--label-smoothing", type=float, default=None, help="Cross-entropy label smoothing (0 = plain cross-entropy, as in the paper). [default: the recipe's]")
@click.option("--augment/--no-augment", default=None, help="Random resized crop, flip, colour jitter. [default: the recipe's]")
@click.option("--augment-strength", type=click.FloatRange(0, 1), default=None, help="Scale of the augmentations (0 = none, 1 = full). [default: the recipe's]")
@click.option("--augment-style", type=click.Choice(list(AUGMENT_STYLES)), default=None,
              help="photo; illustration (adds grey-scale, line weight, flat fills); glyph (icons and line art: line "
              "weight, small affine, grey-scale, inversion, random erasing). [default: the recipe's]")
@click.option("--balanced", is_flag=True, help="Class-balanced sampling of training images.")
@click.option("--schedule", type=click.Choice(list(SCHEDULES)), default=None, help="Learning-rate schedule: cosine decay, step drops, plateau drops on the monitored metric, or none. [default: the recipe's]")
@click.option("--step-size", type=click.IntRange(min=1), default=None, help="step schedule: epochs between drops (default a third).")
@click.option("--lr-drop", "gamma", type=float, default=0.1, show_default=True, help="step / plateau: factor of each drop.")
@click.option("--gamma", "old_gamma", type=float, default=None, hidden=True, expose_value=True,
              callback=lambda _ctx, _param, v: _renamed("--gamma", "--lr-drop", v))
@click.option("--monitor", type=click.Choice(list(MONITORS)), default=None,
              help="Validation metric for the best checkpoint, plateau and early stopping: the softmax's accuracy or "
              "loss, or val_codes = the accuracy of the codes (nearest class mean of the training codes). "
              "[default: the recipe's]")
@click.option("--early-stop", "patience", type=click.IntRange(min=1), default=None, help="Stop after this many epochs without improvement.")
@split_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split, initialisation and sampling.")
@click.option("--input-size", type=click.IntRange(min=16), default=None, help="Input resolution (default: the backbone's).")
@device_option
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Decoding processes (default: half the cores).")
@click.option("--eval-test", is_flag=True, help="Evaluate the best checkpoint on the test split at the end (never used for selection).")
@click.option("--average", type=click.Choice(list(AVERAGES)), default=None,
              help="head-then-top: wise = export the mix of the phase-1 linear probe and the fine-tuned network "
              "whose codes classify the validation split best (WiSE-FT). [default: the recipe's]")
@click.option("--head-init", type=click.Choice(list(HEAD_INITS)), default=None,
              help="A new head: random, or logistic = fitted by logistic regression on the frozen training codes "
              "before training (not with the adaptive strategy). [default: the recipe's, else random]")
@click.option("--freeze-bn-stats/--no-freeze-bn-stats", default=None,
              help="Keep every BatchNorm's running statistics at their pretrained values (small datasets). [default: the recipe's]")
@click.option("--new-head", is_flag=True, help="Allow --weights fine-tuned for other classes: train a new head on them.")
@click.option("--resume", is_flag=True, help="Continue a killed run in OUT (same epoch, optimizer, schedule, RNG).")
@click.option("--overwrite", is_flag=True, help="Start over, replacing the run in OUT.")
@verbosity_options
def command(source, out, resume, overwrite, quiet, verbose, **options):
    """Fine-tune a backbone on the labelled images of SOURCE (one sub-folder per class, or a CSV path,label).

    The layer table printed first shows what is re-initialised, trained (and at which rate) and frozen.
    The best epoch is exported to OUT/best.pt, which `embedkit embed --weights OUT/best.pt` loads.
    """
    from embedkit.finetune.train import finetune

    old_gamma = options.pop("old_gamma")
    options["gamma"] = options["gamma"] if old_gamma is None else old_gamma
    for k in ("lr_high", "lr_low", "lr"):
        if options[k] is not None and options[k] <= 0:
            raise ConfigError(f"--{k.replace('_', '-')} {options[k]} is not valid; learning rates must be > 0")
    # options left unset come from the recipe (FinetuneConfig.from_recipe); the ones given override it
    options = {k: v for k, v in options.items() if v is not None or k not in RECIPE_KEYS}
    # the shared split options (embedkit.cli.options.split_options), mapped onto FinetuneConfig's fields
    options["split"] = options.pop("fractions")
    for k in ("test_groups", "val_groups"):
        options[k] = words(options[k])
    if (options["test_groups"] or options["val_groups"]) and not options["split_by"]:
        raise ConfigError("--test-groups/--val-groups name groups of --split-by; add --split-by design")
    res = finetune(source, out, resume=resume, overwrite=overwrite, progress=not quiet, **options)
    click.echo(res.summary())
    for path, reason in res.skipped[:10]:
        click.echo(f"  skipped {printable(path)}: {printable(reason)}")
    if len(res.skipped) > 10:
        click.echo(f"  ... {len(res.skipped) - 10} more in {res.out / 'skipped.csv'}")
