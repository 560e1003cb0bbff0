"""NumPy twins of kernels/bf16.py: the layer functions with every matrix product in bf16.

Each product rounds both operands to bfloat16 (to_bf16) and multiplies them in float32; a
product of two bfloat16 numbers is exact in float32, so only the order of the float32 sums
differs from the kernels. Everything else (normalisation, bias gradients, epilogues) is
reference.py's. Slow (every call rounds copies of its operands) but it runs on any CPU: it is the
oracle of the bf16 kernels and the numpy engine's `--precision bf16`.
"""
import numpy as np

from . import reference as R


def to_bf16(x) -> np.ndarray:
    """float32 x rounded to the nearest bfloat16 (ties to even), as float32 (low 16 bits zero).
    NaN stays NaN (quietened), float32 beyond bfloat16's range rounds to inf, and float32
    subnormals become zero of their sign: what `vcvtneps2bf16` does, and so the kernels."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = np.where(u & np.uint32(0x7F800000), rounded, u & np.uint32(0x80000000))
    return np.where(nan, (u & np.uint32(0xFFFF0000)) | np.uint32(0x400000), rounded).astype(np.uint32).view(np.float32)


def gemm_op_bf16(a, trans_a, b, trans_b, out, bias, mask, mode, pack):
    R.gemm_op(to_bf16(a), trans_a, to_bf16(b), trans_b, out, bias, mask, mode, pack)


def input_linear_forward(xb, mean, inv_std, w, b, relu, x, out, pack):
    R.normalise(xb, mean, inv_std, x)
    linear_forward(x, w, b, relu, out, pack)


def linear_forward(x, w, b, relu, out, pack):
    R.gemm_nt(to_bf16(x), to_bf16(w), out, b, out, R.BIAS_RELU if relu else R.BIAS)


def linear_grad_params(dy, x, dw, db, pack):
    np.matmul(to_bf16(dy).T, to_bf16(x), out=dw)
    np.sum(dy, axis=0, out=db)


def linear_grad_input(dy, w, x, dx, pack):
    np.matmul(to_bf16(dy), to_bf16(w), out=dx)
    dx *= x > 0
