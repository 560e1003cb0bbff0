"""The training loop: data in, a trained Model and its per-epoch history out."""
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import network
from .data import channel_stats, stratified_split
from .engine import ENGINES, get_engine
from .errors import UserError
from .model import init_model
from .schedule import SCHEDULES, learning_rate


@dataclass
class TrainConfig:
    hidden: list = field(default_factory=lambda: [64, 64])
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    engine: str = "numba"
    seed: int = 0
    val_size: int = 5000

    def check(self, n_train: int) -> None:
        """Raise UserError naming the first option whose value cannot work."""
        rules = [
            (all(h >= 1 for h in self.hidden), "--hidden sizes must be positive integers"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr > 0 and math.isfinite(self.lr), "--lr must be a positive number"),
            (0 <= self.momentum < 1, "--momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.lr_schedule in SCHEDULES, f"--lr-schedule must be one of {', '.join(SCHEDULES)}"),
            (0 <= self.warmup_epochs <= self.epochs, "--warmup-epochs must be between 0 and --epochs"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (0 <= self.val_size < n_train, f"--val-size must be in [0, {n_train}) for this data"),
        ]
        for ok, message in rules:
            if not ok:
                raise UserError(message)


class Trainer:
    """Owns the model, its optimizer state and the workspace for one run."""

    def __init__(self, cfg: TrainConfig, data, on_epoch=None, on_step=None):
        cfg.check(len(data.y_train))
        self.cfg = cfg
        self.data = data
        self.on_epoch = on_epoch or (lambda record: None)
        self.on_step = on_step or (lambda done, total: None)
        self.rng = np.random.default_rng(cfg.seed)
        self.train_idx, self.val_idx = stratified_split(data.y_train, cfg.val_size, self.rng)
        mean, std = channel_stats(data.x_train, idx=self.train_idx)
        sizes = [data.x_train.shape[1], *cfg.hidden, len(data.class_names)]
        self.model = init_model(sizes, mean, std, data.class_names, self.rng, asdict(cfg))
        self.E = get_engine(cfg.engine)
        self.grads_w = [np.zeros_like(w) for w in self.model.weights]
        self.grads_b = [np.zeros_like(b) for b in self.model.biases]
        self.vel_w = [np.zeros_like(w) for w in self.model.weights]
        self.vel_b = [np.zeros_like(b) for b in self.model.biases]
        self.ws = network.Workspace(sizes, min(cfg.batch_size, len(self.train_idx)))
        self.steps_per_epoch = math.ceil(len(self.train_idx) / self.ws.capacity)
        self.history = []

    def step(self, idx: np.ndarray, lr: float) -> tuple:
        """One SGD step on the rows idx of the training set; returns (summed loss, correct)."""
        E, m, cfg = self.E, self.model, self.cfg
        v = self.ws.rows(len(idx))
        E.gather_batch(self.data.x_train, idx, v.xb)
        np.take(self.data.y_train, idx, out=v.labels)
        logits = network.forward(E, m, self.x_norm, v)
        correct = E.count_correct(logits, v.labels)
        loss = network.backward(E, m, v, cfg.label_smoothing, self.grads_w, self.grads_b)
        lr32 = np.float32(lr)
        mu, wd = np.float32(cfg.momentum), np.float32(cfg.weight_decay)
        for w, g, vel in zip(m.weights, self.grads_w, self.vel_w):
            E.sgd_momentum_update(w, g, vel, lr32, mu, wd, cfg.nesterov)
        for b, g, vel in zip(m.biases, self.grads_b, self.vel_b):  # no decay on biases
            E.sgd_momentum_update(b, g, vel, lr32, mu, np.float32(0), cfg.nesterov)
        return loss, correct

    def run(self) -> list:
        cfg, B = self.cfg, self.ws.capacity
        self.x_norm = self.model.input_transform()
        total = cfg.epochs * self.steps_per_epoch
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        n = len(self.train_idx)
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            order = self.rng.permutation(self.train_idx)
            loss_sum, correct = 0.0, 0
            for s in range(self.steps_per_epoch):
                step = (epoch - 1) * self.steps_per_epoch + s
                lr = learning_rate(cfg.lr_schedule, cfg.lr, step, total, warmup)
                loss, c = self.step(order[s * B : (s + 1) * B], lr)
                if not math.isfinite(loss):
                    raise UserError(
                        f"training diverged: the loss became {loss} in epoch {epoch} (step {s + 1}) "
                        f"at learning rate {lr:.4g}; try a lower --lr than {cfg.lr:g}")
                loss_sum += loss
                correct += c
                self.on_step(s + 1, self.steps_per_epoch)
            seconds = time.perf_counter() - t0
            record = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / n, "train_accuracy": correct / n}
            record |= self.validate()
            record["seconds"] = seconds
            self.history.append(record)
            self.on_epoch(record)
        return self.history

    def validate(self) -> dict:
        if len(self.val_idx) == 0:
            return {"val_loss": None, "val_accuracy": None}
        loss, acc = network.evaluate(self.E, self.model, self.data.x_train, self.data.y_train, self.val_idx)
        return {"val_loss": loss, "val_accuracy": acc}
