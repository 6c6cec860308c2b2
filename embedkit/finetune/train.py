"""Fine-tuning a backbone on labelled images: the paper's adaptive layer-based optimisation and classic recipes.

Strategies (layers are numbered as in :mod:`embedkit.layers`; the new classifier head is the last one):

- ``adaptive`` (Lagunas & Garces): re-initialise the ``reinit`` layers and the head and train them at
  ``lr_high``; every other layer keeps its pretrained weights and trains at ``lr_low``. For VGG19 the
  default is the paper's: layers 1-10 and 17-19 re-initialised at 1e-2, 11-16 kept at 1e-4.
- ``head``: freeze the base, train a new head at ``lr`` (default ``lr_high``).
- ``head-then-top``: ``head`` for ``head_epochs``, then unfreeze the ``top`` layers (``"all"``: every one)
  and train them with the head at ``lr_low``.
- ``full``: everything at one rate ``lr`` (default 1e-3).

Options start from a named recipe (:mod:`embedkit.finetune.recipes`): ``small``, the default, measured on
leave-designs-out folds, or ``paper``; any option given overrides the recipe's.

SGD with momentum and weight decay, cross-entropy (optional label smoothing). A run folder holds
``last.pt`` (full training state, rewritten atomically every epoch: ``resume=True`` continues a killed run
exactly), ``best.pt`` (the best epoch exported as a backbone that ``embedkit embed --weights`` loads),
``history.csv``, ``curves.png``, ``split.json``, ``skipped.csv`` and ``config.json``.

Resuming with another ``epochs`` (to train a finished run longer, or to stop a killed one sooner) re-plans
the cosine/step schedule: it becomes the schedule the run would have had with the new number of epochs from
the start, at the epoch reached (see :func:`replan_schedule`), so the added epochs never train at rate 0.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from embedkit.atomic import write_json_atomic
from embedkit.device import autocast_dtype, resolve_device
from embedkit.errors import ConfigError, MismatchError
from embedkit.finetune.config import FinetuneConfig, FinetuneResult
from embedkit.finetune.data import make_loader, prepare_data, resized, train_transform
from embedkit.finetune.export import (
    backbone_change,
    backbone_weights,
    export_average,
    export_backbone,
    no_backbone_epoch,
    unchanged_note,
    write_history,
)
from embedkit.finetune.layers import format_ranges, layer_table, weight_layers
from embedkit.finetune.optim import _freeze_norms, make_optimizer, phase_of, plan_for, replan_schedule
from embedkit.finetune.state import Progress, cpu_state, open_run, progress_of, save_state, set_rng_state
from embedkit.io.loader import default_workers
from embedkit.models.checkpoint import read_checkpoint
from embedkit.models.registry import get_spec
from embedkit.models.weights import load_model, resolve_preprocessing


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


def run_epoch(model, loader, targets, device, amp_dtype, criterion, opt=None, scaler=None, bar=None):
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


class _Trainer:
    """One run's network, data and optimizer, trained epoch by epoch from a :class:`Progress`."""

    def __init__(self, cfg: FinetuneConfig, data, out: Path, device, progress: bool, log):
        self.cfg, self.data, self.out, self.device, self.progress, self.log = cfg, data, out, device, progress, log
        self.model, self.layers, _plan, self.pre, self.fresh = build_model(cfg, data.class_names)
        if cfg.strategy == "head-then-top":
            plan_for(cfg, self.layers, 1, fresh_head=self.fresh)  # a bad --top is refused now, not when phase 2 starts
        self.start_weights = backbone_weights(self.model, self.layers[-1].name)  # to tell whether the codes moved
        self.model.to(device)
        self.amp_dtype = autocast_dtype(device)
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.head_epochs = cfg.epochs if cfg.strategy != "head-then-top" else \
            (cfg.head_epochs if cfg.head_epochs is not None else max(1, cfg.epochs // 2))
        # with averaging, each best epoch is exported raw; best.pt becomes the validated mix at the end
        self.best_path = out / "best.pt"
        self.tuned_path = out / "best-finetuned.pt" if cfg.average == "wise" else self.best_path
        self.pin = device.type == "cuda"
        self.plain_train = make_loader(data, "train", self.pre.transform(), cfg.batch_size, cfg.workers)
        self.val_loader = make_loader(data, "val", self.pre.transform(), cfg.batch_size, cfg.workers, pin_memory=self.pin)
        self.opt = self.sched = None

    def phase_epochs(self, phase: int) -> int:
        return self.head_epochs if phase == 0 else self.cfg.epochs - self.head_epochs

    def setup_phase(self, phase: int) -> None:
        """Log the phase's layer table and make its optimizer and schedule."""
        cfg, data, layers = self.cfg, self.data, self.layers
        p = plan_for(cfg, layers, phase, fresh_head=self.fresh)
        self.log(f"{cfg.strategy} fine-tuning of {cfg.backbone}" + (f", phase {phase + 1}" if cfg.strategy == "head-then-top" else "")
                 + f": {len(data.class_names)} classes, {len(data.part('train'))} train / {len(data.part('val'))} val images")
        self.log(layer_table(layers, p))
        self.log("re-initialised: " + format_ranges(i for i, (a, _) in p.items() if a == "reinit")
                 + "; trained: " + format_ranges(p) + "; frozen: " + format_ranges(set(range(1, len(layers) + 1)) - set(p)))
        self.opt, self.sched = make_optimizer(cfg, self.model, layers, p, self.phase_epochs(phase))

    def restore(self, state: dict) -> Progress:
        """Continue an interrupted run exactly: network, optimizer, schedule (re-planned for new epochs), RNG."""
        cfg, prog = self.cfg, progress_of(state)
        self.model.load_state_dict(state["model"])
        self.setup_phase(phase_of(cfg, prog.epoch))
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(state["scheduler"])
        if state["scaler"]:  # {} from a disabled scaler (CPU, bf16): an fp16 resume starts at the default scale
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.device)
        saved_epochs = int(state["config"]["epochs"])
        if saved_epochs != cfg.epochs and self.sched is not None:
            n_ep = self.phase_epochs(phase_of(cfg, prog.epoch))
            if replan_schedule(cfg, self.opt, self.sched, n_ep):
                self.log(f"--epochs {cfg.epochs} (was {saved_epochs}): the {cfg.schedule} schedule is re-planned for "
                         f"{n_ep} epochs{' of this phase' if cfg.strategy == 'head-then-top' else ''}; learning rate now "
                         + "/".join(f"{g['lr']:.3g}" for g in self.opt.param_groups))
        if prog.stopped:
            self.log(f"this run stopped early at epoch {prog.epoch}; nothing left to train (start over with --overwrite)")
        return prog

    def begin(self) -> Progress:
        """A new run: the first phase's optimizer, and the head fitted in closed form where asked."""
        cfg = self.cfg
        self.setup_phase(0)
        warning = no_backbone_epoch(cfg, self.head_epochs)
        if warning:
            self.log(warning)
        if cfg.head_init == "logistic" and self.fresh:
            from embedkit.finetune.probe import fit_head

            acc = fit_head(self.model, self.layers[-1].module, self.plain_train, self.data.targets,
                           len(self.data.class_names), self.device, cfg.seed)
            self.log(f"head fitted by logistic regression on the frozen codes of the {len(self.data.part('train'))} "
                     f"training images (training accuracy {acc:.3f})")
        return Progress()

    def code_accuracy(self, model=None) -> float:
        """Validation accuracy of the codes: the training split's codes (no augmentation) classify the validation split."""
        from embedkit.finetune.average import val_code_accuracy

        return val_code_accuracy(self.model if model is None else model, self.layers[-1].module, self.plain_train,
                                 self.val_loader, self.data.targets, self.device)

    def pass_over(self, part_loader, desc: str, total: int, train: bool = False):
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit="img", disable=not self.progress, leave=False) as bar:
            return run_epoch(self.model, part_loader, self.data.targets, self.device, self.amp_dtype, self.criterion,
                             self.opt if train else None, self.scaler if train else None, bar)

    def epoch(self, epoch: int, tf_train) -> dict:
        """Train and validate one epoch; returns its history row."""
        cfg, data = self.cfg, self.data
        self.model.train()
        _freeze_norms(self.model, cfg.freeze_bn_stats)
        loader = make_loader(data, "train", tf_train, cfg.batch_size, cfg.workers, train=True, balanced=cfg.balanced,
                             seed=cfg.seed * 100_003 + epoch, pin_memory=self.pin)
        tr_loss, tr_acc, n_img, secs = self.pass_over(loader, f"epoch {epoch + 1}/{cfg.epochs}",
                                                      len(data.part("train")), train=True)
        self.model.eval()
        va_loss, va_acc, _, _ = self.pass_over(self.val_loader, f"validation {epoch + 1}/{cfg.epochs}",
                                               len(data.part("val")))
        lrs = "/".join(f"{g['lr']:.3g}" for g in self.opt.param_groups)
        row = {"epoch": epoch + 1, "phase": phase_of(cfg, epoch) + 1, "lr": lrs, "train_loss": round(tr_loss, 6),
               "train_acc": round(tr_acc, 6), "val_loss": round(va_loss, 6), "val_acc": round(va_acc, 6),
               "train_images": n_img, "seconds": round(secs, 3), "images_per_s": round(n_img / max(secs, 1e-9), 2)}
        if cfg.monitor == "val_codes":  # what the network is kept for: its codes, not its softmax
            row["val_codes"] = round(self.code_accuracy(), 6)
        return row

    def keep(self, epoch: int, row: dict, prog: Progress) -> bool:
        """Step the schedule, export the epoch if it is the best so far, decide early stopping; True if best."""
        cfg = self.cfg
        metric = row[cfg.monitor]
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(metric)
        elif self.sched is not None:
            self.sched.step()
        improved = prog.best is None or (metric > prog.best if cfg.maximize else metric < prog.best)
        if improved:
            prog.best, prog.best_epoch, prog.since_best = float(metric), epoch + 1, 0
            export_backbone(self.model, self.tuned_path, cfg, self.data.class_names, self.pre,
                            {"strategy": cfg.strategy, "epoch": epoch + 1, "val_acc": row["val_acc"],
                             "val_loss": row["val_loss"], **({"val_codes": row["val_codes"]} if "val_codes" in row else {})})
        else:
            prog.since_best += 1
        prog.stopped = cfg.patience is not None and prog.since_best >= cfg.patience and epoch + 1 < cfg.epochs
        return improved

    def train(self, prog: Progress, on_epoch_end=None) -> int:
        """Every epoch left; ``last.pt``, the history and the curves rewritten after each. Returns images trained on."""
        cfg, data, images = self.cfg, self.data, 0
        tf_train = train_transform(self.pre, cfg.augment, cfg.augment_strength, cfg.augment_style)
        train_paths = [data.items[i].path for i in data.part("train")]
        for epoch in range(prog.epoch, prog.epoch if prog.stopped else cfg.epochs):
            row = self.epoch(epoch, tf_train)
            images += row["train_images"]
            prog.history.append(row)
            improved = self.keep(epoch, row, prog)
            if epoch + 1 < cfg.epochs and phase_of(cfg, epoch + 1) != phase_of(cfg, epoch):
                if cfg.average == "wise":
                    prog.probe = cpu_state(self.model)  # the linear probe: pretrained features, a head fitted on them
                self.setup_phase(phase_of(cfg, epoch + 1))  # the checkpoint holds the next phase's optimizer
            prog.epoch = epoch + 1
            save_state(self.out / "last.pt", self.model, self.opt, self.sched, self.scaler, prog, cfg, self.device,
                       data.class_names, train_paths)
            write_history(prog.history, self.out, prog.best_epoch)
            codes = f" codes {row['val_codes']:.3f}" if "val_codes" in row else ""
            self.log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
                     f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}{codes} | {row['images_per_s']:.1f} img/s"
                     + (" | best" if improved else ""))
            if on_epoch_end is not None:
                on_epoch_end(row)
            if prog.stopped:
                self.log(f"early stopping: {cfg.monitor} did not improve for {cfg.patience} epochs")
                break
        return images

    def export(self, prog: Progress) -> tuple[float, str]:
        """best.pt (the mix where asked); returns ``(backbone change, note)``, the note when the codes did not move."""
        mix = None
        if self.cfg.average == "wise":
            mix = export_average(self.model, prog.probe, self.tuned_path, self.best_path, self.cfg,
                                 self.data.class_names, self.pre, self.code_accuracy, self.log, self.progress)
        change, note = backbone_change(self.start_weights, read_checkpoint(self.best_path)["state_dict"]), ""
        if change == 0.0:
            note = unchanged_note(self.cfg, prog.best_epoch, mix["alpha"] if mix else None)
            self.log(note)
        if mix is not None:  # written once, with what the chosen mix did to the codes
            write_json_atomic(self.out / "average.json", {**mix, **({"codes_equal_start": True, "note": note}
                                                                    if note else {})})
        return change, note

    def test(self, best_epoch: int) -> dict:
        self.model.load_state_dict(read_checkpoint(self.best_path)["state_dict"])
        self.model.eval()
        loader = make_loader(self.data, "test", self.pre.transform(), self.cfg.batch_size, self.cfg.workers)
        te_loss, te_acc, n_te, _ = self.pass_over(loader, f"test (best epoch {best_epoch})", len(self.data.part("test")))
        test = {"test_loss": te_loss, "test_acc": te_acc, "test_images": n_te, "best_epoch": best_epoch}
        write_json_atomic(self.out / "test.json", test)
        return test


