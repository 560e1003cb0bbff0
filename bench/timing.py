"""In-process timing for `fastfcnn bench`: per-phase step time against this machine's sgemm,
epochs, prediction, the fixed cost of a step (and the parallel regions it opens), and the summary
of a thread-count sweep. Everything is interleaved (thread count after thread count, engine after
engine, phase after phase, repeat after repeat) and reported as a median."""
import time

import numpy as np

from . import common

PHASE_SECONDS = 0.25       # target wall time of one timed batch of phase sequences
QUICK_PHASE_SECONDS = 0.03
# Pause before timing another engine: OpenBLAS and OpenMP worker threads spin for a while after
# their last call, and those spinning threads would steal the cores from the next engine.
SETTLE_SECONDS = 0.5


def _median(xs) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def rotated(keys, r: int) -> list:
    """The keys in order, started r places in: each round of an interleaved timing visits the
    contenders in another order, so other load that recurs with the period of a round (on a shared
    machine: another job's loop) does not land on the same contender every time."""
    keys = list(keys)
    r %= max(len(keys), 1)
    return keys[r:] + keys[:r]


def time_phases(phase_sets: dict, repeats: int, seconds: float, before: dict | None = None) -> dict:
    """Interleaved per-call timing of several dicts of phases (as from common.step_phases).

    phase_sets: label -> {name: (fn, flops)}. Each repeat runs, label after label (in the order
    `rotated` gives that repeat), every phase of a set `number` times in step order.
    before: label -> callable run before each of that label's turns (e.g. setting its thread
    count). Returns label -> {name: seconds per call in the repeat where that phase ran fastest}.

    The fastest rather than the median: on a shared machine another job only ever adds time, and
    it comes in bursts of seconds that can land on one label's turns in most repeats (the gather
    and update of a bf16 and an fp32 step, the same kernels, then differ 2x).
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
    for r in range(repeats):
        for label in rotated(phase_sets, r):
            phases = phase_sets[label]
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
    return {label: {name: min(v) for name, v in s.items()} for label, s in samples.items()}


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


CEILING_SIZE = 1024


def measure_ceiling(counts, log, reps: int = 15) -> dict:
    """GFLOP/s of one CEILING_SIZE^3 float32 np.matmul (OpenBLAS sgemm) at each thread count, median
    of reps: the machine's practical peak, which a whole epoch's GFLOP/s is measured against."""
    log(f"{CEILING_SIZE}^3 np.matmul at each thread count")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((CEILING_SIZE, CEILING_SIZE), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    gflops = {}
    for n in counts:
        use_threads(n)
        np.matmul(a, b, out=out)                 # warm-up: BLAS threads started, pages touched
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - t0)
        gflops[str(n)] = 2 * CEILING_SIZE ** 3 / _median(times) / 1e9
    return gflops


def use_threads(n: int, torch_trainer=None) -> None:
    """Run the kernels, NumPy's BLAS (and PyTorch) on n threads from now on."""
    from fastfcnn.engine import set_threads
    set_threads(n)
    if torch_trainer is not None:
        torch_trainer.set_threads(n)


def bench_net(net: str, data, engines, repeats: int, quick: bool, counts, log, peers: Peers | None = None) -> dict:
    """All in-process measurements of a bench net (common.net_config) at each thread count in `counts`
    (interleaved: every repeat runs every count and engine in turn); returns count -> result."""
    counts = [counts] if isinstance(counts, int) else list(counts)
    trainers = {e: common.make_trainer(net, e, data) for e in engines}
    any_trainer = trainers[engines[0]]
    torch_trainer = None
    if peers is not None and peers.torch is not None:
        torch_trainer = peers.torch.TorchTrainer(any_trainer, counts[0])
    jax_workers = peers.jax_workers if peers is not None else {}
    switch = {n: (lambda n=n: use_threads(n, torch_trainer)) for n in counts}
    results = {n: {**common.net_config(net),
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
    seconds = time_phases(phase_sets, max(repeats, 5), QUICK_PHASE_SECONDS if quick else PHASE_SECONDS, before)
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
    for r in range(repeats):
        for (n, e) in rotated(epoch_fns, r):
            fn = epoch_fns[(n, e)]
            switch[n]()
            time.sleep(SETTLE_SECONDS)
            times[(n, e)].append(fn())
    n_images = len(any_trainer.train_idx)
    for (n, e), ts in times.items():
        r = results[n]["engines"].setdefault(e, {})
        r["epoch_seconds"] = ts
        r["epoch_seconds_median"] = _median(ts)
        r["epoch_seconds_per_50k"] = _median(ts) * common.N_TRAIN / n_images
        # other load on a shared machine only adds time: the fastest epoch is the closest to the
        # engine's own speed when the median is disturbed
        r["epoch_seconds_fastest_per_50k"] = min(ts) * common.N_TRAIN / n_images
        r["epoch_gflops"] = results[n]["epoch_gflop"] / _median(ts)

    log(f"[{net}] predict")
    from fastfcnn import network
    x_test = data.x_test
    for n in counts:
        switch[n]()
        for t in trainers.values():              # warm-up (compiles the softmax kernel)
            network.predict_proba(t.E, t.model, x_test[:300])
    ptimes = {(n, e): [] for n in counts for e in trainers}
    for r in range(repeats):
        for (n, e) in rotated(ptimes, r):
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
