"""`fastfcnn bench`: epoch time, per-phase step time, GFLOP/s against this machine's sgemm, the
fixed cost of a step (and the parallel kernels it calls), JIT compile and start-up time, and peak
memory, for the numba and numpy engines (and PyTorch and JAX on the CPU when they are installed),
at one thread count or at each of several (`--threads 1,2`).

Everything timed in-process is interleaved (thread count after thread count, engine after engine,
phase after phase, repeat after repeat) and reported as a median, so a noisy shared machine skews
all contenders alike. JAX runs in one worker subprocess per thread count (XLA sizes its thread
pool once per process), asked for its epochs in the same interleaved order. Compile time,
start-up time and peak memory are measured in fresh subprocesses (`python -m
fastfcnn.bench.probes probe ...`). `--avx2` reruns the whole command in a subprocess whose
environment masks AVX-512 for every contender (avx2_env).
"""
import os
from pathlib import Path

from . import common
# The pieces of the command, re-exported: fastfcnn/cli/bench.py and the tests import them from here.
from .probes import startup_and_memory
from .render import render, render_sweep  # noqa: F401
from .timing import (CEILING_SIZE, PHASE_SECONDS, QUICK_PHASE_SECONDS, SETTLE_SECONDS, Peers,  # noqa: F401
                     bench_net, measure_ceiling, measure_overhead, sweep_summary, time_phases, use_threads)

ENGINES = common.ENGINES
QUICK_TRAIN = 2_000


# ---------------------------------------------------------------------------------------------
# AVX2: the whole comparison with AVX-512 masked for every contender

# PyTorch (ATen's kernels, MKL, oneDNN) and OpenBLAS capped at AVX2; the kernels get an LLVM
# feature string without AVX-512 (NUMBA_CPU_FEATURES, from avx2_features) and XLA a maximum ISA.
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
            "OPENBLAS_CORETYPE": "Haswell"}
AVX2_XLA_FLAG = "--xla_cpu_max_isa=AVX2"
ISA_VARIABLE = "FASTFCNN_BENCH_ISA"      # "avx2" in the environment of an --avx2 run


def avx2_env(base: dict, cpu_features: str | None = None) -> dict:
    """The environment of an `fastfcnn bench --avx2` run: `base` with AVX-512 masked for the
    kernels (cpu_features, by default this CPU's from `python -m fastfcnn.bench.avx2_features`),
    PyTorch, OpenBLAS and XLA. It must be in place before Numba compiles, hence a subprocess."""
    if cpu_features is None:
        from .avx2_features import avx2_features
        cpu_features = avx2_features()
    env = dict(base)
    env.update(AVX2_ENV)
    env["NUMBA_CPU_FEATURES"] = cpu_features
    xla = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_cpu_max_isa")]
    env["XLA_FLAGS"] = " ".join(xla + [AVX2_XLA_FLAG])
    env[ISA_VARIABLE] = "avx2"
    return env


def isa_record() -> dict:
    """What this run was compiled for: whether it is an --avx2 run, whether the kernels use
    AVX-512, the core type OpenBLAS runs as, and the variables that decide it."""
    from fastfcnn.kernels import config
    out = {"avx2_run": os.environ.get(ISA_VARIABLE) == "avx2", "kernels_avx512": bool(config.AVX512)}
    try:
        from threadpoolctl import threadpool_info
        out["blas_architecture"] = next((i.get("architecture") for i in threadpool_info()
                                         if i.get("user_api") == "blas"), None)
    except ImportError:
        pass
    out["env"] = {k: os.environ.get(k) for k in (*AVX2_ENV, "NUMBA_CPU_FEATURES", "XLA_FLAGS") if os.environ.get(k)}
    if "NUMBA_CPU_FEATURES" in out["env"] and not out["avx2_run"]:
        out["env"].pop("NUMBA_CPU_FEATURES")     # fastfcnn.kernels.config's own default: not the user's choice
    return out


# ---------------------------------------------------------------------------------------------
# The command

