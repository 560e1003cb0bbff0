"""`fastfcnn bench`: epoch time, per-phase step time, GFLOP/s against this machine's sgemm, JIT
compile and start-up time, and peak memory, for the numba and numpy engines (and PyTorch on the CPU
when it is installed).

Everything timed in-process is interleaved (engine after engine, phase after phase, repeat after
repeat) and reported as a median, so a noisy shared machine skews all contenders alike. Compile
time, start-up time and peak memory are measured in fresh subprocesses (`python -m
fastfcnn.bench.run probe ...`).
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


def time_phases(phase_sets: dict, repeats: int, seconds: float) -> dict:
    """Interleaved per-call timing of several dicts of phases (as from common.step_phases).

    phase_sets: label -> {name: (fn, flops)}. Each repeat runs, label after label, every phase of a
    set `number` times in step order. Returns label -> {name: median seconds per call}.
    """
    for phases in phase_sets.values():          # warm-up: compile and fill the workspaces
        for fn, _ in phases.values():
            fn()
    numbers = {}
    for label, phases in phase_sets.items():
        t0 = time.perf_counter()
        for fn, _ in phases.values():
            fn()
        numbers[label] = max(1, int(seconds / max(time.perf_counter() - t0, 1e-6)))
    samples = {label: {name: [] for name in phases} for label, phases in phase_sets.items()}
    for _ in range(repeats):
        for label, phases in phase_sets.items():
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


def bench_net(net: str, data, engines, repeats: int, quick: bool, threads: int, log) -> dict:
    """All in-process measurements of one of common.NETS."""
    trainers = {e: common.make_trainer(net, e, data) for e in engines}
    any_trainer = trainers[engines[0]]
    contenders = dict(trainers)
    torch_trainer = None
    from . import torch_epoch
    if torch_epoch.available():
        torch_trainer = torch_epoch.TorchTrainer(any_trainer, threads)
    result = {"hidden": common.NETS[net]["hidden"], "batch_size": common.NETS[net]["batch_size"],
              "layers": [list(s) for s in common.layer_shapes(any_trainer)],
              "epoch_gflop": common.epoch_flops(any_trainer) / 1e9, "engines": {}}

    log(f"[{net}] phases")
    phase_sets = {e: common.step_phases(t) for e, t in trainers.items()}
    phase_sets["sgemm"] = common.sgemm_phases(any_trainer)
    seconds = time_phases(phase_sets, max(repeats, 3), QUICK_PHASE_SECONDS if quick else PHASE_SECONDS)
    sgemm = _matmul_summary(phase_sets["sgemm"], seconds["sgemm"])
    result["sgemm"] = {"phases_ms": {k: 1e3 * v for k, v in seconds["sgemm"].items()}, **sgemm}
    for e in engines:
        mm = _matmul_summary(phase_sets[e], seconds[e])
        result["engines"][e] = {
            "phases_ms": {k: 1e3 * v for k, v in seconds[e].items()},
            "step_ms": 1e3 * sum(seconds[e].values()),
            "matmul_ms": mm["ms"], "matmul_gflops": mm["gflops"],
            "matmul_pct_of_sgemm": 100 * mm["gflops"] / sgemm["gflops"],
        }

    log(f"[{net}] epochs")
    epoch_fns = {e: (lambda t=t: _timed(common.train_epoch, t)) for e, t in contenders.items()}
    if torch_trainer is not None:
        epoch_fns["torch"] = torch_trainer.epoch
    for fn in epoch_fns.values():               # warm-up epoch (compiles, faults pages in)
        fn()
    times = {e: [] for e in epoch_fns}
    for _ in range(repeats):
        for e, fn in epoch_fns.items():
            time.sleep(SETTLE_SECONDS)
            times[e].append(fn())
    n = len(any_trainer.train_idx)
    for e, ts in times.items():
        r = result["engines"].setdefault(e, {})
        r["epoch_seconds"] = ts
        r["epoch_seconds_median"] = _median(ts)
        r["epoch_seconds_per_50k"] = _median(ts) * common.N_TRAIN / n
        r["epoch_gflops"] = result["epoch_gflop"] / _median(ts)

    log(f"[{net}] predict")
    from fastfcnn import network
    x_test = data.x_test
    for t in trainers.values():                  # warm-up (compiles the softmax kernel)
        network.predict_proba(t.E, t.model, x_test[:300])
    ptimes = {e: [] for e in trainers}
    for _ in range(repeats):
        for e, t in trainers.items():
            time.sleep(SETTLE_SECONDS)
            ptimes[e].append(_timed(network.predict_proba, t.E, t.model, x_test))
    for e, ts in ptimes.items():
        result["engines"][e]["predict_seconds_per_10k"] = _median(ts) * 10_000 / len(x_test)
    med = {e: result["engines"][e]["epoch_seconds_median"] for e in times}
    result["speedup"] = {f"numba_vs_{e}": med[e] / med["numba"] for e in med if e != "numba" and "numba" in med}
    return result


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
# The command

def run(nets, threads: int, data_dir: Path | None, quick: bool, repeats: int | None, log) -> dict:
    from fastfcnn.engine import set_threads
    threads = set_threads(threads)
    n_train = QUICK_TRAIN if quick else common.N_TRAIN
    repeats = repeats or (1 if quick else 3)
    if data_dir is not None:
        from fastfcnn.data import load_cifar10
        data = load_cifar10(data_dir, download=False)
        if quick:
            data.x_train, data.y_train = data.x_train[:n_train], data.y_train[:n_train]
        source = str(data_dir)
    else:
        data = common.synthetic_cifar(n_train, n_test=1_000 if quick else 10_000)
        source = "synthetic"
    from fastfcnn.engine import versions
    from . import torch_epoch
    report = {"threads": threads, "quick": quick, "repeats": repeats, "data": source,
              "n_train": int(len(data.y_train)), "versions": versions(), "nets": {}}
    if torch_epoch.available():
        import torch
        report["versions"]["torch"] = torch.__version__
    for net in nets:
        report["nets"][net] = bench_net(net, data, list(ENGINES), repeats, quick, threads, log)
    data_args = {"threads": threads, "n_train": n_train,
                 "data_dir": None if data_dir is None else str(data_dir)}
    report["startup"] = startup_and_memory(data_args, quick, log)
    return report


def render(report: dict, console) -> None:
    from rich.table import Table
    for net, r in report["nets"].items():
        engines = list(r["engines"])
        t = Table(title=f"{net} net {'-'.join(map(str, [r['layers'][0][1]] + [l[2] for l in r['layers']]))}, "
                        f"batch {r['batch_size']}, {report['threads']} threads, {report['data']} data "
                        f"({report['n_train']} images)")
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
    s = report["startup"]
    console.print(f"JIT compile (cold cache): {s['compile_seconds']:.1f} s; start to first step: "
                  f"{s['cold_start_to_first_step_seconds']:.1f} s cold, "
                  f"{s['warm_start_to_first_step_seconds']:.2f} s warm; peak RSS {s['peak_rss_mb']:.0f} MB "
                  f"({s['peak_rss_run']})", highlight=False)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "probe":
    print(json.dumps(_probe_main(sys.argv[2], json.loads(sys.argv[3]))))
