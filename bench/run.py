"""`fastfcnn bench`: epoch time, per-phase step time, GFLOP/s against this machine's sgemm, the
fixed cost of a step (and the parallel kernels it calls), JIT compile and start-up time, and peak
memory, for the numba and numpy engines (and PyTorch and JAX on the CPU when they are installed),
at one thread count or at each of several (`--threads 1,2`).

Everything timed in-process is interleaved (thread count after thread count, engine after engine,
phase after phase, repeat after repeat) and reported as a median, so a noisy shared machine skews
all contenders alike. JAX runs in one worker subprocess per thread count (XLA sizes its thread
pool once per process), asked for its epochs in the same interleaved order. Compile time,
start-up time and peak memory are measured in fresh subprocesses (`python -m
fastfcnn.bench.run probe ...`). `--avx2` reruns the whole command in a subprocess whose
environment masks AVX-512 for every contender (avx2_env).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import common

ENGINES = common.ENGINES
QUICK_TRAIN = 2_000
PHASE_SECONDS = 0.25       # target wall time of one timed batch of phase sequences
QUICK_PHASE_SECONDS = 0.03
# Pause before timing another engine: OpenBLAS and OpenMP worker threads spin for a while after
# their last call, and those spinning threads would steal the cores from the next engine.
SETTLE_SECONDS = 0.5


def _median(xs) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def time_phases(phase_sets: dict, repeats: int, seconds: float, before: dict | None = None) -> dict:
    """Interleaved per-call timing of several dicts of phases (as from common.step_phases).

    phase_sets: label -> {name: (fn, flops)}. Each repeat runs, label after label, every phase of a
    set `number` times in step order. before: label -> callable run before each of that label's
    turns (e.g. setting its thread count). Returns label -> {name: median seconds per call}.
    """
    before = before or {}
    prepare = lambda label: before.get(label, lambda: None)()     # noqa: E731
    for label, phases in phase_sets.items():    # warm-up: compile and fill the workspaces
        prepare(label)
        for fn, _ in phases.values():
            fn()
    numbers = {}
    for label, phases in phase_sets.items():
        prepare(label)
        t0 = time.perf_counter()
        for fn, _ in phases.values():
            fn()
        numbers[label] = max(1, int(seconds / max(time.perf_counter() - t0, 1e-6)))
    samples = {label: {name: [] for name in phases} for label, phases in phase_sets.items()}
    for _ in range(repeats):
        for label, phases in phase_sets.items():
            prepare(label)
            time.sleep(SETTLE_SECONDS)
            spent = dict.fromkeys(phases, 0.0)
            for _ in range(numbers[label]):
                for name, (fn, _) in phases.items():
                    t0 = time.perf_counter()
                    fn()
                    spent[name] += time.perf_counter() - t0
            for name in phases:
                samples[label][name].append(spent[name] / numbers[label])
    return {label: {name: _median(v) for name, v in s.items()} for label, s in samples.items()}


def _matmul_summary(phases: dict, seconds: dict) -> dict:
    flops = sum(f for f in (p[1] for p in phases.values()))
    t = sum(seconds[name] for name, (_, f) in phases.items() if f)
    return {"ms": 1e3 * t, "gflops": flops / t / 1e9}


class Peers:
    """The optional yardsticks: PyTorch in this process, JAX in one worker process per thread count."""

    def __init__(self, counts: list, data_args: dict, log):
        from . import jax_epoch, torch_epoch
        self.torch = torch_epoch if torch_epoch.available() else None
        self.jax_workers = {}
        if jax_epoch.available():
            for n in counts:
                log(f"JAX worker on {n} CPU{'s' if n > 1 else ''}")
                self.jax_workers[n] = jax_epoch.JaxWorker(n, data_args)

    def versions(self) -> dict:
        out = {}
        if self.torch is not None:
            import torch
            out["torch"] = torch.__version__
        if self.jax_workers:
            out["jax"] = next(iter(self.jax_workers.values())).version
        return out

    def close(self) -> None:
        for w in self.jax_workers.values():
            w.close()
        self.jax_workers = {}


def use_threads(n: int, torch_trainer=None) -> None:
    """Run the kernels, NumPy's BLAS (and PyTorch) on n threads from now on."""
    from fastfcnn.engine import set_threads
    set_threads(n)
    if torch_trainer is not None:
        torch_trainer.set_threads(n)


