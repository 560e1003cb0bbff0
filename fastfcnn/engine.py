"""Choosing the implementation a run uses: the Numba kernels or their NumPy reference.

Nothing here imports Numba unless the numba engine is asked for: `--engine numpy` runs on NumPy alone.
"""
import os

from .config import ENGINES, PRECISIONS
from .errors import UserError

# The functions whose matrix products a precision changes; every other function of an engine
# (gathering, loss, optimizer updates) runs in float32 whatever the precision.
LAYER_FUNCTIONS = ("input_linear_forward", "linear_forward", "linear_grad_params", "linear_grad_input")


def get_engine(name: str, precision: str = "fp32"):
    """What a run calls: fastfcnn.kernels or fastfcnn.reference, or for precision "bf16" the same
    with the layer functions of kernels/bf16.py or reference_bf16.py (the NumPy twin, which
    emulates bf16 anywhere)."""
    if name == "numba":
        from . import kernels as base
    elif name == "numpy":
        from . import reference as base
    else:
        raise UserError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if precision == "fp32":
        return base
    if precision != "bf16":
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "numba":
        from .kernels import bf16 as layers
        if not layers.AVAILABLE:
            raise UserError("--precision bf16 needs a CPU with AVX512_BF16 (Intel Sapphire Rapids or AMD Zen 4 "
                            "and later); this one has none, or NUMBA_CPU_FEATURES masks it. Use --precision fp32")
    else:
        from . import reference_bf16 as layers
    return MixedEngine(base, layers)


class MixedEngine:
    """An engine whose layer functions (LAYER_FUNCTIONS) come from `layers` and everything else
    from `base`."""

    def __init__(self, base, layers):
        self.base = base
        for fn in LAYER_FUNCTIONS:
            setattr(self, fn, getattr(layers, fn))

    def __getattr__(self, name):
        return getattr(self.base, name)


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
        check_threading_layer()
        numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n
    threadpool_limits(n, user_api="blas")
    return n


# What NUMBA_THREADING_LAYER accepts: a layer by name, or a property Numba picks a layer for.
THREADING_LAYERS = ("tbb", "omp", "workqueue")
THREADING_PURPOSES = ("default", "safe", "threadsafe", "forksafe")
THREADING_MODULES = {"tbb": "tbbpool", "omp": "omppool", "workqueue": "workqueue"}


def loadable_threading_layers() -> list:
    """The threading layers Numba can load in this environment (tbb needs libtbb.so.12 on the
    loader's path; omp needs the OpenMP runtime Numba's wheel links; workqueue always loads)."""
    import importlib

    from numba.np.ufunc import parallel

    found = []
    for name in THREADING_LAYERS:
        try:
            if name == "tbb":
                parallel._check_tbb_version_compatible()
            importlib.import_module(f"numba.np.ufunc.{THREADING_MODULES[name]}")
        except (ImportError, OSError, ValueError):
            continue
        found.append(name)
    return found


def check_threading_layer() -> str | None:
    """Start Numba's threading layer, turning a NUMBA_THREADING_LAYER that names no layer, or a
    layer that cannot load here (tbb without libtbb.so.12), into a UserError instead of Numba's
    multi-line ValueError at the first parallel kernel. Returns the layer in force, or None when
    the user set neither NUMBA_THREADING_LAYER nor NUMBA_THREADING_LAYER_PRIORITY (nothing is
    started then; Numba picks as usual)."""
    import sys

    import numba
    from numba.np.ufunc import parallel

    name = os.environ.get("NUMBA_THREADING_LAYER")
    if name is None and os.environ.get("NUMBA_THREADING_LAYER_PRIORITY") is None:
        return None
    chosen = str(numba.config.THREADING_LAYER).strip().lower()   # what Numba read (default: "default")
    valid = THREADING_LAYERS + THREADING_PURPOSES
    if chosen not in valid:
        raise UserError(f"NUMBA_THREADING_LAYER={name!r} is not a Numba threading layer; use one of "
                        f"{', '.join(valid)} (loadable here: {', '.join(loadable_threading_layers())})")
    try:
        parallel._launch_threads()
    except (ValueError, ImportError, OSError) as e:
        reason = " ".join(str(e).split("HINT:")[0].split()).rstrip(".")
        what = f"the {chosen} threading layer" if chosen in THREADING_LAYERS else f"a threading layer for {chosen!r}"
        detail = "" if reason.startswith("No threading layer could be loaded") else f" ({reason})"
        hint = ""
        if chosen in ("tbb", "safe"):
            hint = (f"; the tbb layer needs Intel TBB's libtbb.so.12 on the loader's path (pip install tbb, "
                    f"then LD_LIBRARY_PATH={sys.prefix}/lib)")
        setting = f"NUMBA_THREADING_LAYER={name!r}" if name is not None else "NUMBA_THREADING_LAYER_PRIORITY"
        raise UserError(f"{setting}: Numba cannot load {what} here{detail}{hint}; unset it or use one of the "
                        f"layers loadable here: {', '.join(loadable_threading_layers())}") from None
    return numba.threading_layer()


def threading_layer() -> str | None:
    """The threading layer Numba runs its parallel kernels on (None before it has started)."""
    from numba.np.ufunc import parallel
    try:
        return parallel.threading_layer()
    except ValueError:
        return None


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
