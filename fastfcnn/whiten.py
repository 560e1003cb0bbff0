"""ZCA / PCA whitening fitted on the training split, applied in the forward pass as a fixed linear map.

The images stay uint8: the covariance of the normalised features is accumulated in float64, one
chunk of images at a time, so no float copy of the dataset is ever made.
"""
import numpy as np

from .network import aligned_copy

WHITENINGS = ("none", "zca", "pca")
CHUNK = 1000


def feature_covariance(x, idx, mean, inv_std, chunk: int = CHUNK) -> tuple:
    """(mean (D,), covariance (D,D)) in float64 of the normalised features (x[idx] - mean) * inv_std,
    where x is uint8 (N,D) and mean, inv_std are per-feature (D,)."""
    d = x.shape[1]
    mean64, inv64 = mean.astype(np.float64), inv_std.astype(np.float64)
    total = np.zeros(d)
    outer = np.zeros((d, d))
    for s in range(0, len(idx), chunk):
        xc = (x[idx[s : s + chunk]].astype(np.float64) - mean64) * inv64
        total += xc.sum(axis=0)
        outer += xc.T @ xc
    n = len(idx)
    mu = total / n
    return mu, outer / n - np.outer(mu, mu)


def fit_whitening(x, idx, mean, inv_std, kind: str, dims: int, eps: float) -> tuple:
    """(P float32 (K,D), c float32 (K,)) with P @ z + c whitened for normalised images z.

    kind "zca": P = U diag(1/sqrt(lambda + eps)) U.T (K = D, stays close to the image).
    kind "pca": the top `dims` principal components, each scaled to unit variance (K = dims).
    eps regularises small eigenvalues (in units of the normalised features' variance).
    """
    mu, cov = feature_covariance(x, idx, mean, inv_std)
    lam, u = np.linalg.eigh(cov)                         # ascending
    lam, u = lam[::-1], u[:, ::-1]
    scale = 1 / np.sqrt(np.maximum(lam, 0) + eps)
    if kind == "zca":
        p = (u * scale) @ u.T
    elif kind == "pca":
        p = (u[:, :dims] * scale[:dims]).T
    else:
        raise ValueError(f"unknown whitening {kind!r}")
    # C order: the products' packing reads rows of its operands as contiguous vectors
    return aligned_copy(np.asarray(p, np.float32)), (-(p @ mu)).astype(np.float32)
