"""The one place that decides how every kernel is compiled.

FASTMATH lets LLVM reassociate and contract float32 sums so reductions vectorise into packed FMAs,
but leaves out `nnan`/`ninf`: a diverging run must still produce NaN/inf that the trainer can see.

Vector width: on CPUs with AVX-512, LLVM's tuning still prefers 256-bit vectors (older Xeons lower
their clock for 512-bit code). On this project's bench machine (Xeon, AVX-512) 512-bit FMAs make a
training step 8 % faster on both bench nets, so NUMBA_CPU_FEATURES is set to the host's features
plus "-prefer-256-bit" unless you set it yourself. The JIT cache is keyed by the feature string.

SLP vectoriser: Numba leaves it off by default; NUMBA_SLP_VECTORIZE defaults to 1 here, as the
kernels were tuned with it. The JIT cache does not record this setting: after running with
NUMBA_SLP_VECTORIZE=0, delete the __pycache__ folders of kernels/ to get the fast code back.

Both are set in os.environ (so they also reach child processes, and survive Numba re-reading its
configuration whenever a NUMBA_* variable changes), then Numba's configuration is reloaded. This
must happen before Numba first compiles, which is why it happens on import.
"""
import functools
import hashlib
import os
import types

import llvmlite.binding
import numba
import numba.core.config
import numba.np.ufunc.parallel
from numba.core.caching import CacheImpl, InTreeCacheLocator, UserProvidedCacheLocator

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

USER_CPU_FEATURES = os.environ.get("NUMBA_CPU_FEATURES")     # None: not chosen by the user
USER_SLP_VECTORIZE = os.environ.get("NUMBA_SLP_VECTORIZE")


def wide_vector_features(host_features) -> str | None:
    """The feature string that lets LLVM use 512-bit vectors, or None where there is no AVX-512."""
    if not host_features.get("avx512f"):
        return None
    return host_features.flatten() + ",-prefer-256-bit"


if USER_CPU_FEATURES is None:
    try:
        wide = wide_vector_features(llvmlite.binding.get_host_cpu_features())
    except RuntimeError:                    # LLVM cannot read this host's features: keep the default
        wide = None
    if wide is not None:
        os.environ["NUMBA_CPU_FEATURES"] = wide
    AVX512 = wide is not None
else:
    AVX512 = "+avx512f" in USER_CPU_FEATURES.split(",")
# AVX512: the kernels are compiled for AVX-512 (32 vector registers), which picks the register
# tile of the matrix products (kernels/matmul.py).
os.environ.setdefault("NUMBA_SLP_VECTORIZE", "1")
numba.core.config.reload_config()


# Numba keys the JIT cache of a function by a hash of its own source file, so a kernel whose helpers
# (inlined from another file: the register tiles, the transposes, the bf16 packing compiled into
# matmul.py's _gemm_op source) changed would load stale machine code. For the files of kernels/ the
# key is a hash of all of them: editing any kernel recompiles every kernel, and never runs old code.
KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _files_hash(stamps: tuple) -> bytes:
    digest = hashlib.sha256()
    for name, _, _ in stamps:
        with open(os.path.join(KERNELS_DIR, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.digest()


class _KernelsStamp:
    def get_source_stamp(self):
        stamps = []
        for name in sorted(os.listdir(KERNELS_DIR)):
            if name.endswith(".py"):
                st = os.stat(os.path.join(KERNELS_DIR, name))
                stamps.append((name, st.st_mtime, st.st_size))
        return _files_hash(tuple(stamps))

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != KERNELS_DIR:
            return None
        return super().from_function(py_func, py_file)


class _KernelsInTree(_KernelsStamp, InTreeCacheLocator):
    pass


class _KernelsUserDir(_KernelsStamp, UserProvidedCacheLocator):     # NUMBA_CACHE_DIR set
    pass


CacheImpl._locator_classes[:0] = [_KernelsUserDir, _KernelsInTree]


def kernel(fn):
    """Compile `fn` as a parallel, cached, fastmath Numba kernel."""
    return numba.njit(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")(fn)


def serial_kernel(fn):
    """Compile a helper called from inside kernels (inlined by LLVM; no parallel region of its own)."""
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")(fn)


def variant(fn, name, **swap):
    """A copy of the Python function `fn` named `name` whose global names in `swap` mean other
    objects: one kernel source compiled again with other helpers (kernels/bf16.py uses it for the
    bf16 products). The name gives the copy its own JIT cache files."""
    names = dict(fn.__globals__)
    names.update(swap)
    copy = types.FunctionType(fn.__code__, names, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    copy.__module__ = fn.__module__
    return copy


# Below this much work (elements touched) a call runs serially: forking and joining the thread
# pool costs a few microseconds, more than a bias update or the loss of a 10-class batch takes.
PARALLEL_MIN_WORK = 16384


_pool_size = None


def num_threads() -> int:
    """numba.get_num_threads(), for the layer functions that pass it to their kernels every call.

    Numba's own takes a lock on every call to make sure its thread pool is started (about 0.5 us,
    as much as the rest of a small product's Python); once the pool is up, its C function alone
    answers (same value: it is what numba.get_num_threads returns), and if a Numba release renames
    it, numba.get_num_threads answers instead."""
    global _pool_size
    if _pool_size is None:
        threads = numba.get_num_threads()          # starts the pool
        _pool_size = getattr(numba.np.ufunc.parallel, "_get_num_threads", None) or numba.get_num_threads
        return threads
    return _pool_size()


def sized_kernel(work):
    """Compile `fn` as a parallel kernel and as a serial one from the same source (prange runs as
    range), and call the serial one when work(*args) < PARALLEL_MIN_WORK. Which one runs depends
    on the shapes alone, so results stay identical run to run; `call.parallel` and `call.serial`
    are the two compiled functions."""
    def wrap(fn):
        parallel = kernel(fn)
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                  fn.__closure__)
        twin.__qualname__ = fn.__qualname__ + "_serial"      # its own JIT cache files
        serial = numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")(twin)

        @functools.wraps(fn)
        def call(*args):
            if work(*args) >= PARALLEL_MIN_WORK:
                return call.parallel(*args)
            return call.serial(*args)

        call.parallel, call.serial = parallel, serial
        return call
    return wrap
