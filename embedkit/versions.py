"""torch and torchvision must be a pair built for each other: checked at start-up, from the installed metadata.

A mismatched pair (a torchvision from PyPI beside torch from PyTorch's CPU index, or an upgrade of one of
them) fails deep inside ``import torchvision`` with a traceback about missing operators or symbols. The CLI
checks the versions before a command runs (reading package metadata: milliseconds, no import) and names the
torchvision that goes with the installed torch; an import that fails anyway is told in the same words.
"""

from __future__ import annotations

import re
from importlib import metadata

from embedkit.errors import MissingDependencyError

#: torchvision 0.(N + 15) is the release built with torch 2.N (pytorch.org, "previous versions")
TORCHVISION_OFFSET = 15
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _local(version: str) -> str:
    """The build label: 'cpu', 'cu121'... ('' for a PyPI wheel)."""
    return version.partition("+")[2]


def install_fix(torch_version: str) -> str:
    """The pip line that installs the torchvision of ``torch_version`` (from the CPU index for a CPU build)."""
    mm = _minor(torch_version)
    index = f" --index-url {CPU_INDEX}" if _local(torch_version) == "cpu" else ""
    if mm and mm[0] == 2:
        return f'pip install "torchvision==0.{mm[1] + TORCHVISION_OFFSET}.*"{index}'
    return f"install the torchvision release built for torch {torch_version}{index}"


def pair_problem() -> str | None:
    """Why the installed torch and torchvision cannot load together (a one-line message), or None."""
    torch_v, vision_v = _version("torch"), _version("torchvision")
    if not torch_v or not vision_v:
        return None  # a missing package fails at its import with its own message
    t, v = _minor(torch_v), _minor(vision_v)
    if t and v and t[0] == 2 and v[0] == 0 and v[1] != t[1] + TORCHVISION_OFFSET:
        why = f"torch {t[0]}.{t[1]} goes with torchvision 0.{t[1] + TORCHVISION_OFFSET}"
    elif _local(torch_v) and _local(vision_v) and _local(torch_v) != _local(vision_v):
        why = f"one is a {_local(torch_v)} build, the other a {_local(vision_v)} build"
    else:  # (a PyPI torchvision has no build label: a mismatch of builds then shows at import, see import_failure)
        return None
    return f"torch {torch_v} and torchvision {vision_v} cannot load together ({why}); fix: {install_fix(torch_v)}"


def check_torch_pair() -> None:
    """Raise :class:`MissingDependencyError` (one line, with the fix) when torch and torchvision do not match."""
    problem = pair_problem()
    if problem:
        raise MissingDependencyError(problem)


def import_failure(exc: BaseException) -> str | None:
    """The one-line message for an ``import torchvision`` that failed although the versions look right
    (an ImportError naming torchvision, or its compiled operators missing: "operator torchvision::nms does not
    exist"); None for any other error."""
    text = str(exc)
    loading = isinstance(exc, ImportError) and "torchvision" in (text + str(getattr(exc, "name", "") or ""))
    if not (loading or (isinstance(exc, RuntimeError) and "torchvision::" in text)):
        return None
    torch_v, vision_v = _version("torch") or "?", _version("torchvision") or "?"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (f"torchvision {vision_v} cannot be loaded with torch {torch_v} ({first}); reinstall the pair from one "
            f"index: {install_fix(torch_v)}")
