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
import random
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedkit.atomic import torch_save_atomic, write_csv_atomic, write_json_atomic
from embedkit.device import autocast_dtype, resolve_device
from embedkit.errors import ConfigError, MismatchError
from embedkit.finetune.config import (  # noqa: F401 (re-exported: the public names of fine-tuning)
    MONITORS,
    PAPER_REINIT,
    RESUMABLE_CHANGES,
    SCHEDULES,
    STRATEGIES,
    FinetuneConfig,
    FinetuneResult,
    _resume_config,
)
from embedkit.finetune.data import make_loader, prepare_data, resized, train_transform
from embedkit.finetune.layers import (
    format_ranges,
    layer_table,
    weight_layers,
)
from embedkit.finetune.optim import (  # noqa: F401 (re-exported)
    _freeze_norms,
    make_optimizer,
    phase_of,
    plan_for,
    replan_schedule,
)
from embedkit.io.loader import default_workers
from embedkit.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_torch_file,
    read_checkpoint,
)
from embedkit.models.preprocessing import Preprocessing
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


def _export_average(model, probe, tuned_path, best_path, cfg, data, pre, val_loader, device, out: Path,
                    head, log) -> None:
    """best.pt = the mix of linear probe and best fine-tuned epoch whose codes classify the validation split best."""
    import shutil

    from embedkit.finetune.average import choose_alpha, code_accuracy, codes_of

    tuned = read_checkpoint(tuned_path)
    if probe is None:  # the run never left phase 1: nothing to mix
        shutil.copyfile(tuned_path, best_path)
        log("averaging: the run ended in phase 1 (no fine-tuned network to mix); best.pt is the best epoch")
        return

    train_loader = make_loader(data, "train", pre.transform(), cfg.batch_size, cfg.workers)

    def val_code_acc(m):  # codes of the training split (no augmentation) classify the validation designs
        tc, tr = codes_of(m, head, train_loader, device)
        vc, vr = codes_of(m, head, val_loader, device)
        return code_accuracy(tc, data.targets[tr], vc, data.targets[vr])

    alpha, scores = choose_alpha(model, probe, tuned["state_dict"], val_code_acc, cfg.average_alphas)
    info = {"average": "wise", "alpha": alpha, "val_code_acc_by_alpha": {str(a): v for a, v in scores.items()},
            "epoch": tuned["finetune"].get("epoch")}
    export_backbone(model, best_path, cfg, data.class_names, pre, {**tuned["finetune"], **info})
    write_json_atomic(out / "average.json", info)
    log("averaging: validation accuracy of the codes (nearest class mean) by mix (0 = linear probe, 1 = fine-tuned) "
        + ", ".join(f"{a:g}: {v:.3f}" for a, v in scores.items()) + f"; best.pt holds mix {alpha:g}")


def _write_history(history: list, out: Path, best_epoch: int | None = None) -> None:
    from embedkit.render.plots import learning_curves_png

    keys = list(history[0]) if history else ["epoch"]
    write_csv_atomic(out / "history.csv", keys, [[row.get(k, "") for k in keys] for row in history])
    if history:
        learning_curves_png(history, out / "curves.png", title="Fine-tuning", best_epoch=best_epoch or None)


def finetune(source, out, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
             log=None, on_epoch_end=None, **options) -> FinetuneResult:
    """Fine-tune a backbone on the labelled images of ``source``; writes the run folder ``out``.

    See :func:`_finetune`. One run writes a run folder at a time: a second one is refused (a lock file
    names the holder's pid; a stale lock left by a killed run is taken over).
    """
    from embedkit.store.lock import FolderLock

    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"output {str(out)!r} is a file, not a folder; give a folder path for the run")
    with FolderLock(out, "finetune"):
        return _finetune(source, out, resume=resume, overwrite=overwrite, progress=progress, log=log,
                         on_epoch_end=on_epoch_end, **options)


