"""The training loop: data in, a trained Model and its per-epoch history out."""
import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import network
from .data import channel_stats, stratified_split
from .engine import ENGINES, get_engine
from .errors import UserError
from .model import feature_stats, init_model
from .schedule import SCHEDULES, learning_rate
from .whiten import WHITENINGS, fit_whitening

OPTIMIZERS = ("sgd", "adam", "adamw")
CROP_MODES = ("reflect", "zero")


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
    optimizer: str = "sgd"
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    dropout: float = 0.0
    crop_pad: int = 0
    crop_mode: str = "reflect"
    flip: bool = False
    whiten: str = "none"
    whiten_dims: int = 256
    whiten_eps: float = 0.1
    patience: int = 0
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
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.adam_eps > 0, "Adam needs betas in [0, 1) and eps > 0"),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            (0 <= self.crop_pad <= 31, "--crop-pad must be between 0 and 31 pixels"),
            (self.crop_mode in CROP_MODES, f"--crop-mode must be one of {', '.join(CROP_MODES)}"),
            (self.whiten in WHITENINGS, f"--whiten must be one of {', '.join(WHITENINGS)}"),
            (self.whiten != "pca" or self.whiten_dims >= 1, "--whiten-dims must be at least 1"),
            (self.whiten_eps > 0, "--whiten-eps must be > 0"),
            (self.patience >= 0, "--patience must be >= 0 (0 turns early stopping off)"),
            (self.patience == 0 or self.val_size > 0, "--patience needs a validation split (--val-size > 0)"),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (0 <= self.val_size < n_train, f"--val-size must be in [0, {n_train}) for this data"),
        ]
        for ok, message in rules:
            if not ok:
                raise UserError(message)


