"""embedkit's checkpoint format, and reading any weights file (state_dict or checkpoint) without running code.

Every PyTorch file embedkit opens goes through :func:`load_torch_file`: ``torch.load(weights_only=True)``
(tensors and plain data only, never a pickled object that would run code when loaded), with one clear
:class:`~embedkit.errors.WeightsError` for a file that is not a PyTorch file at all, one that is damaged,
or one that holds Python objects.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from embedkit.errors import WeightsError

CHECKPOINT_FORMAT = "embedkit-backbone/1"

EXPECTED = ("a PyTorch file written by torch.save (a state_dict or an `embedkit finetune` checkpoint) "
            "or a .safetensors file")

_MAGIC = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"), (b"BM", "a BMP image"),
    (b"\x93NUMPY", "a NumPy .npy array"), (b"RIFF", "a RIFF (WebP/WAV) file"),
)


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header."""
    return len(head) > 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def describe_file_start(head: bytes) -> str:
    """What the first bytes of a file look like, in words (for "not a weights file" messages)."""
    if not head:
        return "an empty file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive that torch.save did not write"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data starting with bytes {head[:8].hex(' ')}"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a text file"  # its kind only: its content (e.g. /etc/passwd's first line) is not ours to print
    return f"binary data starting with bytes {head[:8].hex(' ')}"


def _unsafe_object(exc: BaseException) -> str | None:
    """The Python object a weights-only load refused (``posix.system``...), if that is why it failed."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)|unsupported GLOBAL ([\w.]+)|GLOBAL ([\w.]+) was not an "
                  r"allowed global", str(exc))
    return next((g for g in m.groups() if g), None) if m else None


def load_torch_file(path: str | os.PathLike, what: str = "weights file"):
    """``torch.load`` a file safely (``weights_only=True``; safetensors by content); clear errors otherwise.

    A file holding pickled Python objects (which could run code when unpickled) is refused, never loaded.
    """
    from embedkit.io.decode import open_file

    path = Path(path)
    try:
        with open_file(str(path)) as f:  # non-blocking: a FIFO or device given as weights is refused, not read
            head = f.read(64)
    except ValueError as exc:
        raise WeightsError(f"could not read {what} {str(path)!r}: it is {exc}; expected {EXPECTED}") from exc
    if path.suffix == ".safetensors" or _is_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"could not read {what} {str(path)!r}: a damaged .safetensors file ({exc})") from exc
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip, or a legacy pickle
        raise WeightsError(f"could not read {what} {str(path)!r}: it is not a torch/safetensors file (found "
                           f"{describe_file_start(head)}); expected {EXPECTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        obj = _unsafe_object(exc)
        found = f"a pickled Python object ({obj})" if obj else "pickled data other than tensors and plain values"
        raise WeightsError(
            f"refused to load {what} {str(path)!r}: it holds {found} that could run code when loaded; embedkit "
            "loads only tensors and plain data. Fix: save the weights as a plain state_dict "
            "(torch.save(model.state_dict(), path)) or as .safetensors") from None
    except Exception as exc:  # torch raises many types for a damaged file; all mean the same to the user
        raise WeightsError(f"could not read {what} {str(path)!r}: a damaged or truncated PyTorch file "
                           f"({type(exc).__name__}: {str(exc)[:200]}); expected {EXPECTED}") from exc


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a weights file: a finetune checkpoint dict, or a plain state_dict wrapped as ``{"state_dict": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist; give a .pt/.pth state_dict, "
                           "an `embedkit finetune` checkpoint (run/best.pt), 'default' or 'none'")
    obj = load_torch_file(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return {"state_dict": obj["state_dict"]}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise WeightsError(f"{str(path)!r} is neither a state_dict nor an embedkit checkpoint (found a "
                       f"{type(obj).__name__}{' with keys ' + ', '.join(map(str, list(obj)[:6])) if isinstance(obj, dict) else ''}); "
                       f"expected {EXPECTED}")