def bench_net(net: str, data, engines, repeats: int, quick: bool, counts, log, peers: Peers | None = None) -> dict:
    """All in-process measurements of one of common.NETS at each thread count in `counts`
    (interleaved: every repeat runs every count and engine in turn); returns count -> result."""
    counts = [counts] if isinstance(counts, int) else list(counts)
    trainers = {e: common.make_trainer(net, e, data) for e in engines}
    any_trainer = trainers[engines[0]]
    torch_trainer = None
    if peers is not None and peers.torch is not None:
        torch_trainer = peers.torch.TorchTrainer(any_trainer, counts[0])
    jax_workers = peers.jax_workers if peers is not None else {}
    switch = {n: (lambda n=n: use_threads(n, torch_trainer)) for n in counts}
    results = {n: {"hidden": common.NETS[net]["hidden"], "batch_size": common.NETS[net]["batch_size"],
                   "layers": [list(s) for s in common.layer_shapes(any_trainer)],
                   "epoch_gflop": common.epoch_flops(any_trainer) / 1e9, "engines": {}} for n in counts}
    label = lambda n, e: f"{e}@{n}"         # noqa: E731

    log(f"[{net}] phases")
    phase_sets, before = {}, {}
    for n in counts:
        for e, t in trainers.items():
            phase_sets[label(n, e)] = common.step_phases(t)
            before[label(n, e)] = switch[n]
        phase_sets[label(n, "sgemm")] = common.sgemm_phases(any_trainer)
        before[label(n, "sgemm")] = switch[n]
    seconds = time_phases(phase_sets, max(repeats, 3), QUICK_PHASE_SECONDS if quick else PHASE_SECONDS, before)
    for n in counts:
        sg_label = label(n, "sgemm")
        sgemm = _matmul_summary(phase_sets[sg_label], seconds[sg_label])
        results[n]["sgemm"] = {"phases_ms": {k: 1e3 * v for k, v in seconds[sg_label].items()}, **sgemm}
        for e in engines:
            sec = seconds[label(n, e)]
            mm = _matmul_summary(phase_sets[label(n, e)], sec)
            results[n]["engines"][e] = {
                "phases_ms": {k: 1e3 * v for k, v in sec.items()},
                "step_ms": 1e3 * sum(sec.values()),
                "matmul_ms": mm["ms"], "matmul_gflops": mm["gflops"],
                "matmul_pct_of_sgemm": 100 * mm["gflops"] / sgemm["gflops"],
            }
        if "numba" in trainers:         # the parallel kernels one full-batch step calls at this count
            switch[n]()
            t = trainers["numba"]
            batch = t.train_idx[: t.ws.capacity]
            results[n]["parallel_regions_per_step"] = common.region_counts(lambda: t.step(batch, 0.0))

    log(f"[{net}] epochs")
    epoch_fns = {}
    for n in counts:
        for e, t in trainers.items():
            epoch_fns[(n, e)] = lambda t=t: _timed(common.train_epoch, t)
        if torch_trainer is not None:
            epoch_fns[(n, "torch")] = torch_trainer.epoch
        if n in jax_workers:
            jax_workers[n].ask(cmd="setup", net=net)         # compiles, and runs a warm-up epoch
            epoch_fns[(n, "jax")] = lambda w=jax_workers[n]: w.ask(cmd="epoch", net=net)["seconds"]
    for (n, e), fn in epoch_fns.items():       # warm-up epoch (compiles, faults pages in)
        if e != "jax":
            switch[n]()
            fn()
    times = {key: [] for key in epoch_fns}
    for _ in range(repeats):
        for (n, e), fn in epoch_fns.items():
            switch[n]()
            time.sleep(SETTLE_SECONDS)
            times[(n, e)].append(fn())
    n_images = len(any_trainer.train_idx)
    for (n, e), ts in times.items():
        r = results[n]["engines"].setdefault(e, {})
        r["epoch_seconds"] = ts
        r["epoch_seconds_median"] = _median(ts)
        r["epoch_seconds_per_50k"] = _median(ts) * common.N_TRAIN / n_images
        r["epoch_gflops"] = results[n]["epoch_gflop"] / _median(ts)

    log(f"[{net}] predict")
    from fastfcnn import network
    x_test = data.x_test
    for n in counts:
        switch[n]()
        for t in trainers.values():              # warm-up (compiles the softmax kernel)
            network.predict_proba(t.E, t.model, x_test[:300])
    ptimes = {(n, e): [] for n in counts for e in trainers}
    for _ in range(repeats):
        for (n, e) in ptimes:
            switch[n]()
            time.sleep(SETTLE_SECONDS)
            t = trainers[e]
            ptimes[(n, e)].append(_timed(network.predict_proba, t.E, t.model, x_test))
    for (n, e), ts in ptimes.items():
        results[n]["engines"][e]["predict_seconds_per_10k"] = _median(ts) * 10_000 / len(x_test)
    for n in counts:
        med = {e: r["epoch_seconds_median"] for e, r in results[n]["engines"].items()}
        results[n]["speedup"] = {f"numba_vs_{e}": med[e] / med["numba"] for e in med if e != "numba" and "numba" in med}
    return results


