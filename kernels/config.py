"""The one place that decides how every kernel is compiled.

FASTMATH lets LLVM reassociate and contract float32 sums so reductions vectorise into packed FMAs,
but leaves out `nnan`/`ninf`: a diverging run must still produce NaN/inf that the trainer can see.
"""
import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def kernel(fn):
    """Compile `fn` as a parallel, cached, fastmath Numba kernel."""
    return numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")(fn)


def composite(fn):
    """Compile a kernel that only chains other (parallel) kernels and has no loop of its own."""
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")(fn)


def serial_kernel(fn):
    """Compile a helper called from inside kernels (inlined by LLVM; no parallel region of its own)."""
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")(fn)
