"""A software prefetch for Numba kernels: LLVM's llvm.prefetch intrinsic, which Numba does not expose."""
from llvmlite import ir
from llvmlite.binding import llvm_version_info
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, i, j):
    """Ask the CPU to bring the cache line holding arr[i, j] (a 2-D array) into L2, without
    waiting for it (x86: prefetcht1). A hint only: it never faults, even out of bounds."""
    sig = types.void(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]], wraparound=False)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        # the intrinsic is named after its pointer type: "p0" once LLVM's pointers are opaque (LLVM
        # 17 and later), "p0f32" and the like before
        suffix = "p0" if llvm_version_info[0] >= 17 else ptr.type.intrinsic_name
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch." + suffix)
        # read (0), locality 2 (keep in L2 and up), data cache (1)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
