"""Setup shared by `fastfcnn bench` and the asv suite: the nets, synthetic data, and the pieces of
one training step as separately timeable callables."""
import numpy as np

from fastfcnn.config import TrainConfig
from fastfcnn.data import Dataset
from fastfcnn.train import Trainer

NETS = {
    "seed": {"hidden": [64, 64], "batch_size": 128},
    "wide": {"hidden": [1024, 1024], "batch_size": 256},
}
ENGINES = ("numba", "numpy")
BF16 = "numba-bf16"      # the numba engine with --precision bf16 (fastfcnn bench --precision bf16)
N_TRAIN = 50_000
FEATURES = 3072
CLASSES = 10


def engine_options(engine: str) -> dict:
    """The TrainConfig options of a bench engine label: numba, numpy or numba-bf16."""
    return {"engine": "numba", "precision": "bf16"} if engine == BF16 else {"engine": engine}


def synthetic_cifar(n_train: int = N_TRAIN, n_test: int = 1000, seed: int = 0) -> Dataset:
    """Random uint8 images and labels shaped like CIFAR-10 (no download; timing only)."""
    rng = np.random.default_rng(seed)
    return Dataset(rng.integers(0, 256, (n_train, FEATURES), dtype=np.uint8),
                   rng.integers(0, CLASSES, n_train).astype(np.int64),
                   rng.integers(0, 256, (n_test, FEATURES), dtype=np.uint8),
                   rng.integers(0, CLASSES, n_test).astype(np.int64),
                   [f"class{i}" for i in range(CLASSES)], (3, 32, 32))


def net_config(net: str) -> dict:
    """The hidden widths and batch size of a bench net: one of NETS by name, or a net of your own
    written as its hidden widths joined by '-', then '@' and the batch size: 768-768@256
    (batch 128 when '@' is left out). ValueError if it is neither."""
    if net in NETS:
        return NETS[net]
    widths, at, batch = net.partition("@")
    try:
        hidden = [int(w) for w in widths.split("-")]
        batch_size = int(batch) if at else 128
    except ValueError:
        hidden, batch_size = [], 0
    if not hidden or min(hidden) < 1 or batch_size < 1:
        raise ValueError(f"{net!r} is neither a bench net ({', '.join(NETS)}) nor hidden widths and a batch "
                         "size like 768-768@256")
    return {"hidden": hidden, "batch_size": batch_size}


def make_trainer(net: str, engine: str, data: Dataset, epochs: int = 1, seed: int = 0) -> Trainer:
    """A Trainer for a bench net (net_config) on `data`, ready for step() (no validation split)."""
    cfg = TrainConfig(**engine_options(engine), epochs=epochs, seed=seed, val_size=0.0, warmup_epochs=0.0,
                      lr=0.01, **net_config(net))
    return Trainer(cfg, data)


def train_epoch(trainer: Trainer, lr: float = 0.01) -> None:
    """One pass over the training split, exactly as Trainer.run does it (no validation)."""
    order = trainer.rng.permutation(trainer.train_idx)
    labels = trainer.data.y_train[order]
    b = trainer.ws.capacity
    for s in range(trainer.steps_per_epoch):
        trainer.step(order[s * b:(s + 1) * b], lr, labels[s * b:(s + 1) * b])


def layer_shapes(trainer: Trainer) -> list:
    """(batch, fan_in, fan_out) of every layer."""
    sizes, b = trainer.model.sizes, trainer.ws.capacity
    return [(b, i, o) for i, o in zip(sizes[:-1], sizes[1:])]


def step_phases(trainer: Trainer) -> dict:
    """name -> (callable running that part of one full-batch step, FLOPs it performs).

    The callables run on the trainer's own workspace, on a fixed batch, in the order a step runs
    them, so each one sees realistic inputs (call them in dict order once before timing). As in
    Trainer.step, "gather" brings the batch in normalised (gather_normalise), so the phases with
    FLOPs are the layers' products alone. For the bench nets: no augmentation, no whitening.
    """
    E, m, v = trainer.E, trainer.model, trainer.ws.rows(trainer.ws.capacity)
    if trainer.augment or m.whiten is not None:
        raise ValueError("step_phases times a step without augmentation or whitening (the bench nets)")
    idx = trainer.train_idx[: v.n].copy()
    gw, gb = trainer.grads_w, trainer.grads_b
    last = len(m.weights) - 1
    phases = {}

    def gather():
        E.gather_normalise(trainer.data.x_train, idx, *trainer.x_norm, v.x_in)
        np.take(trainer.data.y_train, idx, out=v.labels)
    phases["gather"] = (gather, 0)

    for l, (b, fan_in, fan_out) in enumerate(layer_shapes(trainer)):
        def fwd(l=l):
            E.linear_forward(v.acts[l], m.weights[l], m.biases[l], l < last, v.acts[l + 1], v.ws.pack)
        phases[f"forward[{l}] {fan_in}x{fan_out}"] = (fwd, 2 * b * fan_in * fan_out)

    def loss_grad():
        E.softmax_xent_grad(v.acts[-1], v.labels, 0.0, v.deltas[-1], v.row_loss)
    phases["softmax_xent_grad"] = (loss_grad, 0)

    for l in range(last, -1, -1):
        b, fan_in, fan_out = layer_shapes(trainer)[l]

        def bwd(l=l):
            E.linear_grad_params(v.deltas[l + 1], v.acts[l], gw[l], gb[l], v.ws.pack)
            if l > 0:
                E.linear_grad_input(v.deltas[l + 1], m.weights[l], v.acts[l], v.deltas[l], v.ws.pack)
        phases[f"backward[{l}] {fan_in}x{fan_out}"] = (bwd, 2 * b * fan_in * fan_out * (2 if l > 0 else 1))

    def update():
        trainer.update(1e-6)     # as a step runs it (SGD with momentum), with a tiny learning rate
    phases["sgd_momentum_update"] = (update, 0)
    return phases


