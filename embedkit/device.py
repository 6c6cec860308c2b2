"""The one place where embedkit decides between GPU and CPU.

An entry point (``embed()``, ``classify train``...) turns the user's ``--device`` into one
:class:`Compute` with :func:`resolve_compute`, once, and passes it to every engine (Ray included):
the torch device and the library for each algorithm (SVM, kNN search, projection). Everything that
takes a ``device`` also takes that value, and :func:`resolve_device` / :func:`resolve_backend` (which
library implements an algorithm) are the only tests of CUDA, so a user's ``--device`` / ``backend=``
choice is honoured everywhere and errors read the same.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from types import ModuleType
from typing import Any

from embedkit.errors import ConfigError, MissingDependencyError, invalid

DEVICE_CHOICES = ("auto", "cpu", "cuda")

# Optional libraries: import name -> (pip requirement, extra that provides it).
_OPTIONAL = {
    "cuml": ("cuml-cu13", "gpu"),
    "cupy": ("cupy-cuda13x", "gpu"),
    "faiss": ("faiss-cpu", None),  # a base dependency (the gpu extra brings the GPU build)
    "ray": ("ray[data]", "ray"),
    "ray.data": ("ray[data]", "ray"),
    "umap": ("umap-learn", "view"),
    "openTSNE": ("openTSNE", "view"),
}


@lru_cache(maxsize=None)
def cuda_available() -> bool:
    """True when torch sees a usable CUDA device (EMBEDKIT_FORCE_CPU=1 hides it)."""
    if os.environ.get("EMBEDKIT_FORCE_CPU") == "1":
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class Compute:
    """One entry point's device choice, resolved once by :func:`resolve_compute`.

    ``requested``: the user's ``--device`` as given (``auto``, ``cpu``, ``cuda``, ``cuda:N``; explicit
    choices are enforced by each library's resolver); ``device``: the torch device (backbones, Gram
    matrices, torch search). The library for each algorithm is decided on first use (importing cuML to
    find out costs seconds an embed does not need) and then kept: :attr:`svm`, :attr:`knn`, :attr:`projection`.
    """

    requested: str
    device: Any

    @property
    def name(self) -> str:
        """The torch device as text (``cpu``, ``cuda``, ``cuda:1``)."""
        return str(self.device)

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @cached_property
    def svm(self) -> str:
        """SVM library: ``cuml`` on a GPU where it is installed, else ``sklearn``."""
        return "cuml" if self.on_gpu and has_module("cuml") else "sklearn"

    @cached_property
    def knn(self) -> str:
        """Exact kNN search: ``faiss-gpu`` on a GPU with a GPU build of FAISS, ``torch`` on a GPU without one
        (and on a CPU without FAISS), else ``faiss`` (IVF and HNSW: see ``retrieve.common.resolve_knn_backend``)."""
        faiss = has_module("faiss")
        if self.on_gpu and faiss and hasattr(importlib.import_module("faiss"), "StandardGpuResources"):
            return "faiss-gpu"
        return "torch" if self.on_gpu or not faiss else "faiss"

    @cached_property
    def projection(self) -> str:
        """``cuml`` on a GPU where it is installed, else ``cpu`` (``view`` picks the CPU library per method)."""
        return "cuml" if self.on_gpu and has_module("cuml") else "cpu"


def requested_device(device) -> str:
    """The user's device choice as text, from a string, None (``auto``) or a :class:`Compute`."""
    if isinstance(device, Compute):
        return device.requested
    return "auto" if device is None else str(device)


def resolve_compute(device: "str | Compute | None" = "auto") -> Compute:
    """Resolve ``device`` once into a :class:`Compute` (a Compute is returned as it is)."""
    if isinstance(device, Compute):
        return device
    return Compute(requested_device(device), resolve_device(device))


def resolve_device(device: "str | Compute | None" = "auto"):
    """Return the ``torch.device`` to run on (a :class:`Compute`'s own, already resolved).

    ``"auto"``/None picks CUDA when present, else CPU; ``"cuda"`` on a machine
    without CUDA is an error rather than a silent fall-back, because the user
    asked for speed they would not get.
    """
    import torch

    if isinstance(device, Compute):
        return device.device
    name = "auto" if device is None else str(device)
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise invalid("device", name, (*DEVICE_CHOICES, "cuda:N"))
    if base == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if base == "cuda" and not cuda_available():
        raise ConfigError(
            f"device {name!r} was asked for but torch sees no CUDA device; "
            "use --device cpu (or auto), or install a CUDA build of torch"
        )
    return torch.device(name)


def autocast_dtype(device, precision: str = "auto"):
    """The autocast dtype for ``precision`` on ``device`` (None = full fp32).

    ``"auto"``: bf16 on CUDA devices with native bf16 (:func:`native_bf16`), else fp16 on CUDA (the
    fine-tuning GradScaler goes with it), and fp32 on CPU (CPU autocast is slower than fp32 for most conv nets).
    """
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if native_bf16(torch.cuda.get_device_capability(device)) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def native_bf16(capability: tuple[int, int]) -> bool:
    """True for a CUDA compute capability with bf16 in hardware (Ampere, 8.0, and later).

    Not ``torch.cuda.is_bf16_supported()``: it counts emulated bf16 (slow, or failing, on a V100 or T4)
    and asks the current device rather than the chosen one.
    """
    return tuple(capability) >= (8, 0)


def optional_import(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency or raise an error that names the install fix."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        req, extra = _OPTIONAL.get(module, (module, None))
        fix = f'pip install "embedkit[{extra}]"' if extra else f'pip install "{req}"'
        raise MissingDependencyError(
            f"{purpose} needs the optional package {module!r}, which is not installed ({exc}); fix: {fix}"
        ) from exc


def has_module(module: str) -> bool:
    """True when an optional module can be imported (cached by importlib)."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def resolve_backend(requested: str | None, *, gpu: str, cpu: str, purpose: str,
                    gpu_module: str | None = None, extra_cpu: tuple[str, ...] = ()) -> str:
    """Pick the library that implements ``purpose``.

    ``requested`` is ``None``/``"auto"`` (GPU library when CUDA and the library
    are both present, else the CPU one), or one of ``gpu``, ``cpu`` and
    ``extra_cpu``. Asking explicitly for the GPU library where it is missing
    raises :class:`MissingDependencyError` naming the ``gpu`` extra.
    """
    valid = (gpu, cpu, *extra_cpu)
    req = "auto" if requested in (None, "auto") else str(requested)
    if req != "auto" and req not in valid:
        raise invalid(f"backend for {purpose}", req, ("auto", *valid))
    module = gpu_module or gpu
    if req == "auto":
        return gpu if (cuda_available() and has_module(module)) else cpu
    if req == gpu:
        optional_import(module, f"{purpose} with backend={gpu!r}")
        if not cuda_available():
            raise ConfigError(f"backend {gpu!r} for {purpose} needs a CUDA device and none is visible; use backend={cpu!r} or auto")
    return req