def thread_counts(threads) -> list:
    """None -> [all cores]; an int -> [it]; a list -> the list without repeats (None in it: all cores)."""
    from fastfcnn.engine import max_threads
    items = threads if isinstance(threads, (list, tuple)) else [threads]
    out = []
    for t in items:
        n = max_threads() if t is None else int(t)
        if n not in out:
            out.append(n)
    return out


def threading_record() -> dict:
    from fastfcnn.engine import loadable_threading_layers, threading_layer
    return {"layer": threading_layer(), "NUMBA_THREADING_LAYER": os.environ.get("NUMBA_THREADING_LAYER"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "loadable": loadable_threading_layers()}


def run(nets, threads, data_dir: Path | None, quick: bool, repeats: int | None, log,
        overhead_steps: int | None = None, peers: bool = True, precision: str = "fp32") -> dict:
    """Every measurement, at each thread count of `threads` (an int, None for all cores, or a list).
    precision "bf16" adds the numba engine in bf16 (common.BF16) beside the float32 engines.

    The report's top level describes the first (or only) count as before: report["threads"],
    report["nets"]; report["sweep"] holds every count."""
    from fastfcnn.engine import max_threads, set_threads
    from fastfcnn.errors import UserError
    counts = thread_counts(threads)
    bad = [n for n in counts if not 1 <= n <= max_threads()]
    if bad:
        raise UserError(f"--threads must be between 1 and {max_threads()} on this machine, got {bad[0]}")
    set_threads(counts[0])                     # also checks NUMBA_THREADING_LAYER
    engines = list(ENGINES)
    if precision == "bf16":
        from fastfcnn.engine import get_engine
        get_engine("numba", "bf16")            # a CPU without AVX512_BF16: one clear error, before any timing
        engines.insert(1, common.BF16)
    n_train = QUICK_TRAIN if quick else common.N_TRAIN
    repeats = repeats or (1 if quick else 3)
    n_test = 1_000 if quick else 10_000
    if data_dir is not None:
        from fastfcnn.data import load_cifar10
        data = load_cifar10(data_dir, download=False)
        if quick:
            data.x_train, data.y_train = data.x_train[:n_train], data.y_train[:n_train]
        source = str(data_dir)
    else:
        data = common.synthetic_cifar(n_train, n_test=n_test)
        source = "synthetic"
    from fastfcnn.engine import versions
    report = {"threads": counts[0], "thread_counts": counts, "precision": precision, "quick": quick,
              "repeats": repeats, "data": source, "n_train": int(len(data.y_train)), "versions": versions(),
              "nets": {}}
    data_args = {"threads": counts[0], "n_train": int(len(data.y_train)), "n_test": n_test,
                 "data_dir": None if data_dir is None else str(data_dir)}
    peer = Peers(counts, data_args, log) if peers else None
    try:
        if peer is not None:
            report["versions"].update(peer.versions())
        ceiling = measure_ceiling(counts, log, 5 if quick else 15)
        by_count = {n: {} for n in counts}
        for net in nets:
            for n, r in bench_net(net, data, engines, repeats, quick, counts, log, peer).items():
                by_count[n][net] = r
        report["overhead"] = measure_overhead(data, counts, engines, overhead_steps or (200 if quick else 2000),
                                              log, peer, rounds=2 if quick else 5)
    finally:
        if peer is not None:
            peer.close()
    report["ceiling"] = {"size": CEILING_SIZE, "gflops": ceiling}
    for n in counts:                           # each engine's whole epoch against the 1024^3 product
        for r in by_count[n].values():
            for e in r["engines"].values():
                if "epoch_gflops" in e:
                    e["epoch_pct_of_ceiling"] = 100 * e["epoch_gflops"] / ceiling[str(n)]
    report["nets"] = by_count[counts[0]]
    report["sweep"] = sweep_summary(by_count, counts)
    report["threading"] = threading_record()
    report["isa"] = isa_record()
    if "numba" in engines:
        from fastfcnn.kernels.matmul import b_plans
        report["gemm_b_plans"] = b_plans()
    set_threads(counts[0])
    report["startup"] = startup_and_memory(data_args, quick, log)
    return report
