"""The same net, loss and optimizer in PyTorch on the CPU: an optional yardstick for `fastfcnn bench`.

Only imported when torch is installed; torch is never a dependency of fastfcnn.
"""
import time

import numpy as np


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class TorchTrainer:
    """Mirror of a fastfcnn Trainer: same initial weights, batch size, SGD momentum, weight decay on
    weights only, and per-feature input normalisation done on each uint8 batch."""

    def __init__(self, trainer, threads: int):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        torch.set_num_threads(threads)
        cfg, m = trainer.cfg, trainer.model
        layers = []
        for w, b in zip(m.weights, m.biases):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin, torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers[:-1])
        weights = [l.weight for l in self.net if isinstance(l, torch.nn.Linear)]
        biases = [l.bias for l in self.net if isinstance(l, torch.nn.Linear)]
        self.opt = torch.optim.SGD([{"params": weights, "weight_decay": cfg.weight_decay},
                                    {"params": biases, "weight_decay": 0.0}],
                                   lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        mean, inv_std = trainer.x_norm
        self.mean, self.inv_std = torch.from_numpy(mean), torch.from_numpy(inv_std)
        self.x = torch.from_numpy(trainer.data.x_train)
        self.y = torch.from_numpy(trainer.data.y_train)
        self.train_idx = trainer.train_idx
        self.batch = trainer.ws.capacity
        self.rng = np.random.default_rng(trainer.cfg.seed)

    def _step(self, idx) -> None:
        F = self.F
        xb = (self.x[idx].float() - self.mean) * self.inv_std
        loss = F.cross_entropy(self.net(xb), self.y[idx])
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        self.opt.step()

    def epoch(self) -> float:
        """Seconds for one pass over the training split."""
        order = self.torch.from_numpy(self.rng.permutation(self.train_idx))
        t0 = time.perf_counter()
        for s in range(0, len(order), self.batch):
            self._step(order[s:s + self.batch])
        return time.perf_counter() - t0

    def step_seconds(self, steps: int) -> list:
        """Seconds of each of `steps` single steps: the fixed cost of a step when the batch is tiny."""
        order = self.torch.from_numpy(self.rng.permutation(self.train_idx))
        n, b = len(order), self.batch
        out = []
        for s in range(steps):
            start = (s * b) % max(n - b + 1, 1)
            idx = order[start:start + b]
            t0 = time.perf_counter()
            self._step(idx)
            out.append(time.perf_counter() - t0)
        return out

    def set_threads(self, threads: int) -> None:
        self.torch.set_num_threads(threads)
