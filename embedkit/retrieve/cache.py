"""The index cache of a code store: ``<store>/index/<metric>-<kind>/``, reused while it belongs to the store.

:func:`cached_index` loads the saved index when it was built from this store
(same identity, row count, dim and store fingerprint: paths and content hashes)
and rebuilds and saves it otherwise. A cache that cannot be read (a truncated
``index.faiss``, an object array in ``ids.npy``, garbage JSON, an old format) is
rebuilt after a one-line note, never a traceback: the cache is only a speed-up.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embedkit.errors import ConfigError, EmbedkitError
from embedkit.retrieve.index import KNNIndex

log = logging.getLogger(__name__)


def index_folder(store, metric: str, kind: str) -> Path:
    """Where the cached index of ``store`` for (metric, kind) lives: inside the store folder, saved with it."""
    return Path(store.path) / "index" / f"{metric}-{kind}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def cached_index(store, metric: str = "cosine", kind: str = "auto", backend: str = "auto", rebuild: bool = False,
                 progress: bool = False, device: str = "auto", *, folder=None, note=None, **params):
    """The store's kNN index, loaded from its cache folder or built (and saved there).

    Returns ``(index, how)`` with ``how`` ``"loaded"`` or ``"built"``. ``note(message)`` receives one-line
    notes (unusable cache, cache not writable); default: a warning on the ``embedkit.retrieve.cache`` logger.
    ``params`` go to :class:`KNNIndex` when building. A store folder that cannot be written to only loses the
    cache, not the search.
    """
    note = note or log.warning
    folder = Path(folder) if folder is not None else index_folder(store, metric, kind)
    if not rebuild and folder.exists():
        try:
            index = KNNIndex.load(folder, store=store, backend=backend, device=device)
        except ConfigError:  # the caller's own bad backend/device: not the cache's fault, rebuilding would not help
            raise
        except EmbedkitError as exc:  # StoreError (unreadable), MismatchError (other codes or rows)
            reason = _first_line(exc)
        except Exception as exc:  # noqa: BLE001 - whatever else a damaged file makes a library raise
            reason = f"{type(exc).__name__}: {_first_line(exc)}"
        else:
            if not np.array_equal(index.ids_, np.arange(index.n_)):
                reason = "its ids are not the store's row numbers"  # a cache is built with them: altered
            elif index.metric == metric and (kind == "auto" or index.kind_ == kind):
                return index, "loaded"
            else:
                reason = f"it was built for metric {index.metric!r}, kind {index.kind_!r}"
        note(f"the cached index in {folder} cannot be used ({reason}); rebuilding it")
    index = KNNIndex.from_store(store, metric=metric, kind=kind, backend=backend, device=device, progress=progress,
                                **params)
    try:
        index.save(folder)
    except OSError as exc:
        note(f"could not cache the index in {folder} ({exc}); it will be rebuilt next time")
    return index, "built"
