"""Choosing the implementation a run uses: the Numba kernels or their NumPy reference.

Nothing here imports Numba unless the numba engine is asked for: `--engine numpy` runs on NumPy alone.
"""
import os

from .config import ENGINES
from .errors import UserError


def get_engine(name: str):
    """The module whose functions a run calls: fastfcnn.kernels or fastfcnn.reference."""
    if name == "numba":
        from . import kernels
        return kernels
    if name == "numpy":
        from . import reference
        return reference
    raise UserError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


def max_threads(engine: str = "numba") -> int:
    """The most threads `engine` can use: Numba's pool size, or the cores this process may run on."""
    if engine == "numba":
        import numba
        return numba.config.NUMBA_NUM_THREADS
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int | None, engine: str = "numba") -> int:
    """Use `threads` threads (None: all) in the engine's kernels and, when threadpoolctl is
    installed, in NumPy's BLAS; returns the count in force."""
    top = max_threads(engine)
    n = top if threads is None else threads
    if not 1 <= n <= top:
        raise UserError(f"--threads must be between 1 and {top} on this machine, got {n}")
    if engine == "numba":
        import numba
        numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n
    threadpool_limits(n, user_api="blas")
    return n


def versions(engine: str = "numba") -> dict:
    """Versions that decide a run's numbers, read without importing Numba."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np

    from . import __version__

    try:
        numba_version = version("numba")
    except PackageNotFoundError:
        numba_version = None
    return {"fastfcnn": __version__, "numpy": np.__version__, "numba": numba_version,
            "python": platform.python_version()}
