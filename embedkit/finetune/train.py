"""Fine-tuning a backbone on labelled images: the paper's adaptive layer-based optimisation and classic recipes.

Strategies (layers are numbered as in :mod:`embedkit.layers`; the new classifier head is the last one):

- ``adaptive`` (Lagunas & Garces): re-initialise the ``reinit`` layers and the head and train them at
  ``lr_high``; every other layer keeps its pretrained weights and trains at ``lr_low``. For VGG19 the
  default is the paper's: layers 1-10 and 17-19 re-initialised at 1e-2, 11-16 kept at 1e-4.
- ``head``: freeze the base, train a new head at ``lr`` (default ``lr_high``).
- ``head-then-top``: ``head`` for ``head_epochs``, then unfreeze the ``top`` layers and train them with
  the head at ``lr_low``.
- ``full``: everything at one rate ``lr`` (default 1e-3).

SGD with momentum and weight decay, cross-entropy (optional label smoothing). A run folder holds
``last.pt`` (full training state, rewritten atomically every epoch: ``resume=True`` continues a killed run
exactly), ``best.pt`` (the best epoch exported as a backbone that ``embedkit embed --weights`` loads),
``history.csv``, ``curves.png``, ``split.json``, ``skipped.csv`` and ``config.json``.

Resuming with another ``epochs`` (to train a finished run longer, or to stop a killed one sooner) re-plans
the cosine/step schedule: it becomes the schedule the run would have had with the new number of epochs from
the start, at the epoch reached (see :func:`replan_schedule`), so the added epochs never train at rate 0.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedkit.atomic import torch_save_atomic, write_csv_atomic, write_json_atomic
from embedkit.device import autocast_dtype, resolve_device
from embedkit.defaults import SPLIT_FRACTIONS
from embedkit.errors import ConfigError, MismatchError
from embedkit.finetune.data import make_loader, prepare_data, resized, train_transform
from embedkit.finetune.layers import (
    format_ranges,
    layer_table,
    parse_layers,
    weight_layers,
)
from embedkit.io.loader import default_workers
from embedkit.models.checkpoint import CHECKPOINT_FORMAT, load_torch_file, read_checkpoint
from embedkit.models.preprocessing import Preprocessing
from embedkit.models.registry import get_spec
from embedkit.models.weights import load_model, resolve_preprocessing

STRATEGIES = ("adaptive", "head", "head-then-top", "full")
SCHEDULES = ("none", "step", "cosine", "plateau")
MONITORS = ("val_acc", "val_loss")
# The paper's re-initialised layers: conv1_1 ... conv4_2, fc6, fc7 and the new head.
PAPER_REINIT = {"vgg19": "1-10,17-19", "vgg16": "1-9,14-16"}
# Options a resumed run may change; everything else must match the interrupted run.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "patience", "eval_test")


@dataclass
class FinetuneConfig:
    """Every option of a fine-tuning run (saved in ``config.json`` and ``last.pt``)."""

    backbone: str = "efficientnet_lite0"  # vgg19 gives the paper's configuration
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

    def validate(self) -> "FinetuneConfig":
        for name, value, valid in (("strategy", self.strategy, STRATEGIES), ("schedule", self.schedule, SCHEDULES),
                                   ("monitor", self.monitor, MONITORS)):
            if value not in valid:
                raise ConfigError(f"{name} {value!r} is not valid; use one of {', '.join(valid)}")
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise ConfigError(f"epochs={self.epochs}, batch_size={self.batch_size}: both must be >= 1")
        for name in ("lr_high", "lr_low"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} is not valid; learning rates must be > 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing={self.label_smoothing} is not valid; use a number in [0, 1)")
        self.split = tuple(float(f) for f in self.split)
        return self


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

    def summary(self) -> str:
        train_s = sum(float(r["seconds"]) for r in self.history[-self.epochs_run:]) if self.epochs_run else 0.0
        ips = self.images / train_s if train_s > 0 else 0.0
        last = self.history[-1] if self.history else {}
        s = (f"fine-tuned {self.epochs_run} epochs (to epoch {last.get('epoch', 0)}) in {self.seconds:.1f} s, "
             f"training at {ips:.1f} images/s{' (stopped early)' if self.stopped_early else ''}; best {self.monitor} "
             f"{self.best_metric:.4f} at epoch {self.best_epoch}; {len(self.skipped)} images skipped")
        if self.test:
            s += f"; test acc {self.test['test_acc']:.4f} ({self.test['test_images']} images)"
        return s + f"\nbest backbone: {self.best_path} (use --weights {self.best_path}); history, curves, split in {self.out}"


def plan_for(cfg: FinetuneConfig, layers, phase: int = 0, fresh_head: bool = True) -> dict:
    """``{layer index: (action, lr)}`` for a phase; action is reinit / train (absent = frozen)."""
    n = len(layers)
    head_action = "reinit" if fresh_head else "train"
    if cfg.strategy == "adaptive":
        spec = cfg.reinit if cfg.reinit is not None else PAPER_REINIT.get(cfg.backbone, "")
        high = set(parse_layers(spec, layers)) | ({n} if fresh_head else set())
        return {l.index: ("reinit", cfg.lr_high) if l.index in high else ("train", cfg.lr_low) for l in layers}
    if cfg.strategy == "full":
        lr = cfg.lr or 1e-3
        return {l.index: (head_action if l.index == n else "train", lr) for l in layers}
    if cfg.strategy == "head-then-top" and phase == 1:
        top = str(cfg.top).strip()
        idx = list(range(max(1, n - int(top)), n)) if top.isdigit() else parse_layers(top, layers)
        return {i: ("train", cfg.lr_low) for i in set(idx) | {n}}
    return {n: (head_action, cfg.lr or cfg.lr_high)}


def phase_of(cfg: FinetuneConfig, epoch: int) -> int:
    """Phase (0 or 1) of a 0-based epoch; only head-then-top has a second phase."""
    if cfg.strategy != "head-then-top":
        return 0
    head_epochs = cfg.head_epochs if cfg.head_epochs is not None else max(1, cfg.epochs // 2)
    return int(epoch >= head_epochs)


def build_model(cfg: FinetuneConfig, class_names: list):
    """The K-class network with pretrained weights where shapes fit and the chosen layers re-initialised.

    Returns ``(model, layers, plan, preprocessing, fresh_head)``; deterministic for a given ``cfg.seed``.
    """
    spec = get_spec(cfg.backbone)
    k = len(class_names)
    base, info = load_model(spec, cfg.weights, seed=cfg.seed)
    pre = resolve_preprocessing(spec, info)  # the checkpoint's when it carries one, else the spec's
    same = False
    if info.num_classes is not None:
        same = info.num_classes == k and (not info.class_names or list(info.class_names) == list(class_names))
        if not same and not cfg.new_head:
            raise MismatchError(
                f"weights {cfg.weights!r} were fine-tuned for {info.num_classes} classes "
                f"{list(info.class_names)[:8] or ''}, but these images have {k} classes {class_names[:8]}; "
                "fix: pass --new-head (new_head=True) to train a new classifier head on top of them, "
                "or fine-tune on the classes they were trained for")
    torch.manual_seed(cfg.seed)
    model = spec.create_model(num_classes=k)
    layers = weight_layers(model)
    head = layers[-1]
    if getattr(head.module, "out_features", getattr(head.module, "out_channels", None)) != k:
        raise ConfigError(f"the last weight layer of {spec.name} ({head.name}) does not output {k} classes; "
                          "this backbone cannot be fine-tuned as a classifier")
    if same:
        model.load_state_dict(base.state_dict())
    else:  # pretrained tensors wherever the shapes fit; never the old head
        target = model.state_dict()
        keep = {key: v for key, v in base.state_dict().items()
                if key in target and v.shape == target[key].shape and not key.startswith(head.name + ".")}
        model.load_state_dict(keep, strict=False)
    plan = plan_for(cfg, layers, phase_of(cfg, 0), fresh_head=not same)
    torch.manual_seed(cfg.seed)
    for l in layers:
        if plan.get(l.index, ("frozen",))[0] == "reinit":
            l.reset()
    return model, layers, plan, resized(pre, cfg.input_size), not same


def make_optimizer(cfg, model, layers, plan, phase_epochs: int):
    """SGD with one parameter group per learning rate, and the schedule; frozen layers get no gradient."""
    for p in model.parameters():
        p.requires_grad_(False)
    by_lr: dict[float, list] = {}
    for l in layers:
        if l.index in plan:
            for p in l.params:
                p.requires_grad_(True)
            by_lr.setdefault(plan[l.index][1], []).extend(l.params)
    groups = [{"params": ps, "lr": lr, "name": f"lr={lr:g}"} for lr, ps in sorted(by_lr.items(), reverse=True)]
    opt = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    S = torch.optim.lr_scheduler
    if cfg.schedule == "step":
        sched = S.StepLR(opt, step_size=cfg.step_size or max(1, phase_epochs // 3), gamma=cfg.gamma)
    elif cfg.schedule == "cosine":
        sched = S.CosineAnnealingLR(opt, T_max=max(1, phase_epochs))
    elif cfg.schedule == "plateau":
        sched = S.ReduceLROnPlateau(opt, mode="max" if cfg.monitor == "val_acc" else "min", factor=cfg.gamma,
                                    patience=2)
    else:
        sched = None
    return opt, sched


def replan_schedule(cfg: FinetuneConfig, opt, sched, phase_epochs: int) -> bool:
    """Re-plan a resumed run's cosine/step schedule for a new number of epochs; True when it changed.

    The schedule becomes the one the run would have had with the new ``--epochs`` from the start, at the
    epoch reached: the same position in the phase, the curve stretched (or shrunk) to the new length.
    A finished cosine run (rate 0) resumed with more epochs so continues at the rate that curve has there,
    decaying to 0 at the new last epoch. Plateau keeps its state (it does not depend on the length).
    """
    S = torch.optim.lr_scheduler
    done = int(sched.last_epoch)  # epochs already stepped in this phase
    if isinstance(sched, S.CosineAnnealingLR):
        sched.T_max = max(1, phase_epochs)
        eta = sched.eta_min
        lrs = [eta + (base - eta) * (1 + math.cos(math.pi * min(done, sched.T_max) / sched.T_max)) / 2
               for base in sched.base_lrs]
    elif isinstance(sched, S.StepLR):
        sched.step_size = cfg.step_size or max(1, phase_epochs // 3)
        lrs = [base * sched.gamma ** (done // sched.step_size) for base in sched.base_lrs]
    else:
        return False
    for group, lr in zip(opt.param_groups, lrs):
        group["lr"] = lr
    sched._last_lr = list(lrs)
    return True


def _freeze_norms(model: nn.Module, all_stats: bool = False) -> None:
    """Frozen BatchNorms (all of them with ``all_stats``) stay in eval mode: their running statistics do not move."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
                all_stats or not any(p.requires_grad for p in m.parameters())):
            m.eval()


