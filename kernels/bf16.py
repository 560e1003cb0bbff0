"""bfloat16 matrix products for mixed-precision training (`--precision bf16`) on CPUs with AVX512_BF16.

Mixed precision as the field does it: weights, optimizer state, activations and every sum stay
float32; only the operands of the matrix products are rounded to bfloat16 (the top 16 bits of a
float32, rounded to nearest even) as they are packed, and `vdpbf16ps` multiplies pairs of them and
adds both products into a float32 accumulator: twice the multiply-adds of a float32 FMA per
instruction. A product of two bfloat16 numbers (8-bit significands) is exact in float32, so the
kernel differs from its NumPy twin (reference/bf16.py: round both operands, multiply in float32)
only by the order of the float32 sums.

The product is gemm_op (kernels/matmul.py) compiled a second time from the same source, with the
packing and the register tile swapped for the ones here: panels hold pairs of bfloat16 numbers
along k, one pair per 32-bit word (the lower half is the even k), so every index into a panel, and
the reduction loop, counts pairs. The tile is written in LLVM IR: Numba has neither a bfloat type nor
vector types, and `vdpbf16ps` takes <32 x bfloat> operands.

Compiling any of this on a CPU without AVX512_BF16 fails inside LLVM: callers check `AVAILABLE`
first (fastfcnn.engine turns it into one clear error).
"""
import os

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from . import matmul
from .config import kernel, num_threads, serial_kernel, variant
from .linear import bias_grad, normalise
from .matmul import BIAS, BIAS_RELU, MASK, OM, ON, PLAIN, check_layout, op_fault_message
from .prefetch import prefetch
from .transpose import BFloat, block_t8_bf16, block_t16_bf16, pair_rows8_bf16, pair_rows16_bf16
from .vtile import register_tile, splat

# The feature string the kernels compile for (config.py sets it from the host unless the user did):
# masking AVX-512 off (fastfcnn bench --avx2) masks bf16 too.
AVAILABLE = "+avx512bf16" in os.environ.get("NUMBA_CPU_FEATURES", "").split(",")


