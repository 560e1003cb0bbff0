"""Register tiles written as LLVM vector IR: the micro-kernel of the outer-product products.

A tile computes out[i:i+OM, j:j+ON] (+)= pa[:kn].T @ pb[:kn] from panels pa (KC, OM) and
pb (KC, ON), packed, or strided views of the operands read in place (OM rows of the left one, ON
columns of the right one: kernels/matmul._reads_a, _reads_b): per step of k, ON/lanes vector loads
of pb, OM broadcasts of one element of pa, and OM x ON/lanes multiply-adds into accumulators that
stay in vector registers. Numba has no vector types, so the tiles are intrinsics that emit the
vector IR themselves; register allocation is then not left to LLVM's SLP vectoriser, which reached
about 60 % of this rate with AVX2. Two kinds:

- float32 FMA (`fma_tile`): 8x32 for AVX-512 (16 zmm accumulators of the 32 registers) and 6x16
  for AVX2 (12 ymm accumulators, two loads and a broadcast: 15 of the 16 registers; an 8x32 tile
  would spill there).
- bfloat16 pairs (kernels/bf16.py), through `vdpbf16ps`.
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


def register_tile(om: int, on: int, lanes: int, load_b, broadcast_a, madd):
    """An intrinsic tile(pa, pb, out, i, j, kn, accumulate) of om x on outputs in vectors of lanes
    float32 accumulators, added to out[i:i+om, j:j+on] if accumulate, else stored there. The
    element type of pa and pb is the kind's: load_b(builder, ptr) loads the vector of pb at ptr,
    broadcast_a(builder, ptr) the element of pa at ptr, and madd(builder, acc, a, b) returns acc
    plus their products. The rows of pb and out must be contiguous; pa and pb are read through their
    strides (C-ordered packed panels, or views of the operands read in place). No bounds checks."""
    nv = on // lanes

    @intrinsic
    def tile(typingctx, pa, pb, out, i, j, kn, accumulate):
        sig = types.void(pa, pb, out, types.intp, types.intp, types.intp, types.boolean)

        def codegen(context, builder, signature, args):
            pa_t, pb_t, out_t = signature.args[:3]
            pa_a, pb_a, out_a = (context.make_array(t)(context, builder, v) for t, v in zip(signature.args[:3], args))
            i_v, j_v, kn_v, acc_flag = args[3:7]
            i64 = ir.IntType(64)
            vf = ir.VectorType(ir.FloatType(), lanes)
            # accumulators live in allocas that LLVM promotes to registers (SROA/mem2reg)
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vf, None)) for _ in range(nv)] for _ in range(om)]
            zero = ir.Constant(i64, 0)
            with cgutils.for_range(builder, kn_v) as loop:
                rb = cgutils.get_item_pointer(context, builder, pb_t, pb_a, [loop.index, zero], wraparound=False)
                bv = [load_b(builder, builder.gep(rb, [ir.Constant(i64, lanes * v)])) for v in range(nv)]
                for r in range(om):
                    xa = broadcast_a(builder, cgutils.get_item_pointer(context, builder, pa_t, pa_a,
                                                                      [loop.index, ir.Constant(i64, r)],
                                                                      wraparound=False))
                    for v in range(nv):
                        builder.store(madd(builder, builder.load(acc[r][v]), xa, bv[v]), acc[r][v])
            for r in range(om):
                row = builder.add(i_v, ir.Constant(i_v.type, r))
                for v in range(nv):
                    col = builder.add(j_v, ir.Constant(j_v.type, lanes * v))
                    dst = builder.bitcast(cgutils.get_item_pointer(context, builder, out_t, out_a, [row, col],
                                                                   wraparound=False), vf.as_pointer())
                    with builder.if_then(acc_flag):
                        builder.store(builder.fadd(builder.load(acc[r][v]), builder.load(dst, align=4)), acc[r][v])
                    builder.store(builder.load(acc[r][v]), dst, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def splat(builder, x, vector_type):
    """The scalar x in every lane of vector_type."""
    lanes = vector_type.count
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(vector_type, None), x, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, None), ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))


def fma_tile(om: int, on: int, lanes: int):
    """The float32 tile: packed panels of float32, `llvm.fma` on <lanes x float>."""
    vf = ir.VectorType(ir.FloatType(), lanes)

    def load_b(builder, ptr):
        return builder.load(builder.bitcast(ptr, vf.as_pointer()), align=4)

    def broadcast_a(builder, ptr):
        return splat(builder, builder.load(ptr, align=4), vf)

    def madd(builder, acc, a, b):
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vf, vf]), f"llvm.fma.v{lanes}f32")
        return builder.call(fma, [a, b, acc])

    return register_tile(om, on, lanes, load_b, broadcast_a, madd)


tile_8x32 = fma_tile(8, 32, 16)
tile_6x16 = fma_tile(6, 16, 8)
