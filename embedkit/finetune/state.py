"""A run's training state in ``last.pt``: read for a resume (checked first), written atomically after every epoch.

``last.pt`` holds everything an interrupted run needs to continue exactly: the network, optimizer, schedule,
GradScaler and every random generator, the history and the best-so-far bookkeeping, the linear probe kept
for averaging, the config and the training paths (a resume on other images is refused).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedkit.atomic import torch_save_atomic
from embedkit.errors import ConfigError
from embedkit.finetune.config import FinetuneConfig, _resume_config
from embedkit.models.checkpoint import load_torch_file


@dataclass
class Progress:
    """What a run carries from one epoch to the next (and from a killed run to its resume)."""

    epoch: int = 0  # epochs done
    history: list = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    since_best: int = 0
    probe: dict | None = None  # head-then-top with averaging: the phase-1 network (pretrained features + head)
    stopped: bool = False


def rng_state(device: torch.device) -> dict:
    st = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4]))}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def open_run(out: Path, cfg: FinetuneConfig, resume: bool, overwrite: bool) -> tuple[FinetuneConfig, dict | None]:
    """``(config, saved state)`` of the run in ``out``: the interrupted run's with ``resume``, else a new one.

    A new run over an existing one needs ``overwrite``; a resume keeps the interrupted run's options except
    :data:`~embedkit.finetune.config.RESUMABLE_CHANGES`.
    """
    last_path = out / "last.pt"
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"nothing to resume in {str(out)!r} (no last.pt); run without --resume (resume=False) to start")
        state = load_torch_file(last_path, "training state")  # weights_only: a crafted last.pt runs no code
        if not isinstance(state, dict) or not {"config", "model", "epoch"} <= set(state):
            raise ConfigError(f"{str(last_path)!r} is not the training state of an `embedkit finetune` run; "
                              "start over with --overwrite (overwrite=True)")
        return _resume_config(state["config"], cfg), state
    if last_path.exists() and not overwrite:
        raise ConfigError(f"{str(out)!r} already holds a fine-tuning run; continue it with --resume (resume=True) "
                          "or start over with --overwrite (overwrite=True)")
    return cfg, None


def progress_of(state: dict) -> Progress:
    return Progress(int(state["epoch"]), state["history"], state["best"], state["best_epoch"], state["since_best"],
                    state.get("probe"), bool(state.get("stopped")))


def save_state(path: Path, model, opt, sched, scaler, progress: Progress, cfg: FinetuneConfig, device,
               class_names, train_paths) -> None:
    """Write ``last.pt`` (atomically: a kill leaves the previous epoch's)."""
    torch_save_atomic({"model": cpu_state(model), "optimizer": opt.state_dict(),
                       "scheduler": sched.state_dict() if sched is not None else {}, "scaler": scaler.state_dict(),
                       "epoch": progress.epoch, "rng": rng_state(device), "history": progress.history,
                       "best": progress.best, "best_epoch": progress.best_epoch, "since_best": progress.since_best,
                       "stopped": progress.stopped, "config": asdict(cfg), "class_names": class_names,
                       "probe": progress.probe, "split_paths": train_paths}, path)
