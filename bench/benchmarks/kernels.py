"""Each kernel phase of one training step (common.step_phases), and GFLOP/s of the matrix products."""
from . import KERNEL_ENGINES, NETS, best_seconds, common, trainer

# Phase groups: step_phases names the forward and backward pass once per layer ("forward[0] 3072x64").
PHASES = ["gather", "forward", "softmax_xent_grad", "backward", "sgd_momentum_update"]


def grouped_phases(net, engine):
    """phase group -> (callable running all its per-layer parts, FLOPs), warmed up (JIT compiled)."""
    phases = common.step_phases(trainer(net, engine))
    for fn, _ in phases.values():  # in step order, once: compiles and fills the workspace
        fn()
    groups = {}
    for group in PHASES:
        parts = [(fn, flops) for name, (fn, flops) in phases.items() if name.split("[")[0] == group]
        groups[group] = (lambda parts=parts: [fn() for fn, _ in parts], sum(f for _, f in parts))
    return groups


class Phase:
    """Time of one phase of a full-batch step (all layers of it), threads pinned (see __init__)."""
    params = [NETS, KERNEL_ENGINES, PHASES]
    param_names = ["net", "engine", "phase"]
    timeout = 300  # setup compiles the kernels when the JIT cache is cold: the bf16 ones take about a minute

    def setup(self, net, engine, phase):
        self.run = grouped_phases(net, engine)[phase][0]

    def time_phase(self, net, engine, phase):
        self.run()


class MatmulThroughput:
    """GFLOP/s of the matrix products (forward and backward phases) of one step; `sgemm` is
    np.matmul on the same shapes (common.sgemm_phases), the practical peak."""
    params = [NETS, KERNEL_ENGINES + ["sgemm"]]
    param_names = ["net", "engine"]
    unit = "GFLOP/s"
    timeout = 300  # as Phase's

    def setup(self, net, engine):
        if engine == "sgemm":
            parts = list(common.sgemm_phases(trainer(net, "numpy")).values())
        else:
            groups = grouped_phases(net, engine)
            parts = [groups["forward"], groups["backward"]]
        self.flops = sum(flops for _, flops in parts)
        self.run = lambda: [fn() for fn, _ in parts]
        self.run()

    def track_gflops(self, net, engine):
        return self.flops / best_seconds(self.run) / 1e9
