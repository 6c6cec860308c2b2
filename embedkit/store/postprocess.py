"""Post-processing of codes: L2 normalisation and PCA-whitening."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _fit_whitening(x: np.ndarray, k: int, chunk: int = 65536):
    """PCA-whitening fitted from streamed chunks (mean and D x D covariance in float64)."""
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
