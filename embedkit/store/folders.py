"""What a folder given where a code store or a model is expected is, and what to do with it instead.

"not a code store" and "not a classifier model" name what the folder *is* (a folder of images, a fine-tuning
run, a store's ``shards/``...) and the command that uses it, instead of suggesting to write into it. Only the
folder's own marker files are looked at, and at most a few hundred directory entries: cheap, no torch.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

from embedkit.io.discover import IMAGE_EXTENSIONS
from embedkit.store.layout import META, SHARDS

#: directory entries looked at when searching a folder for images (its own, then each sub-folder's)
_SCAN = 200


def _has_images(folder: Path, depth: int = 1) -> bool:
    try:
        with os.scandir(folder) as it:
            entries = list(islice(it, _SCAN))
    except OSError:
        return False
    if any(e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS for e in entries):
        return True
    return depth > 0 and any(e.is_dir() and not e.name.startswith(".") and _has_images(Path(e.path), depth - 1)
                             for e in entries[:20])


def kind_of(path) -> str | None:
    """``store``, ``shards`` (of a store), ``model``, ``run`` (fine-tuning), ``index``, ``images`` or None."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / META).exists():
        return "store"
    if p.name == SHARDS and (p.parent / META).exists():
        return "shards"
    if (p / "model.json").exists():
        return "model"
    if (p / "best.pt").exists() or (p / "last.pt").exists():
        return "run"
    if (p / "index.json").exists():
        return "index"
    return "images" if _has_images(p) else None


def not_a_store(path) -> str:
    """The advice after "PATH is not a code store": what PATH is and the command that makes or takes it."""
    p = Path(path)
    kind = kind_of(p)
    if kind == "shards":
        return f"it is the shards folder of the store {str(p.parent)!r}: give {str(p.parent)!r} itself"
    if kind == "images":
        return f"it is a folder of images: embed them first with `embedkit embed {p} -o codes/` and give codes/"
    if kind == "run":
        return (f"it is a fine-tuning run: embed images with its network, `embedkit embed IMAGES -o codes/ "
                f"--weights {p / 'best.pt'}`, and give codes/")
    if kind == "model":
        return "it is a classifier model: give the code store it is to be used on (MODEL comes first)"
    if kind == "index":
        return "it is a saved kNN index: give the code store it was built from"
    return f"meta.json is missing; create one with `embedkit embed IMAGES -o {p}`"


def not_a_model(path) -> str:
    """The advice after "PATH is not a classifier model": what PATH is and the command that makes or takes it."""
    p = Path(path)
    kind = kind_of(p)
    store = p.parent if kind == "shards" else p
    if kind in ("store", "shards"):
        return (f"it is a code store: train a model on it with `embedkit classify train {store} -o model/` and give "
                "model/")
    if kind == "run":
        return (f"it is a fine-tuning run (a network, not an SVM): embed with it, `embedkit embed IMAGES -o codes/ "
                f"--weights {p / 'best.pt'}`, then `embedkit classify train codes/ -o model/`, and give model/")
    if kind == "images":
        return "it is a folder of images: give the model folder first, then the images (MODEL SOURCE)"
    return f"model.json is missing; train one with `embedkit classify train CODES -o {p}`"
