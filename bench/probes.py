"""Subprocess probes for `fastfcnn bench`: JIT compile time, start-up time and peak memory, each
measured in a fresh interpreter (`python -m fastfcnn.bench.probes probe KIND ARGS_JSON`, which
prints one JSON line)."""
import json
import os
import subprocess
import sys
import tempfile
import time

from . import common
from .timing import _timed


def _probe(kind: str, args: dict, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, **(env_extra or {}))
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "fastfcnn.bench.probes", "probe", kind, json.dumps(args)],
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


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "probe":
    print(json.dumps(_probe_main(sys.argv[2], json.loads(sys.argv[3]))))