class Trainer:
    """Owns the model, its optimizer state and the workspace for one run.

    All randomness (split, init, shuffling, augmentation, dropout masks) comes from one
    np.random.default_rng(cfg.seed), drawn into buffers allocated here.
    """

    def __init__(self, cfg: TrainConfig, data, on_epoch=None, on_step=None):
        cfg.check(len(data.y_train))
        self.cfg = cfg
        self.data = data
        self.on_epoch = on_epoch or (lambda record: None)
        self.on_step = on_step or (lambda done, total: None)
        self.rng = np.random.default_rng(cfg.seed)
        self.train_idx, self.val_idx = stratified_split(data.y_train, cfg.val_size, self.rng)
        mean, std = channel_stats(data.x_train, idx=self.train_idx)
        d = data.x_train.shape[1]
        if cfg.whiten == "pca" and cfg.whiten_dims > d:
            raise UserError(f"--whiten-dims must be at most {d}, the number of input features")
        first = {"none": d, "zca": d, "pca": cfg.whiten_dims}[cfg.whiten]
        sizes = [first, *cfg.hidden, len(data.class_names)]
        self.model = init_model(sizes, mean, std, data.class_names, self.rng, asdict(cfg))
        if cfg.whiten != "none":
            self.model.whiten, self.model.whiten_bias = fit_whitening(
                data.x_train, self.train_idx, *feature_stats(mean, std, d), cfg.whiten, cfg.whiten_dims,
                cfg.whiten_eps)
        self.E = get_engine(cfg.engine)
        self.grads_w = [np.zeros_like(w) for w in self.model.weights]
        self.grads_b = [np.zeros_like(b) for b in self.model.biases]
        self.vel_w = [np.zeros_like(w) for w in self.model.weights]   # SGD velocity / Adam first moment
        self.vel_b = [np.zeros_like(b) for b in self.model.biases]
        adam = cfg.optimizer != "sgd"
        self.sq_w = [np.zeros_like(w) for w in self.model.weights] if adam else []  # Adam second moment
        self.sq_b = [np.zeros_like(b) for b in self.model.biases] if adam else []
        self.updates = 0
        self.ws = network.workspace_for(self.model, min(cfg.batch_size, len(self.train_idx)), cfg.dropout > 0)
        self.steps_per_epoch = math.ceil(len(self.train_idx) / self.ws.capacity)
        self.augment = cfg.crop_pad > 0 or cfg.flip
        cap = self.ws.capacity
        self._aug_u = np.empty(3 * cap)                   # uniform draws: shift y, shift x, flip
        self._shift = np.zeros((2, cap), np.int64)
        self._flip = np.zeros(cap, bool)
        self.best_epoch, self.best_val_accuracy = None, -1.0
        self.best_w = [np.empty_like(w) for w in self.model.weights] if cfg.patience else []
        self.best_b = [np.empty_like(b) for b in self.model.biases] if cfg.patience else []
        self.history = []

    def gather(self, idx: np.ndarray, v) -> None:
        """The uint8 batch x_train[idx] into v.xb, randomly cropped and flipped if configured."""
        if not self.augment:
            self.E.gather_batch(self.data.x_train, idx, v.xb)
            return
        n, pad = len(idx), self.cfg.crop_pad
        u = self._aug_u[: 3 * n].reshape(3, n)
        self.rng.random(out=u)
        shift = self._shift[:, :n]
        u[:2] *= 2 * pad + 1
        np.floor(u[:2], out=u[:2])
        u[:2] -= pad
        shift[...] = u[:2]
        flip = self._flip[:n]
        if self.cfg.flip:
            np.less(u[2], 0.5, out=flip)
        mode = self.E.PAD_REFLECT if self.cfg.crop_mode == "reflect" else self.E.PAD_ZERO
        self.E.gather_augment(self.data.x_train, idx, shift[0], shift[1], flip, mode, v.xb)

    def step(self, idx: np.ndarray, lr: float) -> tuple:
        """One SGD step on the rows idx of the training set; returns (summed loss, correct)."""
        E, m, cfg = self.E, self.model, self.cfg
        v = self.ws.rows(len(idx))
        self.gather(idx, v)
        np.take(self.data.y_train, idx, out=v.labels)
        if cfg.dropout > 0:
            for u in v.drop_u:
                if u is not None:
                    self.rng.random(out=u, dtype=np.float32)
        logits = network.forward(E, m, self.x_norm, v, cfg.dropout)
        correct = E.count_correct(logits, v.labels)
        loss = network.backward(E, m, v, cfg.label_smoothing, self.grads_w, self.grads_b, cfg.dropout)
        self.update(lr)
        return loss, correct

    def update(self, lr: float) -> None:
        """Apply the configured optimizer to every parameter; weight decay on weights only."""
        E, m, cfg = self.E, self.model, self.cfg
        lr32, wd, zero = np.float32(lr), np.float32(cfg.weight_decay), np.float32(0)
        if cfg.optimizer == "sgd":
            mu = np.float32(cfg.momentum)
            for w, g, vel in zip(m.weights, self.grads_w, self.vel_w):
                E.sgd_momentum_update(w, g, vel, lr32, mu, wd, cfg.nesterov)
            for b, g, vel in zip(m.biases, self.grads_b, self.vel_b):
                E.sgd_momentum_update(b, g, vel, lr32, mu, zero, cfg.nesterov)
            return
        self.updates += 1
        b1, b2, eps = np.float32(cfg.beta1), np.float32(cfg.beta2), np.float32(cfg.adam_eps)
        decoupled = cfg.optimizer == "adamw"
        for w, g, m1, m2 in zip(m.weights, self.grads_w, self.vel_w, self.sq_w):
            E.adam_update(w, g, m1, m2, lr32, b1, b2, eps, wd, decoupled, self.updates)
        for b, g, m1, m2 in zip(m.biases, self.grads_b, self.vel_b, self.sq_b):
            E.adam_update(b, g, m1, m2, lr32, b1, b2, eps, zero, decoupled, self.updates)

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
            if cfg.patience and self.early_stop(epoch, record["val_accuracy"]):
                break
        return self.history

    def early_stop(self, epoch: int, val_accuracy: float) -> bool:
        """Keep a copy of the weights when validation accuracy improves; True once it has not
        improved for cfg.patience epochs."""
        if val_accuracy > self.best_val_accuracy:
            self.best_epoch, self.best_val_accuracy = epoch, val_accuracy
            for dst, src in zip(self.best_w + self.best_b, self.model.weights + self.model.biases):
                np.copyto(dst, src)
        return epoch - self.best_epoch >= self.cfg.patience

    def best_model(self):
        """The model with the best-validation weights (needs cfg.patience > 0 and a finished run)."""
        return replace(self.model, weights=self.best_w, biases=self.best_b)

    def validate(self) -> dict:
        if len(self.val_idx) == 0:
            return {"val_loss": None, "val_accuracy": None}
        loss, acc = network.evaluate(self.E, self.model, self.data.x_train, self.data.y_train, self.val_idx)
        return {"val_loss": loss, "val_accuracy": acc}
