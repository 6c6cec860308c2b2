"""A backbone on a device: one code layer of a network, with its weights and preprocessing, fast.

:class:`Backbone` joins a registry spec, its weights and one code layer into a
ready-to-run feature model on the resolved device. Batches run under
``torch.inference_mode``; on CUDA with channels_last, pinned memory,
non-blocking copies and autocast (bf16 where supported, else fp16), and an
out-of-memory error halves the micro-batch and retries instead of dying.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch

from embedkit.defaults import BACKBONE, PRECISIONS
from embedkit.device import autocast_dtype, resolve_device
from embedkit.errors import MismatchError, invalid
from embedkit.models.features import FeatureModel
from embedkit.models.preprocessing import Preprocessing
from embedkit.models.registry import BackboneSpec, get_spec
from embedkit.models.weights import load_model, resolve_preprocessing

CPU_MICRO_BATCH = 8

log = logging.getLogger(__name__)


class Backbone:
    """A backbone built by name with its weights and code layer, ready to embed.

    Parameters
    ----------
    name : registered name (``efficientnet_lite0``, ``vgg19``...) or any timm/torchvision model.
    layer : code layer name (``fc7``, ``pool5``...) or any graph node; default: the spec's.
    weights : ``"default"`` (real ImageNet weights), ``"none"`` (random) or a path.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.
    precision : ``"auto"`` (bf16/fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"bf16"``, ``"fp16"``.
    spatial : reduction of a spatial (B, C, H, W) or token (B, T, C) code: ``"avg"``, ``"max"``, ``"cls"``
        (the class token of a transformer) or ``"flatten"``; see :class:`~embedkit.models.features.FeatureModel`.
    micro_batch : rows per forward call, independent of the loader's batch size (default 8 on CPU, where
        small batches stay in cache; the whole batch on CUDA). On CUDA out-of-memory it halves and retries.
    """

    def __init__(self, name: str = BACKBONE, layer: str | None = None, weights="default",
                 device: str | None = "auto", precision: str = "auto", spatial: str = "avg",
                 micro_batch: int | None = None):
        if precision not in PRECISIONS:
            raise invalid("precision", precision, PRECISIONS)
        self.device = resolve_device(device)
        self.spec: BackboneSpec = get_spec(name)
        self.layer, self.node = self.spec.node_for(layer)
        model, self.weights_info = load_model(self.spec, weights)
        self.weights_path = None if str(weights) in ("default", "imagenet", "pretrained", "none", "None") else os.path.abspath(str(weights))
        # a fine-tuned checkpoint carries its own (e.g. input size); one function decides
        self.preprocessing: Preprocessing = resolve_preprocessing(self.spec, self.weights_info)
        self.spatial = spatial
        model.eval()
        # channels_last pays on both devices (measured 1.5-3x on CPU with oneDNN for conv nets).
        self.model = FeatureModel(model, self.node, self.spec.source, spatial, spec=self.spec).eval().to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = precision
        self.amp_dtype = autocast_dtype(self.device, precision)
        # Rows per forward call. On CPU small batches stay in cache: measured 2x the images/s of
        # batch 32 with batch 4-8 (efficientnet_lite0, resnet50). On CUDA it shrinks after an OOM.
        if micro_batch is not None and int(micro_batch) < 1:
            raise invalid("micro_batch", micro_batch, "a positive number of rows per forward call")
        self.micro_batch: int | None = int(micro_batch) if micro_batch else (
            CPU_MICRO_BATCH if self.device.type == "cpu" else None)
        self._dim: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def transform(self):
        return self.preprocessing.transform()

    @property
    def dim(self) -> int:
        """Code dimension (found with one dummy forward, then cached)."""
        if self._dim is None:
            s = self.preprocessing.input_size
            self._dim = int(self.forward(torch.zeros(1, 3, s, s)).shape[1])
        return self._dim

    @property
    def reduction(self) -> str:
        """What ``spatial`` did to this layer's output (e.g. ``"avg over 196 patch tokens (1 prefix token left out)"``)."""
        if self.model.reduction is None:
            _ = self.dim if self._dim is None else self.forward(torch.zeros(1, 3, self.preprocessing.input_size,
                                                                            self.preprocessing.input_size))
        return self.model.reduction

    @property
    def precision_used(self) -> str:
        """The precision the forward passes run in: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (``precision`` resolved)."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def identity(self) -> dict:
        """What makes two code sets comparable: backbone, layer, weights, preprocessing, reduction, precision.

        Returned in its JSON form (lists, not tuples) so it compares equal to one read back from disk.
        """
        return json.loads(json.dumps({
            "backbone": self.spec.name,
            "layer": self.layer,
            "node": self.node,
            "spatial": self.spatial,
            "reduction": self.reduction,
            "weights": {**self.weights_info.to_dict(), "path": self.weights_path},
            "preprocessing": self.preprocessing.to_dict(),
            "precision": self.precision_used,
        }))

    @classmethod
    def from_identity(cls, ident: dict, device: str | None = "auto", precision: str = "auto") -> "Backbone":
        """Rebuild the backbone a store or model was made with (e.g. to embed queries)."""
        w = ident["weights"]
        weights = w.get("path") if w.get("kind") in ("file", "checkpoint") else ("none" if w.get("kind") == "none" else "default")
        if weights and w.get("kind") in ("file", "checkpoint") and not os.path.isfile(weights):
            raise MismatchError(f"the weights these codes were made with ({weights}) are no longer there; "
                                "restore the file or re-embed with the weights you have")
        bb = cls(ident["backbone"], ident["layer"], weights, device=device, precision=precision,
                 spatial=ident.get("spatial", "avg"))
        if w.get("sha256") and bb.weights_info.sha256 and w["sha256"] != bb.weights_info.sha256:
            raise MismatchError(f"weights {bb.weights_info.identity} have changed since the codes were made "
                                f"(sha256 {bb.weights_info.sha256[:12]} != {w['sha256'][:12]}); re-embed the images")
        made = ident.get("precision")
        if made and made != bb.precision_used:  # comparable, slightly off: say so rather than refuse a query
            log.warning("these codes were made in %s, new images are embedded in %s on %s (codes differ by about "
                        "0.4%% between the two); to match, use --precision %s%s", made, bb.precision_used,
                        bb.device.type, made, " on a GPU" if made != "fp32" and bb.device.type == "cpu" else "")
        return bb

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of a batch (B, 3, H, W) as float32 CPU tensor (B, D).

        ``x`` is either normalised float (``preprocessing.transform()``) or uint8 from
        ``preprocessing.transform_uint8()``, which is normalised here, on the device.
        """
        n = x.shape[0]
        step = min(self.micro_batch or n, n)
        outs, i = [], 0
        while i < n:
            try:
                outs.append(self._run(x[i:i + step]))
                i += step
            except torch.cuda.OutOfMemoryError:
                if step == 1:
                    raise
                torch.cuda.empty_cache()
                step = max(1, step // 2)  # halve and retry the same rows
                self.micro_batch = step
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Forward one micro-batch; uint8 input (from the loaders) is normalised on the device."""
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = self.preprocessing.normalize_batch(x)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                out = self.model(x)
        else:
            with torch.autocast("cpu", dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
                out = self.model(x)
        return out.float().cpu()

    def embed_images(self, images) -> np.ndarray:
        """Codes of a list of PIL images (float32, N x D)."""
        from embedkit.io.decode import to_rgb

        if not images:
            return np.zeros((0, self.dim), np.float32)
        tf = self.preprocessing.transform_uint8()
        return self.forward(torch.stack([tf(to_rgb(im)) for im in images])).numpy()


__all__ = ["Backbone"]
