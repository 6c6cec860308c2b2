"""What a run leaves behind: ``best.pt`` (the exported backbone, or the validated WiSE mix), the history, and the
plain statement of whether the exported backbone's codes differ from the starting weights' at all.

A run whose chosen epoch only trained the head (or whose mix chose the linear probe) exports a backbone whose
codes are bit for bit those of its starting weights: only its softmax changed. That is a legitimate outcome of
model selection on the validation split, but a user embedding with ``best.pt`` must be told, not left to find
identical codes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from embedkit.atomic import torch_save_atomic, write_csv_atomic
from embedkit.finetune.config import FinetuneConfig
from embedkit.finetune.state import cpu_state
from embedkit.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint
from embedkit.models.preprocessing import Preprocessing
from embedkit.models.registry import get_spec


def export_backbone(model: nn.Module, path, cfg: FinetuneConfig, class_names, pre: Preprocessing, extra=None) -> Path:
    """Write ``model`` as an ``embedkit-backbone/1`` checkpoint (plain types only: loads with weights_only)."""
    spec = get_spec(cfg.backbone)
    ckpt = {"format": CHECKPOINT_FORMAT, "backbone": spec.name, "num_classes": len(class_names),
            "class_names": list(class_names), "state_dict": cpu_state(model), "preprocessing": pre.to_dict(),
            "layers": dict(spec.layers), "default_layer": spec.default_layer, "finetune": dict(extra or {})}
    torch_save_atomic(ckpt, Path(path))
    return Path(path)


def export_average(model, probe, tuned_path: Path, best_path: Path, cfg, class_names, pre, evaluate, log,
                   progress: bool = True) -> dict | None:
    """best.pt = the mix of linear probe and best fine-tuned epoch whose codes classify the validation split best.

    ``evaluate(model)`` is the validation accuracy of the codes. Returns the choice, for ``average.json``
    (None: the run never left phase 1, nothing to mix).
    """
    from tqdm.auto import tqdm

    from embedkit.finetune.average import choose_alpha

    tuned = read_checkpoint(tuned_path)
    if probe is None:  # the run never left phase 1: nothing to mix
        shutil.copyfile(tuned_path, best_path)
        log("averaging: the run ended in phase 1 (no fine-tuned network to mix); best.pt is the best epoch")
        return None
    with tqdm(total=len(cfg.average_alphas), desc="choosing the mix on validation", unit="mix",
              disable=not progress, leave=False) as bar:
        def scored(m):
            acc = evaluate(m)
            bar.update(1)
            return acc

        alpha, scores = choose_alpha(model, probe, tuned["state_dict"], scored, cfg.average_alphas)
    tied = sorted(a for a, v in scores.items() if v == scores[alpha])
    info = {"average": "wise", "alpha": alpha, "val_code_acc_by_alpha": {str(a): v for a, v in scores.items()},
            "tied_alphas": tied, "epoch": tuned["finetune"].get("epoch")}
    export_backbone(model, best_path, cfg, class_names, pre, {**tuned["finetune"], **info})
    log("averaging: validation accuracy of the codes (nearest class mean) by mix (0 = linear probe, 1 = fine-tuned) "
        + ", ".join(f"{a:g}: {v:.3f}" for a, v in scores.items()) + f"; best.pt holds mix {alpha:g}"
        + (f" (a tie between mixes {', '.join(f'{a:g}' for a in tied)}: ties go to the one nearest halfway)"
           if len(tied) > 1 else ""))
    return info


def write_history(history: list, out: Path, best_epoch: int | None = None) -> None:
    from embedkit.render.plots import learning_curves_png

    keys = list(dict.fromkeys(k for row in history for k in row)) if history else ["epoch"]
    write_csv_atomic(out / "history.csv", keys, [[row.get(k, "") for k in keys] for row in history])
    if history:
        learning_curves_png(history, out / "curves.png", title="Fine-tuning", best_epoch=best_epoch or None)


def backbone_weights(model: nn.Module, head_name: str) -> dict:
    """A CPU copy of every floating tensor below the classifier head (what the codes depend on)."""
    return {k: v for k, v in cpu_state(model).items()
            if v.is_floating_point() and not k.startswith(head_name + ".")}


def backbone_change(start: dict, exported: dict) -> float:
    """Largest relative change ``|w - w0| / |w0|`` of a backbone tensor; 0.0: the codes are the starting weights'."""
    worst = 0.0
    for k, w0 in start.items():
        d = float(torch.linalg.vector_norm(exported[k].float() - w0.float()))
        worst = max(worst, d / max(float(torch.linalg.vector_norm(w0.float())), 1e-12))
    return worst


def unchanged_note(cfg: FinetuneConfig, best_epoch: int, alpha: float | None) -> str:
    """What to tell a user whose best.pt has the starting weights' codes, and what to change."""
    why = ("the mix chosen on validation is the linear probe (mix 0)" if alpha == 0 else
           f"the best epoch ({best_epoch}, by {cfg.monitor}) trained only the classifier head")
    change = ("more --epochs after --head-epochs, or keep the starting weights for codes: no fine-tuned epoch's "
              "codes classified the validation images better" if cfg.monitor == "val_codes" else
              "--monitor val_codes chooses the epoch by the codes themselves, and more --epochs after --head-epochs "
              "train the backbone longer")
    return (f"note: best.pt's codes are exactly those of the starting weights ({cfg.weights}): {why}. Embedding with "
            f"it gives the same codes as --weights {cfg.weights}; only its own classifier changed. To change that: "
            f"{change}")


def no_backbone_epoch(cfg: FinetuneConfig, head_epochs: int) -> str | None:
    """The warning before training when ``--epochs`` leaves the backbone no epoch (None when it has some)."""
    if cfg.strategy == "head-then-top" and head_epochs >= cfg.epochs:
        return (f"warning: --epochs {cfg.epochs} with --head-epochs {head_epochs} leaves no epoch to train the "
                "backbone: best.pt's codes will be the starting weights'; give --epochs above --head-epochs")
    return None