def _rng_state(device: torch.device) -> dict:
    st = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4]))}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def export_backbone(model: nn.Module, path, cfg: FinetuneConfig, class_names, pre: Preprocessing, extra=None) -> Path:
    """Write ``model`` as an ``embedkit-backbone/1`` checkpoint (plain types only: loads with weights_only)."""
    spec = get_spec(cfg.backbone)
    ckpt = {"format": CHECKPOINT_FORMAT, "backbone": spec.name, "num_classes": len(class_names),
            "class_names": list(class_names), "state_dict": _cpu_state(model), "preprocessing": pre.to_dict(),
            "layers": dict(spec.layers), "default_layer": spec.default_layer, "finetune": dict(extra or {})}
    torch_save_atomic(ckpt, Path(path))
    return Path(path)


def _run_epoch(model, loader, targets, device, amp_dtype, criterion, opt=None, scaler=None, bar=None):
    """One pass (training when ``opt`` is given); returns ``(mean loss, accuracy, images, seconds)``."""
    t0 = time.perf_counter()
    loss_sum, correct, n = 0.0, 0, 0
    train = opt is not None
    with torch.set_grad_enabled(train):
        for idx, x, _infos, _bad in loader:
            if x is None:  # a whole batch of images that stopped being readable
                continue
            y = torch.as_tensor(targets[idx], device=device)
            x = x.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
                logits = model(x)
                loss = criterion(logits.float(), y)
            if train:
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            n += len(idx)
            if bar is not None:
                bar.update(len(idx))
                bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{correct / n:.3f}",
                                img_s=f"{n / (time.perf_counter() - t0):.1f}")
    return loss_sum / max(n, 1), correct / max(n, 1), n, time.perf_counter() - t0


