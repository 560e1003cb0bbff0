"""Whitening fitted chunk by chunk on uint8 images."""
import numpy as np
import pytest

from fastfcnn.whiten import feature_covariance, fit_whitening


def correlated_images(n=500, d=48, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) * 0.3 + np.eye(d)
    z = rng.standard_normal((n, d)) @ mix.T * 20 + 128
    return np.clip(np.rint(z), 0, 255).astype(np.uint8)


def test_chunked_covariance_matches_numpy():
    x = correlated_images()
    idx = np.arange(3, 500, 2, dtype=np.int64)
    mean, inv_std = np.full(48, 120, np.float32), np.full(48, 1 / 40, np.float32)
    mu, cov = feature_covariance(x, idx, mean, inv_std, chunk=37)
    z = (x[idx].astype(np.float64) - 120) / 40
    np.testing.assert_allclose(mu, z.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cov, np.cov(z, rowvar=False, bias=True), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind,dims", [("zca", 0), ("pca", 10)])
def test_whitened_features_have_identity_covariance(kind, dims):
    x = correlated_images()
    idx = np.arange(500, dtype=np.int64)
    mean, inv_std = np.full(48, 128, np.float32), np.full(48, 1 / 20, np.float32)
    p, c = fit_whitening(x, idx, mean, inv_std, kind, dims, eps=1e-6)
    k = 48 if kind == "zca" else dims
    assert p.shape == (k, 48) and c.shape == (k,) and p.dtype == c.dtype == np.float32
    assert p.flags.c_contiguous          # gemm_op packs its rows as vectors
    w = ((x.astype(np.float64) - 128) / 20) @ p.T.astype(np.float64) + c
    np.testing.assert_allclose(w.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(w, rowvar=False, bias=True), np.eye(k), atol=1e-3)
    if kind == "zca":
        np.testing.assert_allclose(p, p.T, atol=1e-4)   # ZCA is the symmetric whitening