def measure_overhead(data, counts, engines, steps: int, log, peers: Peers | None = None, rounds: int = 5) -> dict:
    """The fixed cost of a training step: the seed net at a batch of one image, each engine at
    each thread count, `steps` steps each in `rounds` interleaved rounds, median seconds per step. Also
    the parallel kernels one such step calls (the parallel regions it opens)."""
    log("per-step overhead (seed net, batch 1)")
    trainers = {e: common.overhead_trainer(e, data) for e in engines}
    torch_trainer = None
    if peers is not None and peers.torch is not None:
        torch_trainer = peers.torch.TorchTrainer(common.overhead_trainer(engines[0], data), counts[0])
    jax_workers = peers.jax_workers if peers is not None else {}
    per_round = max(1, steps // rounds)

    def steps_of(t):
        order = t.train_idx
        def run():
            out = []
            for s in range(per_round):
                i = s % len(order)
                idx = order[i:i + 1]
                t0 = time.perf_counter()
                t.step(idx, 1e-6)
                out.append(time.perf_counter() - t0)
            return out
        return run

    fns = {}
    for n in counts:
        for e, t in trainers.items():
            fns[(n, e)] = steps_of(t)
        if torch_trainer is not None:
            fns[(n, "torch")] = lambda: torch_trainer.step_seconds(per_round)
        if n in jax_workers:
            from .jax_epoch import OVERHEAD
            jax_workers[n].ask(cmd="setup", net=OVERHEAD)
            fns[(n, "jax")] = lambda w=jax_workers[n]: w.ask(cmd="steps", net=OVERHEAD, steps=per_round)["seconds"]
    for (n, e), fn in fns.items():              # warm-up (compiles at batch 1)
        use_threads(n, torch_trainer)
        if e != "jax":
            fn()
    samples = {key: [] for key in fns}
    for _ in range(rounds):
        for (n, e), fn in fns.items():
            use_threads(n, torch_trainer)
            time.sleep(SETTLE_SECONDS)
            samples[(n, e)] += fn()
    step_us = {str(n): {} for n in counts}
    for (n, e), xs in samples.items():
        step_us[str(n)][e] = 1e6 * _median(xs)
    out = {"net": "seed", "batch_size": 1, "steps": rounds * per_round, "step_us": step_us}
    if "numba" in trainers:
        use_threads(counts[0], torch_trainer)
        t = trainers["numba"]
        out["parallel_regions"] = common.region_counts(lambda: t.step(t.train_idx[:1], 1e-6))
    return out


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Subprocess probes

def _probe(kind: str, args: dict, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, **(env_extra or {}))
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "fastfcnn.bench.run", "probe", kind, json.dumps(args)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench probe {kind} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = time.time() - started
    if "first_step_done" in out:
        out["start_to_first_step_seconds"] = out.pop("first_step_done") - started
    return out


def _probe_data(args: dict):
    if args.get("data_dir"):
        from fastfcnn.data import load_cifar10
        return load_cifar10(args["data_dir"], download=False)
    return common.synthetic_cifar(args["n_train"])


def _peak_rss_mb() -> float:
    """This process's own peak RSS. Not getrusage's ru_maxrss: Linux carries the parent's
    high-water mark into a child across fork + exec, so a child of a big bench process would
    report the parent's memory. VmHWM belongs to the child's own address space."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _probe_main(kind: str, args: dict) -> dict:
    """Runs in the child. 'startup': import, load data, build the seed trainer, time the first two
    steps (the first one compiles or loads every kernel). 'memory': train the seed net one epoch
    like `fastfcnn train` does (with validation and a test evaluation) and report peak RSS."""

    from fastfcnn.engine import set_threads
    set_threads(args["threads"])
    data = _probe_data(args)
    if kind == "startup":
        trainer = common.make_trainer("seed", "numba", data)
        b = trainer.ws.capacity
        steps = []
        for s in range(3):
            steps.append(_timed(trainer.step, trainer.train_idx[s * b:(s + 1) * b], 0.01))
            if s == 0:
                first_done = time.time()
        from fastfcnn import network
        t0 = time.perf_counter()
        network.evaluate(trainer.E, trainer.model, data.x_test, data.y_test)
        eval_first = time.perf_counter() - t0
        return {"first_step_seconds": steps[0], "steady_step_seconds": min(steps[1:]),
                "first_eval_seconds": eval_first, "first_step_done": first_done}
    if kind == "memory":
        from fastfcnn.network import evaluate
        from fastfcnn.config import TrainConfig
        from fastfcnn.train import Trainer
        cfg = TrainConfig(epochs=1, val_size=float(min(5000, len(data.y_train) // 10)), **common.NETS["seed"])
        trainer = Trainer(cfg, data)
        trainer.run()
        evaluate(trainer.E, trainer.model, data.x_test, data.y_test)
        return {"peak_rss_mb": _peak_rss_mb(), "n_train": int(len(data.y_train))}
    raise ValueError(kind)


def startup_and_memory(data_args: dict, quick: bool, log) -> dict:
    with tempfile.TemporaryDirectory(prefix="fastfcnn-numba-cache-") as cache:
        log("compile (cold JIT cache)")
        cold = _probe("startup", data_args, {"NUMBA_CACHE_DIR": cache})
        log("start-up (warm JIT cache)")
        warm = _probe("startup", data_args, {"NUMBA_CACHE_DIR": cache})
    if not quick:                                 # the user's own cache, warmed first
        _probe("startup", data_args)
        warm = min(warm, _probe("startup", data_args), key=lambda r: r["start_to_first_step_seconds"])
    log("peak memory")
    mem = _probe("memory", data_args)
    return {
        "compile_seconds": cold["first_step_seconds"] + cold["first_eval_seconds"]
        - warm["first_step_seconds"] - warm["first_eval_seconds"],
        "cold_start_to_first_step_seconds": cold["start_to_first_step_seconds"],
        "warm_start_to_first_step_seconds": warm["start_to_first_step_seconds"],
        "warm_first_step_seconds": warm["first_step_seconds"],
        "peak_rss_mb": mem["peak_rss_mb"],
        "peak_rss_run": f"seed net, 1 epoch + validation + test evaluation on {mem['n_train']} images",
    }


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
        overhead_steps: int | None = None, peers: bool = True) -> dict:
    """Every measurement, at each thread count of `threads` (an int, None for all cores, or a list).

    The report's top level describes the first (or only) count as before: report["threads"],
    report["nets"]; report["sweep"] holds every count."""
    from fastfcnn.engine import max_threads, set_threads
    from fastfcnn.errors import UserError
    counts = thread_counts(threads)
    bad = [n for n in counts if not 1 <= n <= max_threads()]
    if bad:
        raise UserError(f"--threads must be between 1 and {max_threads()} on this machine, got {bad[0]}")
    set_threads(counts[0])                     # also checks NUMBA_THREADING_LAYER
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
    report = {"threads": counts[0], "thread_counts": counts, "quick": quick, "repeats": repeats, "data": source,
              "n_train": int(len(data.y_train)), "versions": versions(), "nets": {}}
    data_args = {"threads": counts[0], "n_train": int(len(data.y_train)), "n_test": n_test,
                 "data_dir": None if data_dir is None else str(data_dir)}
    peer = Peers(counts, data_args, log) if peers else None
    try:
        if peer is not None:
            report["versions"].update(peer.versions())
        by_count = {n: {} for n in counts}
        for net in nets:
            for n, r in bench_net(net, data, list(ENGINES), repeats, quick, counts, log, peer).items():
                by_count[n][net] = r
        report["overhead"] = measure_overhead(data, counts, list(ENGINES), overhead_steps or (200 if quick else 2000),
                                              log, peer, rounds=2 if quick else 5)
    finally:
        if peer is not None:
            peer.close()
    report["nets"] = by_count[counts[0]]
    report["sweep"] = sweep_summary(by_count, counts)
    report["threading"] = threading_record()
    report["isa"] = isa_record()
    set_threads(counts[0])
    report["startup"] = startup_and_memory(data_args, quick, log)
    return report


def sweep_summary(by_count: dict, counts: list) -> dict:
    """Epoch time of every engine at every count, and its speed-up over its own time at the
    smallest count (1 thread when the sweep has it); "runs" has every count's full net results."""
    base = min(counts)
    epoch = {str(n): {net: {e: r["engines"][e]["epoch_seconds_per_50k"] for e in r["engines"]}
                      for net, r in by_count[n].items()} for n in counts}
    speedup = {str(n): {net: {e: epoch[str(base)][net][e] / s for e, s in engines.items() if e in epoch[str(base)][net]}
                        for net, engines in epoch[str(n)].items()} for n in counts}
    return {"threads": counts, "base_threads": base, "epoch_seconds_per_50k": epoch,
            "speedup_vs_base": speedup, "runs": {str(n): by_count[n] for n in counts}}


def render(report: dict, console) -> None:
    from rich.table import Table
    isa = report.get("isa", {})
    isa_note = ", AVX2 (AVX-512 masked)" if isa.get("avx2_run") else ""
    for net, r in report["nets"].items():
        engines = list(r["engines"])
        t = Table(title=f"{net} net {'-'.join(map(str, [r['layers'][0][1]] + [l[2] for l in r['layers']]))}, "
                        f"batch {r['batch_size']}, {_threads(report['threads'])}, {report['data']} data "
                        f"({report['n_train']} images){isa_note}")
        t.add_column("")
        for e in engines:
            t.add_column(e, justify="right")
        t.add_column("sgemm", justify="right")
        sg = r["sgemm"]
        per50k = {e: r["engines"][e]["epoch_seconds_per_50k"] for e in engines}
        t.add_row("epoch s (50k images, median)", *[f"{per50k[e]:.3f}" for e in engines], "")
        t.add_row("epoch GFLOP/s", *[f"{r['engines'][e]['epoch_gflops']:.0f}" for e in engines], "")
        t.add_row("speed-up of numba", *[f"{per50k[e] / per50k['numba']:.2f}x" for e in engines], "")
        t.add_row("predict s (10k images, median)", *[f"{r['engines'][e]['predict_seconds_per_10k']:.3f}"
                                                       if "predict_seconds_per_10k" in r["engines"][e] else ""
                                                       for e in engines], "")
        phase_names = list(r["engines"]["numba"]["phases_ms"])
        for name in phase_names:
            t.add_row(f"  {name} ms", *[f"{r['engines'][e]['phases_ms'][name]:.3f}"
                                        if "phases_ms" in r["engines"][e] else "" for e in engines], "")
        t.add_row("  step ms (sum of phases)", *[f"{r['engines'][e]['step_ms']:.3f}"
                                                if "step_ms" in r["engines"][e] else "" for e in engines], "")
        for name, ms in sg["phases_ms"].items():
            t.add_row(f"  sgemm {name} ms", *["" for _ in engines], f"{ms:.3f}")
        t.add_row("matmul GFLOP/s", *[f"{r['engines'][e]['matmul_gflops']:.0f}"
                                      if "matmul_gflops" in r["engines"][e] else "" for e in engines],
                  f"{sg['gflops']:.0f}")
        t.add_row("matmul % of sgemm", *[f"{r['engines'][e]['matmul_pct_of_sgemm']:.0f}%"
                                         if "matmul_pct_of_sgemm" in r["engines"][e] else "" for e in engines],
                  "100%")
        console.print(t)
    sweep = report.get("sweep")
    if sweep and len(sweep["threads"]) > 1:
        render_sweep(report, console)
    o = report.get("overhead")
    if o:
        base = str(report["threads"])
        per = ", ".join(f"{e} {us:.0f} µs" for e, us in o["step_us"][base].items())
        regions = o.get("parallel_regions")
        console.print(f"Per-step overhead (seed net, batch {o['batch_size']}, median of {o['steps']} steps, "
                      f"{_threads(int(base))}): {per}" + (
                          f"; one step calls {regions['parallel_kernel_calls']} parallel kernels "
                          f"(at most {regions['prange_loops_max']} parallel regions)" if regions else ""),
                      highlight=False)
    th = report.get("threading")
    if th:
        env = ", ".join(f"{k}={th[k]}" for k in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY") if th.get(k))
        console.print(f"Numba threading layer: {th['layer']} ({env or 'NUMBA_THREADING_LAYER and OMP_WAIT_POLICY unset'}; "
                      f"loadable here: {', '.join(th['loadable'])})", highlight=False)
    if isa:
        console.print(f"Instruction set: {'AVX2 run (AVX-512 masked for every contender)' if isa.get('avx2_run') else 'native'}; "
                      f"kernels {'with' if isa.get('kernels_avx512') else 'without'} AVX-512"
                      + (f", OpenBLAS as {isa['blas_architecture']}" if isa.get("blas_architecture") else ""),
                      highlight=False)
    s = report["startup"]
    console.print(f"JIT compile (cold cache): {s['compile_seconds']:.1f} s; start to first step: "
                  f"{s['cold_start_to_first_step_seconds']:.1f} s cold, "
                  f"{s['warm_start_to_first_step_seconds']:.2f} s warm; peak RSS {s['peak_rss_mb']:.0f} MB "
                  f"({s['peak_rss_run']})", highlight=False)


def _threads(n: int) -> str:
    return f"{n} thread{'' if n == 1 else 's'}"


def render_sweep(report: dict, console) -> None:
    """Epoch seconds (50k images) per net and thread count, each with its speed-up over the same
    engine at the smallest count."""
    from rich.table import Table
    sweep = report["sweep"]
    base = sweep["base_threads"]
    engines = []
    for per_net in sweep["epoch_seconds_per_50k"].values():
        for r in per_net.values():
            engines += [e for e in r if e not in engines]
    t = Table(title=f"Epoch seconds (50k images) by thread count; in brackets the speed-up over the same "
                    f"engine on {_threads(base)}")
    t.add_column("net")
    t.add_column("threads", justify="right")
    for e in engines:
        t.add_column(e, justify="right")
    for net in report["nets"]:
        for n in sweep["threads"]:
            sec = sweep["epoch_seconds_per_50k"][str(n)][net]
            up = sweep["speedup_vs_base"][str(n)][net]
            t.add_row(net, str(n), *[f"{sec[e]:.3f} ({up[e]:.2f}x)" if e in sec else "" for e in engines])
    console.print(t)
    o = report.get("overhead")
    if o:
        t = Table(title=f"Per-step overhead: seed net, batch 1, median µs of {o['steps']} steps")
        t.add_column("threads", justify="right")
        oe = []
        for per in o["step_us"].values():
            oe += [e for e in per if e not in oe]
        for e in oe:
            t.add_column(e, justify="right")
        for n in sweep["threads"]:
            per = o["step_us"][str(n)]
            t.add_row(str(n), *[f"{per[e]:.0f}" if e in per else "" for e in oe])
        console.print(t)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "probe":
    print(json.dumps(_probe_main(sys.argv[2], json.loads(sys.argv[3]))))
