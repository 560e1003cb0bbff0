"""Transposing 16x16 blocks in vector registers, for packing a panel from rows of its source.

The products' packing (kernels/matmul.py, kernels/bf16.py) writes panels of k rows by ON columns.
Where a column of the panel is a row of the source (op(a) = a for the left operand, op(b) = b.T
for the right one), a plain loop stores one element at a time at a stride of ON words, and that
dominated the packing. Here 16 rows of 16 words are loaded as vectors, transposed with 64
two-source shuffles (4 rounds that swap ever smaller off-diagonal blocks) and stored as 16
contiguous rows of the panel. Numba has no vector types, so this is written in LLVM IR.

For bf16 panels a word is a pair of bfloat16 numbers, consecutive along k (the lower half is the
even k), rounded to nearest even from 32 floats of the source row (NaN kept, quietened), as
kernels/bf16.to_bf16 does one at a time. pair_rows16_bf16 serves the other layout (two rows of the
source are two consecutive k): no transpose, only the rounding in 32-bit lanes.
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

N = 16


def _transpose(builder, rows):
    """The 16 <16 x i32> vectors rows, transposed: out[k][q] = rows[q][k]."""
    rows = list(rows)
    vi = ir.VectorType(ir.IntType(32), N)
    b = N // 2
    while b >= 1:
        for r in range(N):
            if r & b:
                continue
            lo, hi = rows[r], rows[r + b]
            # new[r][c] = old[r][c] (c & b == 0) or old[r+b][c-b]; new[r+b][c] = old[r][c+b] or old[r+b][c]
            m_lo = [c if not c & b else N + c - b for c in range(N)]
            m_hi = [c + b if not c & b else N + c for c in range(N)]
            rows[r] = builder.shuffle_vector(lo, hi, ir.Constant(vi, m_lo))
            rows[r + b] = builder.shuffle_vector(lo, hi, ir.Constant(vi, m_hi))
        b //= 2
    return rows


def _round_bf16(builder, u):
    """Lanes of <n x i32> float bits -> the bfloat16 bits nearest (ties to even), NaN quietened."""
    vi = u.type
    c = lambda v: ir.Constant(vi, [v] * vi.count)     # noqa: E731
    nan = builder.icmp_unsigned(">", builder.and_(u, c(0x7FFFFFFF)), c(0x7F800000))
    odd = builder.and_(builder.lshr(u, c(16)), c(1))
    rounded = builder.lshr(builder.add(builder.add(u, c(0x7FFF)), odd), c(16))
    quiet = builder.or_(builder.lshr(u, c(16)), c(0x40))
    return builder.select(nan, quiet, rounded)


def _codegen(pairs, nrows):
    def codegen(context, builder, signature, args):
        src_t, _, _, dst_t = signature.args[:4]
        src, r0, c0, dst, k0, q0 = args
        src_a = context.make_array(src_t)(context, builder, src)
        dst_a = context.make_array(dst_t)(context, builder, dst)
        i32 = ir.IntType(32)
        vi = ir.VectorType(i32, N)
        rows = []
        for q in range(nrows):
            r = builder.add(r0, ir.Constant(r0.type, q))
            if pairs:
                halves = []
                for h in range(2):
                    col = builder.add(c0, ir.Constant(c0.type, N * h))
                    ptr = cgutils.get_item_pointer(context, builder, src_t, src_a, [r, col], wraparound=False)
                    v = builder.load(builder.bitcast(ptr, vi.as_pointer()), align=4)
                    halves.append(_round_bf16(builder, v))
                even = builder.shuffle_vector(halves[0], halves[1], ir.Constant(vi, list(range(0, 2 * N, 2))))
                odd = builder.shuffle_vector(halves[0], halves[1], ir.Constant(vi, list(range(1, 2 * N, 2))))
                rows.append(builder.or_(even, builder.shl(odd, ir.Constant(vi, [16] * N))))
            else:
                ptr = cgutils.get_item_pointer(context, builder, src_t, src_a, [r, c0], wraparound=False)
                rows.append(builder.load(builder.bitcast(ptr, vi.as_pointer()), align=4))
        rows += [ir.Constant(vi, None)] * (N - nrows)     # a narrow panel: the lanes past nrows are not stored
        part = ir.VectorType(i32, nrows)
        for k, v in enumerate(_transpose(builder, rows)):
            if nrows < N:
                v = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, nrows), list(range(nrows))))
            row = builder.add(k0, ir.Constant(k0.type, k))
            ptr = cgutils.get_item_pointer(context, builder, dst_t, dst_a, [row, q0], wraparound=False)
            builder.store(v, builder.bitcast(ptr, part.as_pointer()), align=4)
        return context.get_dummy_value()
    return codegen


def _block(pairs, nrows):
    def block(typingctx, src, r0, c0, dst, k0, q0):
        return types.void(src, types.intp, types.intp, dst, types.intp, types.intp), _codegen(pairs, nrows)
    return intrinsic(block)


# dst[k0 + k, q0 + q] = src[r0 + q, c0 + k] for k < 16 and q < 16, 8 or 6 (the panel widths of the
# AVX-512 and AVX2 tiles): src, dst 2-D arrays of 32-bit elements with contiguous rows; no bounds checks.
block_t16, block_t8, block_t6 = (_block(False, n) for n in (16, 8, 6))
# dst[k0 + k, q0 + q] = the bf16 pair src[r0 + q, c0 + 2k], src[r0 + q, c0 + 2k + 1] for k < 16 and
# q < 16 or 8: src float32 with contiguous rows, dst a uint32 panel; no bounds checks.
block_t16_bf16, block_t8_bf16 = (_block(True, n) for n in (16, 8))


def _pair_rows(lanes):
    def pair_rows(typingctx, src, r, c, dst, k, q):
        def codegen(context, builder, signature, args):
            src_t, _, _, dst_t = signature.args[:4]
            src_v, r_v, c_v, dst_v, k_v, q_v = args
            src_a = context.make_array(src_t)(context, builder, src_v)
            dst_a = context.make_array(dst_t)(context, builder, dst_v)
            vi = ir.VectorType(ir.IntType(32), lanes)
            halves = []
            for h in range(2):
                row = builder.add(r_v, ir.Constant(r_v.type, h))
                ptr = cgutils.get_item_pointer(context, builder, src_t, src_a, [row, c_v], wraparound=False)
                halves.append(_round_bf16(builder, builder.load(builder.bitcast(ptr, vi.as_pointer()), align=4)))
            word = builder.or_(halves[0], builder.shl(halves[1], ir.Constant(vi, [16] * lanes)))
            ptr = cgutils.get_item_pointer(context, builder, dst_t, dst_a, [k_v, q_v], wraparound=False)
            builder.store(word, builder.bitcast(ptr, vi.as_pointer()), align=4)
            return context.get_dummy_value()
        return types.void(src, types.intp, types.intp, dst, types.intp, types.intp), codegen
    return intrinsic(pair_rows)


# dst[k, q + j] = the bf16 pair src[r, c + j], src[r + 1, c + j] for j < 16 or 8 (the panels of a
# (K, N) operand: two rows of the source are two consecutive k). Needs no transpose, but Numba
# would do this arithmetic on 64-bit lanes, or one pair at a time; no bounds checks.
pair_rows16_bf16, pair_rows8_bf16 = _pair_rows(16), _pair_rows(8)
