"""The same net, loss and optimizer in JAX on the CPU: an optional yardstick for `fastfcnn bench`.

One jit-compiled function is the whole training step: gather the batch from the training set
already on the device, normalise it, forward, softmax cross-entropy, backward (jax.grad) and SGD
with momentum (weight decay on the weights only, Nesterov when the config says so), with the same
initial weights, batch size and learning rate as the fastfcnn Trainer it mirrors, over the same
images (the last batch of an epoch may be short, as in Trainer.run).

JAX is never a dependency of fastfcnn: available() says whether it can be imported, and the bench
skips it otherwise. XLA sizes its thread pool once per process from the CPUs the process may run
on, so `fastfcnn bench` runs JAX in a worker subprocess per thread count, confined to that many
CPUs (`python -m fastfcnn.bench.jax_epoch worker THREADS DATA_JSON`, JSON lines on stdin/stdout).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def available() -> bool:
    try:
        import jax  # noqa: F401
    except Exception:      # not installed, or a broken install (jaxlib missing): skip it either way
        return False
    return True


class JaxTrainer:
    """Mirror of a fastfcnn Trainer (as TorchTrainer in torch_epoch.py)."""

    def __init__(self, trainer):
        import jax
        import jax.numpy as jnp

        self.jax = jax
        cfg, m = trainer.cfg, trainer.model
        cpu = jax.devices("cpu")[0]
        put = lambda a: jax.device_put(a, cpu)           # noqa: E731
        self.params = [(put(np.asarray(w, np.float32)), put(np.asarray(b, np.float32)))
                       for w, b in zip(m.weights, m.biases)]
        self.velocity = [(jnp.zeros_like(w), jnp.zeros_like(b)) for w, b in self.params]
        mean, inv_std = (put(np.asarray(a, np.float32)) for a in trainer.x_norm)
        self.x = put(trainer.data.x_train)                # uint8, once: the data lives on the device
        self.y = put(trainer.data.y_train.astype(np.int32))
        self.train_idx = trainer.train_idx
        self.batch = trainer.ws.capacity
        self.rng = np.random.default_rng(cfg.seed)
        lr, mu, wd, nesterov = np.float32(cfg.lr), np.float32(cfg.momentum), np.float32(cfg.weight_decay), cfg.nesterov
        last = len(self.params) - 1

        def loss_fn(params, xb, yb):
            h = (xb.astype(jnp.float32) - mean) * inv_std
            for l, (w, b) in enumerate(params):
                h = h @ w.T + b
                if l < last:
                    h = jax.nn.relu(h)
            logp = jax.nn.log_softmax(h)
            return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

        def step(params, velocity, x, y, order, start, size):
            idx = jax.lax.dynamic_slice(order, (start,), (size,))
            grads = jax.grad(loss_fn)(params, x[idx], y[idx])
            new_p, new_v = [], []
            for (w, b), (vw, vb), (gw, gb) in zip(params, velocity, grads):
                out_p, out_v = [], []
                for p, v, g, decay in ((w, vw, gw, wd), (b, vb, gb, np.float32(0))):
                    g = g + decay * p
                    v = mu * v + g
                    out_p.append(p - lr * (g + mu * v if nesterov else v))
                    out_v.append(v)
                new_p.append(tuple(out_p))
                new_v.append(tuple(out_v))
            return new_p, new_v

        self._step = jax.jit(step, static_argnames=("size",), donate_argnums=(0, 1))
        self._put = put

    def _run(self, order, starts_sizes) -> None:
        p, v = self.params, self.velocity
        for start, size in starts_sizes:
            p, v = self._step(p, v, self.x, self.y, order, start, size=size)
        self.jax.block_until_ready(p)
        self.params, self.velocity = p, v

    def epoch(self) -> float:
        """Seconds for one pass over the training split (the permutation is put on the device
        before the clock starts, as TorchTrainer makes its index tensor first)."""
        order = self._put(self.rng.permutation(self.train_idx).astype(np.int32))
        n, b = len(self.train_idx), self.batch
        t0 = time.perf_counter()
        self._run(order, [(s, min(b, n - s)) for s in range(0, n, b)])
        return time.perf_counter() - t0

    def step_seconds(self, steps: int) -> list:
        """Seconds of each of `steps` single steps (each one waited for): the fixed cost of a step
        when the batch is tiny."""
        order = self._put(self.rng.permutation(self.train_idx).astype(np.int32))
        n, b = len(self.train_idx), self.batch
        out = []
        for s in range(steps):
            start = (s * b) % max(n - b + 1, 1)
            t0 = time.perf_counter()
            self._run(order, [(start, b)])
            out.append(time.perf_counter() - t0)
        return out


# ---------------------------------------------------------------------------------------------
# The worker: one process per thread count

OVERHEAD = "overhead"    # the net name the worker takes for common.overhead_trainer (seed net, batch 1)

def confine(threads: int) -> list:
    """Let this process run on `threads` of the CPUs it may use now (the lowest-numbered ones);
    returns them. Must run before JAX starts its thread pool."""
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    return cpus


def _worker(threads: int, data_args: dict) -> None:
    confine(threads)
    from . import common
    if data_args.get("data_dir"):
        from fastfcnn.data import load_cifar10
        data = load_cifar10(data_args["data_dir"], download=False)
        n = data_args.get("n_train")
        if n:
            data.x_train, data.y_train = data.x_train[:n], data.y_train[:n]
    else:
        data = common.synthetic_cifar(data_args["n_train"], n_test=data_args.get("n_test", 1000))
    import jax
    trainers = {}
    reply = lambda obj: print(json.dumps(obj), flush=True)          # noqa: E731
    reply({"ready": True, "jax": jax.__version__, "cpus": sorted(os.sched_getaffinity(0))})
    for line in sys.stdin:
        req = json.loads(line)
        try:
            net = req.get("net")
            if req["cmd"] == "setup":
                trainer = (common.overhead_trainer("numpy", data) if net == OVERHEAD
                           else common.make_trainer(net, "numpy", data))
                jt = trainers[net] = JaxTrainer(trainer)
                t0 = time.perf_counter()
                if net == OVERHEAD:
                    jt.step_seconds(3)                # compiles the step
                else:
                    jt.epoch()                        # compiles both batch shapes, faults pages in
                reply({"ok": True, "warmup_seconds": time.perf_counter() - t0})
            elif req["cmd"] == "epoch":
                reply({"ok": True, "seconds": trainers[net].epoch()})
            elif req["cmd"] == "steps":
                reply({"ok": True, "seconds": trainers[net].step_seconds(int(req["steps"]))})
            elif req["cmd"] == "quit":
                return
            else:
                reply({"ok": False, "error": f"unknown command {req['cmd']!r}"})
        except Exception as e:       # report it to the parent rather than die silently
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


class JaxWorker:
    """The parent's handle on one worker subprocess (threads CPUs)."""

    def __init__(self, threads: int, data_args: dict, env: dict | None = None):
        self.threads = threads
        self.stderr = tempfile.TemporaryFile("w+")     # a pipe nobody reads could fill and stall the worker
        self.proc = subprocess.Popen([sys.executable, "-m", "fastfcnn.bench.jax_epoch", "worker", str(threads),
                                      json.dumps(data_args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)
        hello = self._read()
        self.version, self.cpus = hello["jax"], hello["cpus"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.stderr.seek(0)
            err = self.stderr.read()
            raise RuntimeError(f"the JAX worker ({self.threads} threads) stopped:\n{err[-3000:]}")
        return json.loads(line)

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if not out.get("ok"):
            raise RuntimeError(f"the JAX worker ({self.threads} threads) failed: {out.get('error')}")
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "worker":
    _worker(int(sys.argv[2]), json.loads(sys.argv[3]))