def _write_history(history: list, out: Path, best_epoch: int | None = None) -> None:
    from embedkit.render.plots import learning_curves_png

    keys = list(history[0]) if history else ["epoch"]
    write_csv_atomic(out / "history.csv", keys, [[row.get(k, "") for k in keys] for row in history])
    if history:
        learning_curves_png(history, out / "curves.png", title="Fine-tuning", best_epoch=best_epoch or None)


def _resume_config(saved: dict, cfg: FinetuneConfig) -> FinetuneConfig:
    old = FinetuneConfig(**{**saved, "split": tuple(saved["split"])})
    diffs = [f"{f.name}: {getattr(old, f.name)!r} -> {getattr(cfg, f.name)!r}" for f in fields(cfg)
             if f.name not in RESUMABLE_CHANGES and getattr(old, f.name) != getattr(cfg, f.name)
             and not (f.name == "head_epochs" and cfg.head_epochs is None)]  # None: keep the run's boundary
    if diffs:
        raise ConfigError(f"resume must use the options of the interrupted run; changed: {'; '.join(diffs)}. "
                          "Run again with the same options, or start over with --overwrite")
    if old.strategy == "head-then-top" and old.head_epochs is None and cfg.epochs != old.epochs:
        old.head_epochs = max(1, old.epochs // 2)  # the phase boundary of the interrupted run stays where it was
    for name in RESUMABLE_CHANGES:
        setattr(old, name, getattr(cfg, name))
    return old


def finetune(source, out, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
             log=print, on_epoch_end=None, **options) -> FinetuneResult:
    """Fine-tune a backbone on the labelled images of ``source``; writes the run folder ``out``.

    ``options`` are the fields of :class:`FinetuneConfig` (backbone, weights, strategy, epochs, reinit,
    lr_high, lr_low, ...). ``log`` receives the layer table and notes; ``on_epoch_end(row)`` is called
    after each epoch's checkpoint is written. Returns a :class:`FinetuneResult` whose ``best_path``
    loads with ``embedkit.embed(..., backbone=cfg.backbone, weights=best_path)``.
    """
    from tqdm.auto import tqdm

    cfg = FinetuneConfig(**options).validate()
    out = Path(out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    state = None
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"nothing to resume in {str(out)!r} (no last.pt); run without --resume to start")
        state = load_torch_file(last_path, "training state")  # weights_only: a crafted last.pt runs no code
        if not isinstance(state, dict) or not {"config", "model", "epoch"} <= set(state):
            raise ConfigError(f"{str(last_path)!r} is not the training state of an `embedkit finetune` run; "
                              "start over with --overwrite")
        cfg = _resume_config(state["config"], cfg)
    elif last_path.exists() and not overwrite:
        raise ConfigError(f"{str(out)!r} already holds a fine-tuning run; continue it with --resume "
                          "or start over with --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.workers is None:
        cfg.workers = default_workers()
    data = prepare_data(source, cfg.split, cfg.seed, cfg.split_file, cfg.workers, progress, cfg.split_by,
                        tuple(cfg.test_groups), tuple(cfg.val_groups))
    if state is not None and state["split_paths"] != [data.items[i].path for i in data.part("train")]:
        raise MismatchError(f"the images of {str(source)!r} are not those of the interrupted run (the training "
                            "split differs); resume with the same images or start over with --overwrite")
    write_json_atomic(out / "config.json", asdict(cfg))
    data.write(out)

    model, layers, plan, pre, fresh = build_model(cfg, data.class_names)
    model.to(device)
    amp_dtype = autocast_dtype(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    head_epochs = cfg.epochs if cfg.strategy != "head-then-top" else \
        (cfg.head_epochs if cfg.head_epochs is not None else max(1, cfg.epochs // 2))

    def phase_setup(phase):
        p = plan_for(cfg, layers, phase, fresh_head=fresh)
        n_ep = head_epochs if phase == 0 else cfg.epochs - head_epochs
        log(f"{cfg.strategy} fine-tuning of {cfg.backbone}" + (f", phase {phase + 1}" if cfg.strategy == "head-then-top" else "")
            + f": {len(data.class_names)} classes, {len(data.part('train'))} train / {len(data.part('val'))} val images")
        log(layer_table(layers, p))
        log("re-initialised: " + format_ranges(i for i, (a, _) in p.items() if a == "reinit")
            + "; trained: " + format_ranges(p) + "; frozen: " + format_ranges(set(range(1, len(layers) + 1)) - set(p)))
        return make_optimizer(cfg, model, layers, p, n_ep)

    start, history, best, best_epoch, since_best = 0, [], None, 0, 0
    if state is not None:
        start = int(state["epoch"])
        model.load_state_dict(state["model"])
        history, best, best_epoch, since_best = state["history"], state["best"], state["best_epoch"], state["since_best"]
    opt, sched = phase_setup(phase_of(cfg, start))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], device)
        saved_epochs = int(state["config"]["epochs"])
        if saved_epochs != cfg.epochs and sched is not None:
            phase = phase_of(cfg, start)
            n_ep = head_epochs if phase == 0 else cfg.epochs - head_epochs
            if replan_schedule(cfg, opt, sched, n_ep):
                log(f"--epochs {cfg.epochs} (was {saved_epochs}): the {cfg.schedule} schedule is re-planned for "
                    f"{n_ep} epochs{' of this phase' if cfg.strategy == 'head-then-top' else ''}; learning rate now "
                    + "/".join(f"{g['lr']:.3g}" for g in opt.param_groups))

    stopped = bool(state is not None and state.get("stopped"))
    if stopped:
        log(f"this run stopped early at epoch {start}; nothing left to train (start over with --overwrite)")
    t_start, images, pin = time.perf_counter(), 0, device.type == "cuda"
    val_loader = make_loader(data, "val", pre.transform(), cfg.batch_size, cfg.workers, pin_memory=pin)
    tf_train = train_transform(pre, cfg.augment, cfg.augment_strength)
    for epoch in range(start, start if stopped else cfg.epochs):
        model.train()
        _freeze_norms(model, cfg.freeze_bn_stats)
        loader = make_loader(data, "train", tf_train, cfg.batch_size, cfg.workers, train=True, balanced=cfg.balanced,
                             seed=cfg.seed * 100_003 + epoch, pin_memory=pin)
        with tqdm(total=len(data.part("train")), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="img",
                  disable=not progress, leave=False) as bar:
            tr_loss, tr_acc, n_img, secs = _run_epoch(model, loader, data.targets, device, amp_dtype, criterion,
                                                      opt, scaler, bar)
        model.eval()
        with tqdm(total=len(data.part("val")), desc=f"validation {epoch + 1}/{cfg.epochs}", unit="img",
                  disable=not progress, leave=False) as bar:
            va_loss, va_acc, _, _ = _run_epoch(model, val_loader, data.targets, device, amp_dtype, criterion,
                                               bar=bar)
        images += n_img
        metric = va_acc if cfg.monitor == "val_acc" else va_loss
        lrs = "/".join(f"{g['lr']:.3g}" for g in opt.param_groups)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(metric)
        elif sched is not None:
            sched.step()
        row = {"epoch": epoch + 1, "phase": phase_of(cfg, epoch) + 1, "lr": lrs, "train_loss": round(tr_loss, 6),
               "train_acc": round(tr_acc, 6), "val_loss": round(va_loss, 6), "val_acc": round(va_acc, 6),
               "train_images": n_img, "seconds": round(secs, 3), "images_per_s": round(n_img / max(secs, 1e-9), 2)}
        history.append(row)
        improved = best is None or (metric > best if cfg.monitor == "val_acc" else metric < best)
        if improved:
            best, best_epoch, since_best = float(metric), epoch + 1, 0
            export_backbone(model, best_path, cfg, data.class_names, pre,
                            {"strategy": cfg.strategy, "epoch": epoch + 1, "val_acc": va_acc, "val_loss": va_loss})
        else:
            since_best += 1
        stopped = cfg.patience is not None and since_best >= cfg.patience and epoch + 1 < cfg.epochs
        if epoch + 1 < cfg.epochs and phase_of(cfg, epoch + 1) != phase_of(cfg, epoch):
            opt, sched = phase_setup(phase_of(cfg, epoch + 1))  # the checkpoint holds the next phase's optimizer
        torch_save_atomic({"model": _cpu_state(model), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict() if sched is not None else {}, "scaler": scaler.state_dict(),
                      "epoch": epoch + 1, "rng": _rng_state(device), "history": history, "best": best,
                      "best_epoch": best_epoch, "since_best": since_best, "stopped": stopped, "config": asdict(cfg),
                      "class_names": data.class_names,
                      "split_paths": [data.items[i].path for i in data.part("train")]}, last_path)
        _write_history(history, out, best_epoch)
        log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {tr_loss:.4f} acc {tr_acc:.3f} | val loss {va_loss:.4f} "
            f"acc {va_acc:.3f} | {row['images_per_s']:.1f} img/s{' | best' if improved else ''}")
        if on_epoch_end is not None:
            on_epoch_end(row)
        if stopped:
            log(f"early stopping: {cfg.monitor} did not improve for {cfg.patience} epochs")
            break

    test = None
    if cfg.eval_test and len(data.part("test")):
        model.load_state_dict(read_checkpoint(best_path)["state_dict"])
        model.eval()
        with tqdm(total=len(data.part("test")), desc=f"test (best epoch {best_epoch})", unit="img",
                  disable=not progress, leave=False) as bar:
            te_loss, te_acc, n_te, _ = _run_epoch(model, make_loader(data, "test", pre.transform(), cfg.batch_size,
                                                                     cfg.workers), data.targets, device, amp_dtype,
                                                  criterion, bar=bar)
        test = {"test_loss": te_loss, "test_acc": te_acc, "test_images": n_te, "best_epoch": best_epoch}
        write_json_atomic(out / "test.json", test)
    return FinetuneResult(out, best_path, last_path, history, best_epoch, float(best if best is not None else 0.0),
                          cfg.monitor, time.perf_counter() - t_start, images, stopped, test, data.skipped,
                          len(history) - start)
