"""The one place where embedkit decides between GPU and CPU.

Every module asks :func:`resolve_device` (torch work) or :func:`resolve_backend`
(which library implements an algorithm) at the top of a function instead of
testing ``torch.cuda.is_available()`` itself, so a user's ``--device`` /
``backend=`` choice is honoured everywhere and errors read the same.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from types import ModuleType

from embedkit.errors import ConfigError, MissingDependencyError, invalid

DEVICE_CHOICES = ("auto", "cpu", "cuda")

# Optional libraries: import name -> (pip requirement, extra that provides it).
_OPTIONAL = {
    "cuml": ("cuml-cu13", "gpu"),
    "cupy": ("cupy-cuda13x", "gpu"),
    "faiss": ("faiss-cpu (or faiss-gpu)", None),
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


def resolve_device(device: str | None = "auto"):
    """Return the ``torch.device`` to run on.

    ``"auto"``/None picks CUDA when present, else CPU; ``"cuda"`` on a machine
    without CUDA is an error rather than a silent fall-back, because the user
    asked for speed they would not get.
    """
    import torch

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
        fix = f"pip install 'embedkit[{extra}]'" if extra else f"pip install {req}"
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