def _finetune(source, out, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
              log=None, on_epoch_end=None, **options) -> FinetuneResult:
    """Fine-tune a backbone on the labelled images of ``source``; writes the run folder ``out``.

    ``options`` are the fields of :class:`FinetuneConfig` (backbone, weights, strategy, epochs, reinit,
    lr_high, lr_low, ...). ``log`` receives the layer table and notes; ``on_epoch_end(row)`` is called
    after each epoch's checkpoint is written. Returns a :class:`FinetuneResult` whose ``best_path``
    loads with ``embedkit.embed(..., backbone=cfg.backbone, weights=best_path)``.
    """
    from tqdm.auto import tqdm

    # the layer table, epochs and notes go to the module's logger unless a callable is given
    log = log or logging.getLogger(__name__).info
    cfg = FinetuneConfig.from_recipe(**options).validate()
    out = Path(out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    state = None
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"nothing to resume in {str(out)!r} (no last.pt); run without --resume (resume=False) to start")
        state = load_torch_file(last_path, "training state")  # weights_only: a crafted last.pt runs no code
        if not isinstance(state, dict) or not {"config", "model", "epoch"} <= set(state):
            raise ConfigError(f"{str(last_path)!r} is not the training state of an `embedkit finetune` run; "
                              "start over with --overwrite (overwrite=True)")
        cfg = _resume_config(state["config"], cfg)
    elif last_path.exists() and not overwrite:
        raise ConfigError(f"{str(out)!r} already holds a fine-tuning run; continue it with --resume (resume=True) "
                          "or start over with --overwrite (overwrite=True)")
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

    start, history, best, best_epoch, since_best, probe = 0, [], None, 0, 0, None
    # with averaging, each best epoch is exported raw; best.pt becomes the validated mix at the end
    tuned_path = out / "best-finetuned.pt" if cfg.average == "wise" else best_path
    if state is not None:
        start, probe = int(state["epoch"]), state.get("probe")
        model.load_state_dict(state["model"])
        history, best, best_epoch, since_best = state["history"], state["best"], state["best_epoch"], state["since_best"]
    opt, sched = phase_setup(phase_of(cfg, start))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        if state["scaler"]:  # {} from a disabled scaler (CPU, bf16): an fp16 resume starts at the default scale
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

    if state is None and cfg.head_init == "logistic" and fresh:
        from embedkit.finetune.probe import fit_head

        acc = fit_head(model, layers[-1].module, make_loader(data, "train", pre.transform(), cfg.batch_size, cfg.workers),
                       data.targets, len(data.class_names), device, cfg.seed)
        log(f"head fitted by logistic regression on the frozen codes of the {len(data.part('train'))} training images "
            f"(training accuracy {acc:.3f})")
    stopped = bool(state is not None and state.get("stopped"))
    if stopped:
        log(f"this run stopped early at epoch {start}; nothing left to train (start over with --overwrite (overwrite=True))")
    t_start, images, pin = time.perf_counter(), 0, device.type == "cuda"
    val_loader = make_loader(data, "val", pre.transform(), cfg.batch_size, cfg.workers, pin_memory=pin)
    tf_train = train_transform(pre, cfg.augment, cfg.augment_strength, cfg.augment_style)
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
            export_backbone(model, tuned_path, cfg, data.class_names, pre,
                            {"strategy": cfg.strategy, "epoch": epoch + 1, "val_acc": va_acc, "val_loss": va_loss})
        else:
            since_best += 1
        stopped = cfg.patience is not None and since_best >= cfg.patience and epoch + 1 < cfg.epochs
        if epoch + 1 < cfg.epochs and phase_of(cfg, epoch + 1) != phase_of(cfg, epoch):
            if cfg.average == "wise":
                probe = _cpu_state(model)  # the linear probe: pretrained features, a head fitted on them
            opt, sched = phase_setup(phase_of(cfg, epoch + 1))  # the checkpoint holds the next phase's optimizer
        torch_save_atomic({"model": _cpu_state(model), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict() if sched is not None else {}, "scaler": scaler.state_dict(),
                      "epoch": epoch + 1, "rng": _rng_state(device), "history": history, "best": best,
                      "best_epoch": best_epoch, "since_best": since_best, "stopped": stopped, "config": asdict(cfg),
                      "class_names": data.class_names, "probe": probe,
                      "split_paths": [data.items[i].path for i in data.part("train")]}, last_path)
        _write_history(history, out, best_epoch)
        log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {tr_loss:.4f} acc {tr_acc:.3f} | val loss {va_loss:.4f} "
            f"acc {va_acc:.3f} | {row['images_per_s']:.1f} img/s{' | best' if improved else ''}")
        if on_epoch_end is not None:
            on_epoch_end(row)
        if stopped:
            log(f"early stopping: {cfg.monitor} did not improve for {cfg.patience} epochs")
            break

    if cfg.average == "wise":
        _export_average(model, probe, tuned_path, best_path, cfg, data, pre, val_loader, device, out,
                        layers[-1].module, log)
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