def finetune(source, out, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
             log=None, on_epoch_end=None, **options) -> FinetuneResult:
    """Fine-tune a backbone on the labelled images of ``source``; writes the run folder ``out``.

    ``options`` are the fields of :class:`FinetuneConfig` (recipe, backbone, weights, strategy, epochs, reinit,
    lr_high, lr_low, ...). ``log`` receives the layer table and notes; ``on_epoch_end(row)`` is called
    after each epoch's checkpoint is written. Returns a :class:`FinetuneResult` whose ``best_path``
    loads with ``embedkit.embed(..., backbone=cfg.backbone, weights=best_path)``. One run writes a run
    folder at a time: a second one is refused (a lock file names the holder's pid; a stale lock left by a
    killed run is taken over).
    """
    from embedkit.store.lock import FolderLock

    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"output {str(out)!r} is a file, not a folder; give a folder path for the run")
    with FolderLock(out, "finetune"):
        return _finetune(source, Path(out), resume, overwrite, progress,
                         log or logging.getLogger(__name__).info,  # the layer table, epochs, notes
                         on_epoch_end, options)


def _finetune(source, out: Path, resume, overwrite, progress, log, on_epoch_end, options) -> FinetuneResult:
    if resume and overwrite:
        raise ConfigError("--overwrite starts the run over and --resume continues it (overwrite=True with "
                          "resume=True); give only one of them")
    asked = FinetuneConfig.from_recipe(**options)
    for note in asked.recipe_notes:
        log(f"note: {note}")
    cfg, state = open_run(out, asked.validate(), resume, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.workers is None:
        cfg.workers = default_workers()
    data = prepare_data(source, cfg.split, cfg.seed, cfg.split_file, cfg.workers, progress, cfg.split_by,
                        tuple(cfg.test_groups), tuple(cfg.val_groups))
    if state is not None and state["split_paths"] != [data.items[i].path for i in data.part("train")]:
        raise MismatchError(f"the images of {str(source)!r} are not those of the interrupted run (the training "
                            "split differs); resume with the same images or start over with --overwrite (overwrite=True)")
    write_json_atomic(out / "config.json", asdict(cfg))
    data.write(out)
    trainer = _Trainer(cfg, data, out, device, progress, log)
    prog = trainer.restore(state) if state is not None else trainer.begin()
    start, t_start = prog.epoch, time.perf_counter()
    images = trainer.train(prog, on_epoch_end)
    change, note = trainer.export(prog)
    test = trainer.test(prog.best_epoch) if cfg.eval_test and len(data.part("test")) else None
    return FinetuneResult(out, trainer.best_path, out / "last.pt", prog.history, prog.best_epoch,
                          float(prog.best if prog.best is not None else 0.0), cfg.monitor,
                          time.perf_counter() - t_start, images, prog.stopped, test, data.skipped,
                          len(prog.history) - start, change, note)