@intrinsic
def float_bits(typingctx, x):
    """The 32 bits of the float32 x, as a uint32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@serial_kernel
def to_bf16(x):
    """The bfloat16 nearest to the float32 x (ties to even), as the low 16 bits of a uint32.
    NaN stays NaN (quietened); a float32 too large for bfloat16 rounds to inf, as it should; a
    float32 subnormal becomes zero of its sign, as `vcvtneps2bf16` makes it (the vector packing,
    kernels/transpose.py)."""
    u = float_bits(x)
    if u & np.uint32(0x7FFFFFFF) > np.uint32(0x7F800000):
        return (u >> np.uint32(16)) | np.uint32(0x40)
    if u & np.uint32(0x7F800000) == np.uint32(0):
        return (u >> np.uint32(16)) & np.uint32(0x8000)
    return (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


@serial_kernel
def _pair(lo, hi):
    return to_bf16(lo) | (to_bf16(hi) << np.uint32(16))


@serial_kernel
def _pack_rows(src, panels, c0, c1, k0, kn, kd):
    """panels[t, kd + p, q] = the pair src[2(k0+p), c], src[2(k0+p)+1, c] of column c = c0 + t*w + q,
    zero past column c1 and past the last row of src: rows of src are the k of the product. Each
    pair of rows is read once, along its length, for all the panels (a pass per panel over rows
    a multiple of 4 KB apart kept evicting them from L1)."""
    w = panels.shape[2]
    kk = src.shape[0]
    n_t = (c1 - c0 + w - 1) // w
    cols = c1 - c0
    step = 16 if w % 16 == 0 else 8 if w % 8 == 0 else 0     # columns within one panel
    vec = cols // step * step if step else 0
    for k in range(kn):
        r = 2 * (k0 + k)
        if r + 1 < kk:
            t, q = 0, 0                          # column c = t*w + q, counted without dividing
            for c in range(0, vec, max(step, 1)):
                if step == 16:
                    pair_rows16_bf16(src, r, c0 + c, panels[t], kd + k, q)
                else:
                    pair_rows8_bf16(src, r, c0 + c, panels[t], kd + k, q)
                q += step
                if q == w:
                    t, q = t + 1, 0
            for c in range(vec, cols):
                panels[c // w, kd + k, c % w] = _pair(src[r, c0 + c], src[r + 1, c0 + c])
        else:
            for c in range(cols):
                panels[c // w, kd + k, c % w] = to_bf16(src[r, c0 + c])
        for c in range(cols, n_t * w):
            panels[c // w, kd + k, c % w] = np.uint32(0)


@serial_kernel
def _pack_cols(src, panels, r0, r1, k0, kn, kd):
    """panels[t, kd + p, q] = the pair src[r, 2(k0+p)], src[r, 2(k0+p)+1] of row r = r0 + t*w + q,
    zero past row r1 and past the last column of src: columns of src are the k of the product."""
    w = panels.shape[2]
    kk = src.shape[1]
    for t in range((r1 - r0 + w - 1) // w):
        p = panels[t]
        s0 = r0 + t * w
        rows = min(w, r1 - s0)
        c0 = 2 * k0
        c1 = min(c0 + 2 * kn, kk)
        full = (c1 - c0) // 2                    # whole pairs; an odd last column pairs with zero
        # 16 pairs by 16 rows (or a whole 8-row panel) at a time, transposed in registers
        step = 16 if w % 16 == 0 else (8 if w == 8 else 0)
        blocks, q_full = full // 16, rows // step * step if step else 0
        for qb in range(0, q_full, max(step, 1)):
            for b in range(blocks):
                if step == 16:
                    block_t16_bf16(src, s0 + qb, c0 + 32 * b, p, kd + 16 * b, qb)
                else:
                    block_t8_bf16(src, s0 + qb, c0 + 32 * b, p, kd + 16 * b, qb)
        for q in range(w):
            if q < rows:
                row = src[s0 + q, c0:c1]
                for k in range(blocks * 16 if q < q_full else 0, full):
                    p[kd + k, q] = _pair(row[2 * k], row[2 * k + 1])
                if full < kn:
                    p[kd + full, q] = to_bf16(row[2 * full])
            else:
                for k in range(kn):
                    p[kd + k, q] = np.uint32(0)


# matmul._pack_a on pairs: panel p of op(a) into pa[p], pairs along k, zero past row m
_pack_a = serial_kernel(variant(matmul._pack_a.py_func, "_pack_a_bf16", _pack_rows=_pack_rows, _pack_cols=_pack_cols))
_pack_b = serial_kernel(variant(matmul._pack_b.py_func, "_pack_b_bf16", _pack_rows=_pack_rows, _pack_cols=_pack_cols))


@serial_kernel
def _prefetch_rows(b, trans_b, r0, r1, j0, j1, k1, k2):
    """As matmul._prefetch_rows, for the pairs k1..k2: rows (or columns) 2*k1 .. 2*k2 of b."""
    for r in range(r0, r1):
        if trans_b:                              # b (N, K): row j0 + r, columns 2*k1 .. 2*k2
            for c in range(2 * k1, 2 * k2, 16):
                prefetch(b, j0 + r, c)
        else:                                    # b (K, N): rows 2(k1 + r) and the next
            for c in range(j0, j1, 16):
                prefetch(b, 2 * (k1 + r), c)
                prefetch(b, 2 * (k1 + r) + 1, c)


def _load_b(builder, ptr):
    """32 bfloat16 numbers of a pb panel row: 16 pair words, as <32 x bfloat>."""
    vi = ir.VectorType(ir.IntType(32), 16)
    return builder.bitcast(builder.load(builder.bitcast(ptr, vi.as_pointer()), align=4), ir.VectorType(BFloat(), 32))


def _broadcast_a(builder, ptr):
    """One pair word of a pa panel row in all 16 lanes, as <32 x bfloat>."""
    return builder.bitcast(splat(builder, builder.load(ptr, align=4), ir.VectorType(ir.IntType(32), 16)),
                           ir.VectorType(BFloat(), 32))


def _dot(builder, acc, a, b):
    vf, vb = ir.VectorType(ir.FloatType(), 16), ir.VectorType(BFloat(), 32)
    dot = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vb, vb]),
                                         "llvm.x86.avx512bf16.dpbf16ps.512")
    return builder.call(dot, [acc, a, b])


# out[i:i+OM, j:j+ON] (+)= the product of the packed panels pa (KC, OM) and pb (KC, ON) of bf16 pairs,
# over their first kn pairs: OM x ON/16 accumulators of 16 floats (16 zmm registers), per pair of k
# ON/16 vector loads of pb, OM broadcasts of a pair of pa, and `vdpbf16ps`.
tile = register_tile(OM, ON, 16, _load_b, _broadcast_a, _dot)


@serial_kernel
def _pairs(k):
    return (k + 1) // 2


@serial_kernel
def _as_words(x):
    return x.view(np.uint32)


@serial_kernel
def _packed(trans_a, n):
    return False                 # the tile reads op(a) as bf16 pairs: always packed


@serial_kernel
def _packed_panel(a, pa, i, k0, kn):
    return pa[i // OM, k0 : k0 + kn]


@serial_kernel
def _packed_b(trans_b):
    return False                 # and op(b) too: gemm_op_bf16 never asks for b in place


@serial_kernel
def _packed_b_panel(b, pb, jt, j, j1, k0, kn, in_place):
    return pb[jt]


_gemm_op = kernel(variant(matmul._gemm_op.py_func, "_gemm_op_bf16", _pack_a=_pack_a, _pack_b=_pack_b,
                          _prefetch_rows=_prefetch_rows, tile=tile, _k_panel=_pairs, _words=_as_words,
                          _reads_a=_packed, _in_place=_packed_panel,
                          _reads_b=_packed_b, _b_panel=_packed_b_panel))


def gemm_op_bf16(a, trans_a, b, trans_b, out, bias, mask, mode, pack):
    """out = epilogue(bf16(op(a)) @ bf16(op(b))), summed in float32: matmul.gemm_op's arguments,
    shapes, modes and workspace (matmul.pack_workspace; pairs along k need no more than gemm_op)."""
    check_layout("gemm_op_bf16", a, b, out, bias, mask, pack)
    fault = _gemm_op(a, trans_a, b, trans_b, out, bias, mask, mode, pack, OM, num_threads(), False)
    if fault:
        raise ValueError(op_fault_message(fault, "gemm_op_bf16", a, trans_a, b, trans_b, out, bias, mask, mode, pack))


# The layers of kernels/linear.py with every product in bf16 (the same functions, arguments and
# epilogues): a bf16 run's engine is kernels with these four swapped in (fastfcnn.engine).

def input_linear_forward(xb, mean, inv_std, w, b, relu, x, out, pack):
    normalise(xb, mean, inv_std, x)
    linear_forward(x, w, b, relu, out, pack)


def linear_forward(x, w, b, relu, out, pack):
    gemm_op_bf16(x, False, w, True, out, b, out, BIAS_RELU if relu else BIAS, pack)


def linear_grad_params(dy, x, dw, db, pack):
    bias_grad(dy, db)
    gemm_op_bf16(dy, True, x, False, dw, db, dw, PLAIN, pack)


def linear_grad_input(dy, w, x, dx, pack):
    gemm_op_bf16(dy, False, w, False, dx, dx[0], x, MASK, pack)