def sgemm_phases(trainer: Trainer) -> dict:
    """The matrix products of one step done by np.matmul (OpenBLAS sgemm) on the same shapes:
    the practical peak the kernels are measured against. name -> (callable, FLOPs)."""
    rng = np.random.default_rng(0)
    phases = {}
    for l, (b, fan_in, fan_out) in enumerate(layer_shapes(trainer)):
        x = rng.standard_normal((b, fan_in), dtype=np.float32)
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        dy = rng.standard_normal((b, fan_out), dtype=np.float32)
        y, dw, dx = np.empty((b, fan_out), np.float32), np.empty_like(w), np.empty_like(x)

        def products(x=x, w=w, dy=dy, y=y, dw=dw, dx=dx, l=l):
            np.matmul(x, w.T, out=y)
            np.matmul(dy.T, x, out=dw)
            if l > 0:
                np.matmul(dy, w, out=dx)
        phases[f"layer[{l}] {fan_in}x{fan_out}"] = (products, 2 * b * fan_in * fan_out * (3 if l > 0 else 2))
    return phases


def epoch_flops(trainer: Trainer) -> int:
    """Matrix-product FLOPs of one epoch (forward, dW, and dX for all but the first layer)."""
    n = len(trainer.train_idx)
    return sum(2 * n * i * o * (3 if l > 0 else 2) for l, (_, i, o) in enumerate(layer_shapes(trainer)))


# ---------------------------------------------------------------------------------------------
# Parallel regions: which of the engine's functions are parallel Numba kernels, and how many of
# them one step calls. Counted from Python by swapping each kernel for a counting proxy in every
# module of fastfcnn.kernels that names it (the layer functions are plain Python around the
# kernels, so their calls go through those module globals); kernels/ itself is not touched.

def parallel_kernels() -> list:
    """(module, attribute, dispatcher) for every parallel=True Numba function a module of
    fastfcnn.kernels holds (a kernel appears once per module that imports it)."""
    import sys

    from numba.core.registry import CPUDispatcher

    import fastfcnn.kernels  # noqa: F401  (loads the submodules)
    found = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "fastfcnn.kernels" or mod_name.startswith("fastfcnn.kernels.")):
            continue
        for attr, value in vars(mod).items():
            if isinstance(value, CPUDispatcher) and value.targetoptions.get("parallel"):
                found.append((mod, attr, value))
            elif isinstance(getattr(value, "parallel", None), CPUDispatcher):   # config.sized_kernel
                found.append((value, "parallel", value.parallel))
    return found


def prange_loops(dispatcher) -> int:
    """prange loops in a kernel's source: the most parallel regions one call opens (a loop under
    a branch, like gemm_op's packing of a large left operand, opens one only when taken)."""
    import inspect
    try:
        return max(1, inspect.getsource(dispatcher.py_func).count("prange("))
    except (OSError, TypeError):
        return 1


class _Counting:
    """Calls the wrapped kernel and counts the call under its name."""

    def __init__(self, dispatcher, counts: dict):
        self.dispatcher, self.counts = dispatcher, counts
        self.name = dispatcher.py_func.__name__

    def __call__(self, *args, **kwargs):
        self.counts[self.name] = self.counts.get(self.name, 0) + 1
        return self.dispatcher(*args, **kwargs)


def count_parallel_calls(fn) -> dict:
    """Run fn() once with every parallel kernel of fastfcnn.kernels behind a counting proxy;
    returns {kernel name: calls}. Run fn once before, so nothing compiles while the proxies are in
    place (a kernel compiled then would see the proxy instead of a Numba function)."""
    counts: dict = {}
    swapped = parallel_kernels()
    proxies = {}
    try:
        for mod, attr, disp in swapped:
            proxy = proxies.setdefault(id(disp), _Counting(disp, counts))
            setattr(mod, attr, proxy)
        fn()
    finally:
        for mod, attr, disp in swapped:
            setattr(mod, attr, disp)
    return counts


def region_counts(fn) -> dict:
    """The parallel kernels fn() calls: {"parallel_kernel_calls": total, "by_kernel": {name:
    calls}, "prange_loops_max": calls weighted by prange loops per kernel (an upper bound on the
    parallel regions opened)}."""
    loops = {d.py_func.__name__: prange_loops(d) for _, _, d in parallel_kernels()}
    counts = count_parallel_calls(fn)
    return {"parallel_kernel_calls": sum(counts.values()), "by_kernel": dict(sorted(counts.items())),
            "prange_loops_max": sum(c * loops.get(k, 1) for k, c in counts.items())}


def overhead_trainer(engine: str, data: Dataset, seed: int = 0) -> Trainer:
    """The seed net at a batch of one image: its step time is the fixed cost of a step."""
    cfg = TrainConfig(**engine_options(engine), epochs=1, seed=seed, val_size=0.0, warmup_epochs=0.0, lr=0.01,
                      hidden=NETS["seed"]["hidden"], batch_size=1)
    return Trainer(cfg, data)
