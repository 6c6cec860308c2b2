"""Query images for a search: collect them from files and folders, embed them the way the store was embedded.

Moved out of the CLI so Python users get the same rules: folders are searched
recursively, missing and non-image files are listed with a reason rather than
stopping the run, and query codes get the store's post-processing (L2, PCA)
so they live in the same space as the stored codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.errors import DataError, StoreError


def collect_queries(queries) -> tuple[list[str], list[tuple[str, str]]]:
    """Image paths of ``queries`` (files, or folders searched recursively) and (path, reason) of those skipped."""
    from embedkit.io.discover import IMAGE_EXTENSIONS, discover

    paths, skipped = [], []
    for q in queries:
        p = Path(q)
        if p.is_dir():
            try:
                paths.extend(it.path for it in discover(p, labels=False))
            except DataError as exc:
                skipped.append((str(p), str(exc)))
        elif not p.exists():
            skipped.append((str(p), "does not exist"))
        elif p.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((str(p), f"not an image file ({', '.join(IMAGE_EXTENSIONS)})"))
        else:
            paths.append(str(p.resolve()))
    return paths, skipped


def check_embeddable(store) -> None:
    """Raise :class:`StoreError` when the store's codes were imported without a backbone (nothing to embed with)."""
    if getattr(store, "identity", None) is None:
        raise StoreError(f"store {str(store.path)!r} holds codes imported without a backbone, so query images cannot "
                         "be embedded like them; find near-duplicates inside it with --dedupe, or search it with query "
                         "codes from Python (KNNIndex.search)")


def embed_queries(store, paths, *, device="auto", workers=None, batch_size=None, progress=False):
    """Codes of the query images ``paths`` in the store's space: ``(codes or None, kept paths, skipped)``.

    ``skipped`` lists ``(path, reason)`` of unreadable images; ``codes`` is None when none could be read.
    """
    check_embeddable(store)
    if not paths:
        return None, [], []
    from embedkit.runner.local import embed_files

    raw, kept, bad = embed_files(store.backbone(device), paths, batch_size=batch_size, workers=workers,
                                 progress=progress)
    skipped = [(paths[i], reason) for i, reason in bad]
    kept_paths = [paths[i] for i in kept]
    codes = np.asarray(store.transform(raw), dtype=np.float32) if len(kept) else None
    return codes, kept_paths, skipped
