"""Post-processing of codes: L2 normalisation and PCA-whitening, as one object.

A store records how its codes were post-processed; a classifier or an index
trained on those codes must apply the very same steps to the codes of new
images (queries). :class:`PostProcess` is that one owner: fitted once (PCA from
streamed chunks), saved next to the store (``pca.npz`` + the ``postprocess``
entry of ``meta.json``), copied into model folders, and applied with
:meth:`PostProcess.apply`.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkit.atomic import atomic_path
from embedkit.defaults import CHUNK_ROWS
from embedkit.errors import StoreError
from embedkit.store.validate import npy_header

log = logging.getLogger(__name__)

PCA_FILE = "pca.npz"
MAX_PCA_VALUES = 1 << 28  # a 16384 x 16384 whitening; a larger header is a crafted file, refused before reading


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def fit_whitening(x, k: int, chunk: int = CHUNK_ROWS):
    """PCA-whitening fitted from streamed chunks (mean and D x D covariance in float64).

    Returns ``(mean, components k x D, scale)`` as float32. ``x`` may be a memmap or sharded array.
    """
    n, d = x.shape
    mean = np.zeros(d)
    for i in range(0, n, chunk):
        mean += np.asarray(x[i:i + chunk], np.float64).sum(0)
    mean /= n
    cov = np.zeros((d, d))
    for i in range(0, n, chunk):
        c = np.asarray(x[i:i + chunk], np.float64) - mean
        cov += c.T @ c
    cov /= max(n - 1, 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:k]
    scale = np.sqrt(np.maximum(vals[order], 1e-12))
    return mean.astype(np.float32), vecs[:, order].T.astype(np.float32), scale.astype(np.float32)



@dataclass
class PostProcess:
    """L2 normalisation and/or PCA-whitening of raw codes (PCA first, then L2).

    ``pca_whiten`` is the number of components asked for (None = no PCA); ``mean``, ``components``
    and ``scale`` are the fitted whitening (None until fitted or loaded).
    """

    l2_normalize: bool = False
    pca_whiten: int | None = None
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    scale: np.ndarray | None = None

    def __repr__(self) -> str:
        fitted = "" if self.pca_whiten is None else f", fitted={self.components is not None}"
        return f"PostProcess(l2_normalize={self.l2_normalize}, pca_whiten={self.pca_whiten}{fitted})"

    @property
    def identity(self) -> dict:
        """The JSON form recorded in ``meta.json`` / ``model.json`` (compared between artifacts)."""
        return {"l2_normalize": bool(self.l2_normalize), "pca_whiten": self.pca_whiten}

    def out_dim(self, dim: int) -> int:
        """Dimension of processed codes given raw codes of ``dim``."""
        return int(self.components.shape[0]) if self.components is not None else dim

    def fit(self, raw) -> "PostProcess":
        """Fit the PCA-whitening (when asked for) on raw codes, streamed in chunks."""
        if self.pca_whiten:
            n, d = raw.shape
            if n < 2:
                from embedkit.errors import ConfigError

                raise ConfigError(f"PCA-whitening needs at least 2 codes, there are {n}; drop --pca-whiten")
            k = min(int(self.pca_whiten), d, n)
            if k < int(self.pca_whiten):  # recorded as fitted: meta's pca_whiten and dim must say what the codes hold
                log.warning("PCA-whitening to %d components asked for, but %d codes of %d dims give at most %d: "
                            "the codes have %d dims", int(self.pca_whiten), n, d, k, k)
                self.pca_whiten = k
            self.mean, self.components, self.scale = fit_whitening(raw, k)
        return self

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Processed float32 codes of raw codes (of new images, or a chunk of a store)."""
        x = np.asarray(raw, dtype=np.float32)
        if self.pca_whiten:
            if self.components is None:
                raise StoreError("the PCA-whitening of these codes was never fitted (pca.npz missing); re-embed")
            x = (x - self.mean) @ self.components.T / self.scale
        if self.l2_normalize:
            x = l2_normalize(x)
        return np.asarray(x, dtype=np.float32)

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``pca.npz`` into ``folder`` (nothing without PCA); atomic."""
        if self.pca_whiten and self.components is not None:
            with atomic_path(Path(folder) / PCA_FILE, suffix=".npz") as tmp:  # np.savez wants the .npz ending
                np.savez(tmp, mean=self.mean, components=self.components, scale=self.scale)

    def copy_to(self, folder: str | os.PathLike, source_folder: str | os.PathLike) -> None:
        """Copy the fitted ``pca.npz`` from ``source_folder`` to ``folder`` (write then rename)."""
        if self.pca_whiten:
            with atomic_path(Path(folder) / PCA_FILE) as tmp:
                shutil.copyfile(Path(source_folder) / PCA_FILE, tmp)

    @classmethod
    def load(cls, info: dict | None, folder: str | os.PathLike | None = None,
             dims: tuple[int, int] | None = None) -> "PostProcess":
        """From a recorded ``{"l2_normalize", "pca_whiten"}`` entry and the folder holding ``pca.npz``.

        ``dims`` = (raw dim, processed dim) as recorded beside it: the file's arrays must have those shapes.
        """
        info = info or {}
        pca = info.get("pca_whiten")
        if pca is not None and (isinstance(pca, bool) or not isinstance(pca, int) or pca < 1):
            raise StoreError(f"the recorded pca_whiten {pca!r} is not a number of components; the file recording "
                             "it is damaged: re-embed")
        pp = cls(bool(info.get("l2_normalize")), pca)
        if pp.pca_whiten and folder is not None:
            pp.mean, pp.components, pp.scale = load_whitening(Path(folder) / PCA_FILE, dims)
        return pp


def load_whitening(path: Path, dims: tuple[int, int] | None = None):
    """``(mean, components, scale)`` of a ``pca.npz``, each member's header checked before it is read.

    A crafted file (object arrays, wrong or huge shapes, a zip bomb, NaN) is refused in one line:
    only float arrays of the shapes ``dims`` implies are read, and they must be finite.
    """
    def bad(what: str) -> StoreError:
        return StoreError(f"{str(path)!r} {what}: the PCA-whitening of these codes cannot be applied; re-embed "
                          "or copy the file back")

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise bad("is not a regular file")
    except FileNotFoundError:
        raise bad("is missing") from None
    try:
        with zipfile.ZipFile(path) as z:
            headers = {}
            for name in ("mean", "components", "scale"):
                with z.open(name + ".npy") as f:
                    headers[name] = npy_header(f)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise bad(f"is not a whitening file (mean, components, scale) ({exc})") from None
    shapes = {k: h[0] for k, h in headers.items()}
    if any(h[2].kind != "f" for h in headers.values()):
        raise bad(f"holds arrays of {', '.join(str(h[2]) for h in headers.values())}, not floats")
    if len(shapes["components"]) != 2:
        raise bad(f"holds components of shape {shapes['components']}, not a matrix")
    k, d = shapes["components"]
    if k * d > MAX_PCA_VALUES:
        raise bad(f"declares components of shape {shapes['components']}, more than any embedkit writes")
    want = {"mean": (d,), "components": (k, d), "scale": (k,)}
    if dims is not None:
        want = {"mean": (dims[0],), "components": (dims[1], dims[0]), "scale": (dims[1],)}
    if shapes != want:
        raise bad(f"holds shapes {shapes}, expected {want} from the recorded dims")
    with np.load(path, allow_pickle=False) as p:
        arrays = tuple(np.asarray(p[name], np.float32) for name in ("mean", "components", "scale"))
    if not all(np.isfinite(a).all() for a in arrays) or not (arrays[2] > 0).all():
        raise bad("holds values that are not finite (or a scale that is not positive)")
    return arrays
