"""Transposing 16x16 blocks in vector registers, for packing a panel from rows of its source.

The products' packing (kernels/matmul.py, kernels/bf16.py) writes panels of k rows by ON columns.
Where a column of the panel is a row of the source (op(a) = a for the left operand, op(b) = b.T
for the right one), a plain loop stores one element at a time at a stride of ON words, and that
dominated the packing. Here 16 rows of 16 words are loaded as vectors, transposed with 64
two-source shuffles (4 rounds that swap ever smaller off-diagonal blocks) and stored as 16
contiguous rows of the panel. Numba has no vector types, so this is written in LLVM IR.

For bf16 panels a word is a pair of bfloat16 numbers, consecutive along k (the lower half is the
even k), rounded from 32 floats of the source row by `vcvtneps2bf16` (LLVM's fptrunc to bfloat):
to nearest even, NaN kept (quietened), and float32 subnormals flushed to zero, as that instruction
does and as kernels/bf16.to_bf16 does one at a time (one instruction per 16 floats, where integer
arithmetic took about ten). pair_rows16_bf16 serves the other layout (two rows of the source are two
consecutive k): no transpose, the two rows interleaved and rounded.
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

N = 16


class BFloat(ir.types._BaseFloatType):
    """LLVM's bfloat, which llvmlite's ir does not define."""
    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self):
        return "bfloat"


BFloat._create_instance()


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


def _to_bf16_words(builder, v):
    """<2n x float> -> <n x i32>: word j the bfloat16 pair of v[2j] (low half) and v[2j+1]."""
    n = v.type.count
    return builder.bitcast(builder.fptrunc(v, ir.VectorType(BFloat(), n)), ir.VectorType(ir.IntType(32), n // 2))


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
            ptr = cgutils.get_item_pointer(context, builder, src_t, src_a, [r, c0], wraparound=False)
            if pairs:                            # 32 floats of the row -> 16 pair words
                vf = ir.VectorType(ir.FloatType(), 2 * N)
                rows.append(_to_bf16_words(builder, builder.load(builder.bitcast(ptr, vf.as_pointer()), align=4)))
            else:
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
            vf = ir.VectorType(ir.FloatType(), lanes)
            rows = []
            for h in range(2):
                row = builder.add(r_v, ir.Constant(r_v.type, h))
                ptr = cgutils.get_item_pointer(context, builder, src_t, src_a, [row, c_v], wraparound=False)
                rows.append(builder.load(builder.bitcast(ptr, vf.as_pointer()), align=4))
            zip_ = ir.Constant(ir.VectorType(ir.IntType(32), 2 * lanes),
                               [j // 2 + (lanes if j % 2 else 0) for j in range(2 * lanes)])
            word = _to_bf16_words(builder, builder.shuffle_vector(rows[0], rows[1], zip_))   # r[0], r+1[0], r[1], ...
            ptr = cgutils.get_item_pointer(context, builder, dst_t, dst_a, [k_v, q_v], wraparound=False)
            builder.store(word, builder.bitcast(ptr, vi.as_pointer()), align=4)
            return context.get_dummy_value()
        return types.void(src, types.intp, types.intp, dst, types.intp, types.intp), codegen
    return intrinsic(pair_rows)


# dst[k, q + j] = the bf16 pair src[r, c + j], src[r + 1, c + j] for j < 16 or 8 (the panels of a
# (K, N) operand: two rows of the source are two consecutive k); no bounds checks.
pair_rows16_bf16, pair_rows8_bf16 = _pair_rows(16), _pair_rows(8)
