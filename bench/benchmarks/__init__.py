"""asv benchmarks of fastfcnn: each kernel phase, a training epoch, memory, speed-up and start-up,
for the Numba kernels against the NumPy reference (engine) on the seed and wide nets (net).

Setup comes from fastfcnn.bench.common (shared with `fastfcnn bench`), imported from the commit
under test. Environment variables, read when the benchmarks are imported:
  FASTFCNN_BENCH_THREADS  threads for the Numba kernels and NumPy's BLAS (default 2, or all cores
                          if fewer), pinned in every setup so numbers are comparable over time.
  FASTFCNN_BENCH_QUICK=1  smoke mode: only the seed net, and 2,000 images for the epoch benchmarks.
"""
import functools
import os
import time

try:
    from fastfcnn.bench import common
    from fastfcnn.engine import max_threads, set_threads
except ImportError:  # a commit from before the suite: its benchmarks are skipped (n/a), not failed
    common = None

QUICK = os.environ.get("FASTFCNN_BENCH_QUICK") == "1"
NETS = ["seed"] if QUICK else ["seed", "wide"]
ENGINES = ["numba", "numpy"]
# The kernel benchmarks also time the numba engine in bf16 (--precision bf16) where the CPU has
# AVX512_BF16; elsewhere, and on commits from before it, they are skipped (n/a).
KERNEL_ENGINES = ENGINES + ["numba-bf16"]
# Images in one timed epoch: the full 50,000 for the seed net; the wide net does 5,000 (20 steps,
# ~1.5 s with numba and ~4 s with numpy on 2 cores) so that one asv run stays within minutes.
EPOCH_IMAGES = {"seed": 2_000, "wide": 2_000} if QUICK else {"seed": 50_000, "wide": 5_000}


def threads() -> int:
    default = min(2, max_threads())
    return int(os.environ.get("FASTFCNN_BENCH_THREADS", default))


@functools.cache
def data(n_images: int):
    """Synthetic CIFAR-shaped data, built once per benchmark process."""
    return common.synthetic_cifar(n_images)


def require_suite() -> None:
    """Raise NotImplementedError, which asv reports as skipped (n/a), on a commit from before
    bench/common.py."""
    if common is None:
        raise NotImplementedError("this commit has no fastfcnn.bench.common")


def require_bf16() -> None:
    """Raise NotImplementedError (skipped) where the numba engine has no bf16 here."""
    if getattr(common, "BF16", None) is None:
        raise NotImplementedError("this commit has no --precision bf16")
    from fastfcnn.kernels import bf16
    if not bf16.AVAILABLE:
        raise NotImplementedError("this CPU has no AVX512_BF16")


def trainer(net: str, engine: str, n_images: int = 50_000):
    """A ready Trainer for one of common.NETS, with threads pinned. Built once per process: asv
    re-runs a benchmark's setup before every sample."""
    require_suite()
    if engine == "numba-bf16":
        require_bf16()
    set_threads(threads())
    return _trainer(net, engine, EPOCH_IMAGES[net] if QUICK else n_images)


@functools.cache
def _trainer(net: str, engine: str, n_images: int):
    return common.make_trainer(net, engine, data(n_images))


def best_seconds(fn, min_runs: int = 3, budget: float = 0.5) -> float:
    """Fastest of at least `min_runs` calls of fn(), calling it until `budget` seconds have passed."""
    best, start, runs = float("inf"), time.perf_counter(), 0
    while runs < min_runs or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        fn()
        best, runs = min(best, time.perf_counter() - t0), runs + 1
    return best
