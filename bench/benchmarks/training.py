"""A training epoch on synthetic CIFAR-shaped data: time, peak memory, numba's speed-up over numpy."""
from . import ENGINES, EPOCH_IMAGES, NETS, best_seconds, common, trainer


class Epoch:
    """One epoch (common.train_epoch: permutation, then every step) over EPOCH_IMAGES[net] images:
    all 50,000 for the seed net, 5,000 for the wide one (2,000 with FASTFCNN_BENCH_QUICK=1).
    At least 4 samples a round (8 in all), the fewest that let `asv compare` call a change significant."""
    params = [NETS, ENGINES]
    param_names = ["net", "engine"]
    number = 1
    repeat = (4, 10, 30.0)
    warmup_time = 0  # setup has compiled the kernels; an extra untimed epoch would only cost time
    timeout = 600

    def setup(self, net, engine):
        self.trainer = trainer(net, engine, EPOCH_IMAGES[net])
        self.trainer.step(self.trainer.train_idx[: self.trainer.ws.capacity], 0.01)  # JIT

    def time_epoch(self, net, engine):
        common.train_epoch(self.trainer)


class PeakMemory:
    """Peak resident memory of the benchmark process over a training run: imports, the synthetic
    data set (EPOCH_IMAGES[net] images of 3,072 bytes), model, optimizer state, workspace and one
    epoch. setup compiles the kernels on a 256-image set first, as little of the peak as it can be."""
    params = [NETS, ENGINES]
    param_names = ["net", "engine"]
    timeout = 600

    def setup(self, net, engine):
        warm = trainer(net, engine, 256)
        warm.step(warm.train_idx[: warm.ws.capacity], 0.01)

    def peakmem_train_epoch(self, net, engine):
        common.train_epoch(trainer(net, engine, EPOCH_IMAGES[net]))


class SpeedUp:
    """numba's speed-up over numpy: NumPy-reference time / Numba time of one training step
    (Trainer.step on a fixed batch, fastest of repeated runs)."""
    params = NETS
    param_names = ["net"]
    unit = "x"

    def setup(self, net):
        self.steps = {}
        for engine in ENGINES:
            t = trainer(net, engine)
            batch = t.train_idx[: t.ws.capacity]
            self.steps[engine] = lambda t=t, batch=batch: t.step(batch, 0.01)
            self.steps[engine]()  # JIT

    def track_speedup(self, net):
        return best_seconds(self.steps["numpy"], budget=1.0) / best_seconds(self.steps["numba"], budget=1.0)
