"""The projection libraries behind ``view``: UMAP (cuML / umap-learn), t-SNE (cuML / openTSNE / scikit-learn), PCA."""

from __future__ import annotations

import numpy as np

from embedkit import device as _device


def _pca_fit(x: np.ndarray, k: int, seed: int, backend: str):
    """Mean and top-``k`` components (numpy) of ``x``, on the GPU with cuML when asked."""
    if backend == "cuml":
        cuml = _device.optional_import("cuml", "PCA with backend='cuml'")
        p = cuml.PCA(n_components=k, output_type="numpy").fit(x)
    else:
        from sklearn.decomposition import PCA

        solver = "randomized" if k < 0.8 * min(x.shape) else "full"
        p = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(x)
    return np.asarray(p.mean_, np.float32), np.asarray(p.components_, np.float32)


def _transform(model, method: str, x: np.ndarray) -> np.ndarray:
    """Place new (already reduced) points on a fitted map (UMAP: its ``transform``; openTSNE: new points are
    optimised against the fixed fitted embedding)."""
    return np.asarray(model.transform(x), np.float32)


def _umap(x, backend, k, min_dist, seed, approx=False):
    """``(coordinates of x, fitted model)``."""
    if backend == "cuml":
        from cuml.manifold import UMAP

        m = UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, random_state=seed, output_type="numpy")
        return m.fit_transform(x), m
    umap = _device.optional_import("umap", "UMAP projection")
    # A fixed random_state makes umap-learn single-threaded, which is what makes it reproducible.
    import warnings

    init = "spectral" if len(x) > k + 1 else "random"
    with warnings.catch_warnings():  # the seed is the point; umap-learn warns it costs parallelism
        warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
        m = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, random_state=seed, init=init,
                      force_approximation_algorithm=bool(approx))
        return m.fit_transform(x), m


class _IterationBar:
    """An openTSNE callback that advances a progress bar (a t-SNE fit is minutes of silence otherwise)."""

    def __init__(self, bar, every: int):
        self.bar, self.every = bar, every

    def __call__(self, iteration, error, embedding) -> bool:
        self.bar.update(self.every)
        self.bar.set_postfix(kl=f"{error:.3f}")
        return False  # never stop early


#: openTSNE iterations between progress-bar updates
TSNE_BAR_EVERY = 10


def _tsne(x, backend, perplexity, seed, progress: bool = False):
    """``(coordinates of x, fitted model or None)``; only openTSNE's model can place new points.

    ``progress``: a bar over openTSNE's iterations (scikit-learn's and cuML's TSNE report none)."""
    if backend == "cuml":
        from cuml.manifold import TSNE

        return TSNE(n_components=2, perplexity=perplexity, random_state=seed,
                    output_type="numpy").fit_transform(x), None
    if backend == "sklearn":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=min(perplexity, len(x) - 1.0), init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(x), None
    openTSNE = _device.optional_import("openTSNE", "t-SNE projection")
    # FFT-interpolated gradients pay a fixed grid cost that dominates below ~10k points, and so do threads:
    # Barnes-Hut on one thread is several times faster there. openTSNE is reproducible either way.
    small = len(x) < 10_000
    from tqdm.auto import tqdm

    tsne = openTSNE.TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=1 if small else -1,
                         initialization="pca", negative_gradient_method="bh" if small else "fft", verbose=False,
                         callbacks_every_iters=TSNE_BAR_EVERY)
    total = tsne.early_exaggeration_iter + tsne.n_iter
    with tqdm(total=total, unit="iter", desc="t-SNE fit", disable=not progress, leave=False) as bar:
        tsne.callbacks = [_IterationBar(bar, TSNE_BAR_EVERY)]
        emb = tsne.fit(x)
    return np.asarray(emb), emb

