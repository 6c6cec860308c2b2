"""What a fine-tuning run is asked to do (:class:`FinetuneConfig`) and what it did (:class:`FinetuneResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from embedkit.defaults import SPLIT_FRACTIONS
from embedkit.errors import ConfigError, invalid

STRATEGIES = ("adaptive", "head", "head-then-top", "full")
AUGMENT_STYLES = ("photo", "illustration", "glyph")
AVERAGES = ("none", "wise")
HEAD_INITS = ("random", "logistic")
SCHEDULES = ("none", "step", "cosine", "plateau")
# val_codes: the validation accuracy of the codes (nearest class mean of the training codes), what the network is
# kept for when its codes feed an SVM or a search index; val_acc / val_loss: its own softmax
MONITORS = ("val_acc", "val_loss", "val_codes")

# The paper's re-initialised layers: conv1_1 ... conv4_2, fc6, fc7 and the new head.
PAPER_REINIT = {"vgg19": "1-10,17-19", "vgg16": "1-9,14-16"}

# Options a resumed run may change; everything else must match the interrupted run.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "patience", "eval_test")


@dataclass
class FinetuneConfig:
    """Every option of a fine-tuning run (saved in ``config.json`` and ``last.pt``)."""

    backbone: str = "efficientnet_lite0"  # vgg19 gives the paper's configuration
    recipe: str | None = None  # the named recipe the options started from (embedkit.finetune.recipes)
    weights: str = "default"
    strategy: str = "adaptive"
    epochs: int = 10
    batch_size: int = 32
    reinit: str | None = None  # adaptive: layer spec; default PAPER_REINIT or the head only
    lr_high: float = 1e-2
    lr_low: float = 1e-4
    lr: float | None = None  # head / full: the single rate
    top: str = "4"  # head-then-top: N top layers, or a layer spec
    head_epochs: int | None = None  # head-then-top: default half the epochs
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True
    augment_strength: float = 1.0
    augment_style: str = "photo"  # "illustration" adds grey-scale renderings, line weight and flat fills
    balanced: bool = False
    schedule: str = "cosine"
    step_size: int | None = None
    gamma: float = 0.1
    monitor: str = "val_acc"
    patience: int | None = None  # early stopping after this many epochs without improvement
    split: tuple = SPLIT_FRACTIONS
    split_file: str | None = None
    split_by: str | None = None  # "design": hold out whole file-name groups, as classify --split-by design
    test_groups: tuple = ()  # with split_by: the groups to test on (default: a seeded pick, as classify's)
    val_groups: tuple = ()  # with split_by: the validation groups (model selection sees only these designs)
    seed: int = 0
    input_size: int | None = None
    device: str = "auto"
    workers: int | None = None  # decoding processes; None = half the cores (seeded either way)
    eval_test: bool = False
    new_head: bool = False
    # Keep every BatchNorm's running statistics at their pretrained values (the affine
    # parameters still train): small, augmented batches of a new domain can drag them far.
    freeze_bn_stats: bool = False
    # head-then-top: export a weight-space mix of the phase-1 linear probe and the best fine-tuned epoch,
    # the mix whose codes classify the validation split best (embedkit.finetune.average)
    average: str = "none"
    average_alphas: tuple = (0.0, 0.25, 0.5, 0.75, 1.0)
    # a fresh head: random, or fitted in closed form (logistic regression) on the frozen training codes first
    head_init: str = "random"

    def validate(self) -> "FinetuneConfig":
        for name, value, valid in (("strategy", self.strategy, STRATEGIES), ("schedule", self.schedule, SCHEDULES),
                                   ("monitor", self.monitor, MONITORS),
                                   ("augment_style", self.augment_style, AUGMENT_STYLES),
                                   ("average", self.average, AVERAGES),
                                   ("head_init", self.head_init, HEAD_INITS)):
            if value not in valid:
                raise invalid(name, value, valid)
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise ConfigError(f"epochs={self.epochs}, batch_size={self.batch_size}: both must be >= 1")
        for name in ("lr_high", "lr_low"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} is not valid; learning rates must be > 0")
        if not 0 <= self.label_smoothing < 1:
            raise invalid("label_smoothing", self.label_smoothing, "a number in [0, 1)")
        if self.average == "wise" and self.strategy != "head-then-top":
            raise ConfigError(f"average='wise' mixes the linear probe of head-then-top's first phase with the "
                              f"fine-tuned network; strategy {self.strategy!r} has no such phase. Use "
                              "--strategy head-then-top, or --average none")
        if self.head_init == "logistic" and self.strategy == "adaptive":
            raise ConfigError("head_init='logistic' fits the head on the pretrained codes, which the adaptive "
                              "strategy re-initialises; use --strategy head-then-top (or head, full), or "
                              "--head-init random")
        self.split = tuple(float(f) for f in self.split)
        self.average_alphas = tuple(float(a) for a in self.average_alphas)
        return self
    @property
    def maximize(self) -> bool:
        """Whether the monitored metric is better higher (accuracies) or lower (the loss)."""
        return self.monitor != "val_loss"

    @classmethod
    def from_recipe(cls, recipe: str | None = None, **options) -> "FinetuneConfig":
        """The options of ``recipe`` (default :data:`~embedkit.finetune.recipes.DEFAULT_RECIPE`), then ``options``."""
        from embedkit.finetune.recipes import DEFAULT_RECIPE, recipe_options

        name = DEFAULT_RECIPE if recipe is None else recipe
        merged = {**recipe_options(name), **options, "recipe": name}
        if merged.get("strategy") != "head-then-top" and "average" not in options:
            merged["average"] = "none"  # the recipe's mix needs head-then-top's probe; another strategy given has none
        return cls(**merged)


@dataclass
class FinetuneResult:
    """What a run produced; ``best_path`` is the exported backbone (``--weights`` for embed/classify)."""

    out: Path
    best_path: Path
    last_path: Path
    history: list
    best_epoch: int
    best_metric: float
    monitor: str
    seconds: float
    images: int
    stopped_early: bool = False
    test: dict | None = None
    skipped: list = field(default_factory=list)
    epochs_run: int = 0  # epochs trained by this call (fewer than len(history) after a resume)
    backbone_change: float | None = None  # largest relative change of a backbone tensor in best.pt (0: codes unchanged)
    note: str = ""  # what the user must know about best.pt (its codes are the starting weights')

    def summary(self) -> str:
        train_s = sum(float(r["seconds"]) for r in self.history[-self.epochs_run:]) if self.epochs_run else 0.0
        ips = self.images / train_s if train_s > 0 else 0.0
        last = self.history[-1] if self.history else {}
        s = (f"fine-tuned {self.epochs_run} epochs (to epoch {last.get('epoch', 0)}) in {self.seconds:.1f} s, "
             f"training at {ips:.1f} images/s{' (stopped early)' if self.stopped_early else ''}; best {self.monitor} "
             f"{self.best_metric:.4f} at epoch {self.best_epoch}; {len(self.skipped)} images skipped")
        if self.test:
            s += f"; test acc {self.test['test_acc']:.4f} ({self.test['test_images']} images)"
        s += f"\nbest backbone: {self.best_path} (use --weights {self.best_path}); history, curves, split in {self.out}"
        return s + (f"\n{self.note}" if self.note else "")


def _resume_config(saved: dict, cfg: FinetuneConfig) -> FinetuneConfig:
    try:  # last.pt may be damaged or crafted: its config is checked like options given on the command line
        old = FinetuneConfig(**{**saved, "split": tuple(saved["split"]),
                                "average_alphas": tuple(saved.get("average_alphas", FinetuneConfig.average_alphas))})
        old.validate()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ConfigError) else str(exc)
        raise ConfigError(f"the saved training state (last.pt) holds a configuration that cannot be used "
                          f"({detail[:200]}); start over with --overwrite (overwrite=True)") from exc
    diffs = [f"{f.name}: {getattr(old, f.name)!r} -> {getattr(cfg, f.name)!r}" for f in fields(cfg)
             if f.name not in RESUMABLE_CHANGES and getattr(old, f.name) != getattr(cfg, f.name)
             and not (f.name == "head_epochs" and cfg.head_epochs is None)]  # None: keep the run's boundary
    if diffs:
        raise ConfigError(f"resume must use the options of the interrupted run; changed: {'; '.join(diffs)}. "
                          "Run again with the same options, or start over with --overwrite (overwrite=True)")
    if old.strategy == "head-then-top" and old.head_epochs is None and cfg.epochs != old.epochs:
        old.head_epochs = max(1, old.epochs // 2)  # the phase boundary of the interrupted run stays where it was
    for name in RESUMABLE_CHANGES:
        setattr(old, name, getattr(cfg, name))
    return old

