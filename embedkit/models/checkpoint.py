"""embedkit's checkpoint format, and reading any weights file (state_dict or checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from embedkit.errors import WeightsError

CHECKPOINT_FORMAT = "embedkit-backbone/1"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a weights file: a finetune checkpoint dict, or a plain state_dict wrapped as ``{"state_dict": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist; give a .pt/.pth state_dict, "
                           "an `embedkit finetune` checkpoint (run/best.pt), 'default' or 'none'")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to the user
        raise WeightsError(f"could not read weights file {str(path)!r}: {exc}") from exc
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return {"state_dict": obj["state_dict"]}
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise WeightsError(f"{str(path)!r} is neither a state_dict nor an embedkit checkpoint")
