"""Choosing the implementation a run uses: the Numba kernels or their NumPy reference."""
import numba

from .errors import UserError

ENGINES = ("numba", "numpy")


def get_engine(name: str):
    """The module whose functions a run calls: fastfcnn.kernels or fastfcnn.reference."""
    if name == "numba":
        from . import kernels
        return kernels
    if name == "numpy":
        from . import reference
        return reference
    raise UserError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


def max_threads() -> int:
    return numba.config.NUMBA_NUM_THREADS


def set_threads(threads: int | None) -> int:
    """Use `threads` threads (None: all) in Numba kernels and, when threadpoolctl is installed,
    in NumPy's BLAS; returns the count in force."""
    n = max_threads() if threads is None else threads
    if not 1 <= n <= max_threads():
        raise UserError(f"--threads must be between 1 and {max_threads()} on this machine, got {n}")
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n
    threadpool_limits(n, user_api="blas")
    return n
