"""Fully connected layers: forward with fused bias + ReLU, backward for weights and inputs.

Weights are stored (out, in), like PyTorch, so every product is a gemm_nt (out = a @ b.T).
"""
import numpy as np
from numba import prange

from .config import composite, kernel
from .matmul import BIAS, BIAS_RELU, MASK, PLAIN, gemm_nt, transpose


@kernel
def input_linear_forward(xb, mean, inv_std, w, b, relu, x, out):
    """First layer straight from the uint8 batch.

    xb (B,D) uint8; mean, inv_std (D,) per-feature normalisation; w (H,D); b (H,);
    x (B,D) float32 workspace receives the normalised batch (kept for the backward pass);
    out (B,H) = act(x @ w.T + b).
    """
    n, d = xb.shape
    for i in prange(n):
        src, dst = xb[i], x[i]   # row views: plain k indexing vectorises (see matmul.py)
        for k in range(d):
            dst[k] = (np.float32(src[k]) - mean[k]) * inv_std[k]
    gemm_nt(x, w, out, b, out, BIAS_RELU if relu else BIAS)


@composite
def linear_forward(x, w, b, relu, out):
    """out (B,H) = act(x (B,D) @ w (H,D).T + b (H,)), act = ReLU if relu else identity."""
    gemm_nt(x, w, out, b, out, BIAS_RELU if relu else BIAS)


@kernel
def linear_grad_params(dy, x, dw, db, dyt, xt):
    """dw (H,D) = dy.T @ x and db (H,) = dy summed over the batch.

    dy (B,H), x (B,D) the layer input; dyt (H,B) and xt (D,B) are transpose workspaces.
    """
    transpose(dy, dyt)
    for j in prange(dyt.shape[0]):
        row = dyt[j]
        s = np.float32(0)
        for i in range(row.shape[0]):
            s += row[i]
        db[j] = s
    transpose(x, xt)
    gemm_nt(dyt, xt, dw, db, dw, PLAIN)


@composite
def linear_grad_input(dy, w, x, dx, wt):
    """dx (B,D) = (dy (B,H) @ w (H,D)) * (x > 0): the gradient through this layer and the ReLU
    that produced its input x. wt (D,H) is a transpose workspace."""
    transpose(w, wt)
    gemm_nt(dy, wt, dx, dy[0], x, MASK)
