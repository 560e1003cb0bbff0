"""Fully connected layers: forward with fused bias + ReLU, backward for weights and inputs.

Weights are stored (out, in), like PyTorch. The backward products are gemm_op outer products
(dw = dy.T @ x reduces over the short batch; dx = dy @ w), which read the operands as stored.
The forward product (out = x @ w.T) takes gemm_op too (matmul.op_suits) when its output has a
256-column block for every thread, or is one block of columns at least a register tile wide
with an input past L2 (the seed net's first layer: the threads share the rows and one packing
of w) or 64 rows for every thread (its second layer, on one or two threads); the others (a 10-class
output layer, small batches, or 16 threads sharing 1024 units) take gemm_nt, whose 32x48 blocks
keep every thread busy and need no packing.
"""
import numpy as np
from numba import prange

from .config import kernel, num_threads, sized_kernel
from .gather import normalise_row
from .matmul import BIAS, BIAS_RELU, MASK, PLAIN, gemm_nt, gemm_op, op_suits


@kernel
def normalise(xb, mean, inv_std, x):
    """x (B,D) float32 = (xb (B,D) uint8 - mean) * inv_std, per feature."""
    for i in prange(xb.shape[0]):
        normalise_row(xb[i], mean, inv_std, x[i])   # row views: plain k indexing vectorises (see matmul.py)


# The layer functions are plain Python around gemm_op, which checks its arguments in Python
# before its kernel runs; that kernel, inlined into other Numba functions, was optimised again in
# each caller (about 20 s of cold compile each), and called from Python it compiles once.


def input_linear_forward(xb, mean, inv_std, w, b, relu, x, out, pack):
    """First layer straight from the uint8 batch.

    xb (B,D) uint8; mean, inv_std (D,) per-feature normalisation; w (H,D); b (H,);
    x (B,D) float32 workspace receives the normalised batch (kept for the backward pass);
    out (B,H) = act(x @ w.T + b); pack = pack_workspace(), gemm_op's scratch.
    """
    normalise(xb, mean, inv_std, x)
    linear_forward(x, w, b, relu, out, pack)


def linear_forward(x, w, b, relu, out, pack):
    """out (B,H) = act(x (B,D) @ w (H,D).T + b (H,)), act = ReLU if relu else identity."""
    mode = BIAS_RELU if relu else BIAS
    if op_suits(out.shape[0], out.shape[1], x.shape[1], num_threads()):
        gemm_op(x, False, w, True, out, b, out, mode, pack)
    else:
        gemm_nt(x, w, out, b, out, mode)


@sized_kernel(lambda dy, db: dy.size)
def bias_grad(dy, db):
    """db (H,) = dy (B,H) summed over the batch; 64 columns per task, rows added in order."""
    h = dy.shape[1]
    for jb in prange((h + 63) // 64):
        j0 = jb * 64
        j1 = min(j0 + 64, h)
        acc = db[j0:j1]
        for j in range(j1 - j0):
            acc[j] = np.float32(0)
        for i in range(dy.shape[0]):
            row = dy[i, j0:j1]
            for j in range(j1 - j0):
                acc[j] += row[j]


def linear_grad_params(dy, x, dw, db, pack):
    """dw (H,D) = dy.T @ x and db (H,) = dy summed over the batch.

    dy (B,H), x (B,D) the layer input; pack = pack_workspace(), gemm_op's scratch.
    """
    bias_grad(dy, db)
    gemm_op(dy, True, x, False, dw, db, dw, PLAIN, pack)   # PLAIN reads neither bias nor mask


def linear_grad_input(dy, w, x, dx, pack):
    """dx (B,D) = (dy (B,H) @ w (H,D)) * (x > 0): the gradient through this layer and the ReLU
    that produced its input x. pack = pack_workspace(), gemm_op's scratch."""
    gemm_op(dy, False, w, False, dx, dx[0], x, MASK, pack)   # dx[0]: no bias in MASK mode
