"""Options shared by several commands, declared once (same name, same help, same parsing everywhere).

Defaults and choices come from the library (:mod:`embedkit.defaults`, the modules' constants), so the
CLI and the Python API never disagree. Importing this module must stay cheap: no torch.
"""

from __future__ import annotations

import difflib
import logging

import click

from embedkit import defaults
from embedkit.cli.text import printable
from embedkit.device import DEVICE_CHOICES

SPLIT_BY_HELP = "Hold out whole groups: 'design' (file name without extension) or a column of the store's items."


def _fractions(_ctx, _param, value):
    """Parse ``train,val,test`` fractions: three non-negative numbers summing to 1."""
    if value is None or isinstance(value, tuple):
        return value
    try:
        parts = tuple(float(v) for v in str(value).split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise click.BadParameter(f"{value!r}: give three fractions train,val,test that sum to 1, such as 0.64,0.16,0.20")
    return parts


def device_option(f):
    return click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                        help="Where to run: auto picks CUDA when present, else the CPU.")(f)


def backbone_name(_ctx, _param, value):
    """Refuse a near miss of a built-in backbone name at once, before torch and timm are imported (seconds):
    ``efficientnet_lit0`` -> "did you mean efficientnet_lite0?". Other names are looked up when the model is
    built (any timm / torchvision model); a library's own model close to a built-in name takes its prefix."""
    if value is None or value in defaults.BUILTIN_BACKBONES or ":" in value:
        return value
    near = difflib.get_close_matches(value, defaults.BUILTIN_BACKBONES, n=1, cutoff=0.85)
    if near:
        raise click.BadParameter(f"{value!r} is not known: did you mean {near[0]}? (for timm's or torchvision's "
                                 f"own model of that name write timm:{value} or torchvision:{value})")
    return value


def backbone_option(f):
    return click.option("--backbone", default=defaults.BACKBONE, show_default=True, callback=backbone_name,
                        help="Registered name (vgg19 = the paper's, resnet50, efficientnet_lite0...) or any "
                             "timm/torchvision model (timm:NAME, torchvision:NAME).")(f)


def weights_option(f):
    return click.option("--weights", default="default", show_default=True,
                        help="'default' (ImageNet), 'none' (random init) or a .pt/.pth state_dict / "
                             "`embedkit finetune` checkpoint.")(f)


def backbone_options(f):
    """--backbone, --layer, --weights."""
    f = weights_option(f)
    f = click.option("--layer", default=None,
                     help="Code layer (e.g. fc7, pool5) or any graph node (list them with `embedkit layers "
                          "BACKBONE`); default: the backbone's.")(f)
    return backbone_option(f)


def batch_size_option(f):
    return click.option("--batch-size", type=click.IntRange(min=1), default=None,
                        help=f"Images per loader batch (default {defaults.BATCH_SIZE['cpu']} on CPU, "
                             f"{defaults.BATCH_SIZE['cuda']} on CUDA).")(f)


def workers_option(f):
    return click.option("--workers", type=click.IntRange(min=0), default=None,
                        help="Image decoding processes (default: half the cores, at most 8; 0 = in this process).")(f)


def seed_option(f):
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Seed of the split, folds, sampling and initialisation.")(f)


def split_options(f):
    """--fractions, --split-by, --test-groups, --val-groups, --split-file: one way to split, everywhere."""
    f = click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="CSV of path,split rows (train/val/test) for every item, instead of fractions.")(f)
    f = click.option("--val-groups", default="", help="With --split-by: the validation groups, comma-separated.")(f)
    f = click.option("--test-groups", default="",
                     help="With --split-by: the groups to test on, comma-separated (default: a seeded pick of about "
                          "the test fraction).")(f)
    f = click.option("--split-by", default=None, help=SPLIT_BY_HELP)(f)
    return click.option("--fractions", default=",".join(f"{x:g}" for x in defaults.SPLIT_FRACTIONS),
                        show_default=True, callback=_fractions,
                        help="Train,val,test fractions of a stratified, seeded split.")(f)


def overwrite_option(f):
    return click.option("--overwrite", is_flag=True, help="Replace what is already at the output.")(f)


def _verbosity(ctx, param, value):
    """Configure embedkit's loggers as soon as -q/-v is parsed (one switch for logs and progress bars)."""
    if value:
        level = logging.ERROR if param.name == "quiet" else logging.DEBUG
        ctx.meta["embedkit.log_level"] = level
    configure_logging(ctx.meta.get("embedkit.log_level", logging.INFO))
    return value


class _EchoHandler(logging.Handler):
    """Writes through click at emit time, so the message lands on the current stderr (and off the progress bar)."""

    _embedkit = True
    NAMES = {"WARNING": "warning", "ERROR": "error", "DEBUG": "debug", "CRITICAL": "error"}

    def emit(self, record) -> None:
        try:
            # INFO is the commands' running commentary (layer tables, epochs, projection steps): plain lines
            prefix = self.NAMES.get(record.levelname)
            text = printable(record.getMessage())  # messages name files: no raw escape sequences
            click.echo(f"{prefix}: {text}" if prefix else text, err=True)
        except Exception:  # logging must never break the command
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Library messages (named loggers under ``embedkit``) go to stderr as ``warning: ...`` lines."""
    logger = logging.getLogger("embedkit")
    if not any(getattr(h, "_embedkit", False) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
        logger.propagate = False
    logger.setLevel(level)


def verbosity_options(f):
    """-q/--quiet (no progress bars, errors only) and -v/--verbose (debug logging)."""
    f = click.option("-v", "--verbose", is_flag=True, callback=_verbosity, help="Log more (debug messages).")(f)
    return click.option("-q", "--quiet", is_flag=True, callback=_verbosity,
                        help="No progress bars; print only the summary and errors.")(f)


def words(text: str) -> tuple:
    """Comma-separated words, blanks dropped."""
    return tuple(v.strip() for v in (text or "").split(",") if v.strip())


def floats(text: str, what: str) -> tuple:
    """Comma-separated numbers, or a click error naming the option."""
    try:
        vals = tuple(float(v) for v in words(text))
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: give comma-separated numbers, e.g. 0.1,1,10", param_hint=what) from exc
    if not vals:
        raise click.BadParameter("is empty; give comma-separated numbers", param_hint=what)
    return vals
