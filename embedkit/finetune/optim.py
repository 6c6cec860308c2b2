"""Which layers train at which rate: the per-layer plan, the optimizer and its schedule (re-planned on resume)."""

from __future__ import annotations

import math

import torch
from torch import nn

from embedkit.finetune.config import PAPER_REINIT, FinetuneConfig
from embedkit.finetune.layers import (
    parse_layers,
)


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
        if top == "all":
            idx = list(range(1, n))
        else:
            idx = list(range(max(1, n - int(top)), n)) if top.isdigit() else parse_layers(top, layers)
        return {i: ("train", cfg.lr_low) for i in set(idx) | {n}}
    return {n: (head_action, cfg.lr or cfg.lr_high)}


def phase_of(cfg: FinetuneConfig, epoch: int) -> int:
    """Phase (0 or 1) of a 0-based epoch; only head-then-top has a second phase."""
    if cfg.strategy != "head-then-top":
        return 0
    head_epochs = cfg.head_epochs if cfg.head_epochs is not None else max(1, cfg.epochs // 2)
    return int(epoch >= head_epochs)


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
        sched = S.ReduceLROnPlateau(opt, mode="max" if cfg.maximize else "min", factor=cfg.gamma,
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

