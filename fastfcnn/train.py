"""The training loop: a Dataset in, a trained Model and its per-epoch history out."""
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import network
from .config import TrainConfig
from .data import input_stats, stratified_split
from .engine import get_engine
from .errors import UserError
from .model import feature_stats, init_model
from .schedule import learning_rate
from .whiten import fit_whitening


class Diverged(UserError):
    """The loss, a weight or the validation loss became NaN or inf."""


class Interrupted(Exception):
    """The run stopped at a step boundary because it was asked to (Ctrl-C, SIGTERM)."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"interrupted in epoch {epoch} before step {step + 1}")
        self.epoch, self.step = epoch, step


@dataclass
class OptimizerState:
    """Everything the optimizer carries from one step to the next, one entry per parameter
    (the weights, then the biases, as Trainer.params orders them).

    first: SGD's velocity or Adam's first moment; second: Adam's second moment (empty for SGD);
    updates: Adam's step count, for its bias correction.
    """

    first: list
    second: list
    updates: int = 0

    @classmethod
    def flat(cls, shapes, adam: bool) -> tuple:
        """(state, its first and second moments as one flat buffer each: network.flat_zeros)."""
        first, firsts = network.flat_zeros(shapes)
        second, seconds = network.flat_zeros(shapes) if adam else (None, [])
        return cls(firsts, seconds), first, second


class Trainer:
    """Owns the model, its optimizer state and the workspace for one run.

    All randomness (split, init, shuffling, augmentation, dropout masks) comes from one
    np.random.default_rng(cfg.seed), drawn into buffers allocated here.
    """

    def __init__(self, cfg: TrainConfig, data, on_epoch=None, on_step=None):
        cfg.check()
        cfg.check_data(data)
        self.cfg = cfg
        self.data = data
        self.on_epoch = on_epoch or (lambda record: None)
        self.on_step = on_step or (lambda done, total: None)
        self.rng = np.random.default_rng(cfg.seed)
        self.train_idx, self.val_idx = stratified_split(data.y_train, cfg.n_val(len(data.y_train)), self.rng)
        mean, std = input_stats(data, self.train_idx)
        d = data.n_features
        first = {"none": d, "zca": d, "pca": cfg.whiten_dims}[cfg.whiten]
        sizes = [first, *cfg.hidden, len(data.class_names)]
        self.model = init_model(sizes, mean, std, data.class_names, self.rng, asdict(cfg), data.image_shape)
        if cfg.whiten != "none":
            self.model.whiten, self.model.whiten_bias = fit_whitening(
                data.x_train, self.train_idx, *feature_stats(mean, std, d), cfg.whiten, cfg.whiten_dims,
                cfg.whiten_eps)
        self.x_norm = self.model.input_transform()
        self.E = get_engine(cfg.engine, cfg.precision)
        self.E_eval = get_engine(cfg.engine)      # accuracy in fp32 whatever the training precision
        # The parameters, their gradients and the optimizer's moments each live in one flat buffer
        # (network.flat_zeros), weights first, so a step updates all weights in one kernel call and
        # all biases in another. The model's arrays become views of it: they are updated in place
        # and never rebound (start_from and checkpoint.restore copy into them).
        m, shapes = self.model, [p.shape for p in self.model.weights + self.model.biases]
        flat_params, self.params = network.flat_zeros(shapes)
        for dst, src in zip(self.params, m.weights + m.biases):
            np.copyto(dst, src)
        n_w = len(m.weights)
        m.weights, m.biases = self.params[:n_w], self.params[n_w:]
        flat_grads, self.grads = network.flat_zeros(shapes)
        self.opt, flat_first, flat_second = OptimizerState.flat(shapes, adam=cfg.optimizer != "sgd")
        # (flat slices, weight decay) for each update call: weight decay on weights only
        bias0 = (self.params[n_w].ctypes.data - flat_params.ctypes.data) // flat_params.itemsize
        cuts = [(slice(0, bias0), cfg.weight_decay), (slice(bias0, None), 0.0)] if cfg.weight_decay else \
            [(slice(None), 0.0)]
        self._update_groups = [(flat_params[c], flat_grads[c], flat_first[c],
                                None if flat_second is None else flat_second[c], np.float32(wd)) for c, wd in cuts]
        self.ws = network.workspace_for(self.E, self.model, min(cfg.batch_size, len(self.train_idx)), cfg.dropout > 0)
        self.steps_per_epoch = math.ceil(len(self.train_idx) / self.ws.capacity)
        self.augment = cfg.crop_pad > 0 or cfg.flip
        cap = self.ws.capacity
        self._aug_u = np.empty(3 * cap)                   # uniform draws: shift y, shift x, flip
        self._shift = np.zeros((2, cap), np.int64)
        self._flip = np.zeros(cap, bool)
        self.best_epoch, self.best_val_accuracy = None, -1.0
        self.best_params = [network.aligned_empty(p.shape) for p in self.params] if cfg.patience else []
        self.history = []
        # Where the run stands: epochs done, and inside the current one its order, next step and sums.
        self.epoch, self.stopped = 0, False
        self.order, self.pos, self.loss_sum, self.correct, self.seconds = None, 0, 0.0, 0, 0.0

    def start_from(self, model, state: dict | None = None) -> None:
        """Continue from `model` instead of the fresh initialisation: its weights (copied into this
        trainer's own parameter arrays, which the optimizer and workspace hold), its input
        normalisation and whitening and, from `state` ({"opt", "rng", "epoch"}), the optimizer
        state, the generator and the epoch count (FCNNClassifier's warm_start and partial_fit)."""
        m = self.model
        if (m.sizes, m.image_shape, m.whiten is None, m.class_names) != \
                (model.sizes, model.image_shape, model.whiten is None, model.class_names):
            raise ValueError(f"cannot continue training the fitted net (layers {model.sizes}) with these options and "
                             f"data (layers {m.sizes}): the layer sizes, input layout, whitening or classes differ; "
                             f"set warm_start=False or keep them")
        for dst, src in zip(self.params, model.weights + model.biases):
            np.copyto(dst, src)
        m.mean, m.std, m.whiten, m.whiten_bias = model.mean, model.std, model.whiten, model.whiten_bias
        self.x_norm = m.input_transform()
        if state is not None:
            for dsts, srcs in ((self.opt.first, state["opt"].first), (self.opt.second, state["opt"].second)):
                for dst, src in zip(dsts, srcs):
                    np.copyto(dst, src)
            self.opt.updates, self.rng, self.epoch = state["opt"].updates, state["rng"], state["epoch"]

    def feed(self, data) -> None:
        """Train on new rows of the same layout from the next epoch on, all of them (no validation
        split); the workspace must hold min(batch_size, rows) rows (partial_fit)."""
        n = len(data.y_train)
        if min(self.cfg.batch_size, n) > self.ws.capacity:
            raise ValueError(f"a batch of {min(self.cfg.batch_size, n)} rows does not fit this trainer's workspace")
        self.data = data
        self.train_idx = np.arange(n, dtype=np.int64)
        self.val_idx = np.empty(0, np.int64)
        self.steps_per_epoch = math.ceil(n / self.ws.capacity)

    @property
    def grads_w(self) -> list:
        return self.grads[: len(self.model.weights)]

    @property
    def grads_b(self) -> list:
        return self.grads[len(self.model.weights) :]

    def gather(self, idx: np.ndarray, v) -> None:
        """The batch x_train[idx], images randomly cropped and flipped if configured, normalised
        into v.x_in (an augmented batch passes through v.xb)."""
        if not self.augment:
            self.E.gather_normalise(self.data.x_train, idx, *self.x_norm, v.x_in)
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
        self.E.gather_augment_normalise(self.data.x_train, idx, shift[0], shift[1], flip, mode, *self.data.image_shape,
                                        *self.x_norm, v.xb, v.x_in)

    def step(self, idx: np.ndarray, lr: float, labels: np.ndarray | None = None) -> tuple:
        """One step on the rows idx of the training set; returns (summed loss, correct).
        labels: y_train[idx], if the caller has them (run_epoch gathers an epoch's at its start)."""
        E, m, cfg = self.E, self.model, self.cfg
        v = self.ws.rows(len(idx))
        self.gather(idx, v)
        if labels is None:
            np.take(self.data.y_train, idx, out=v.labels)
        else:
            np.copyto(v.labels, labels)
        if cfg.dropout > 0:
            for u in v.drop_u:
                if u is not None:
                    self.rng.random(out=u, dtype=np.float32)
        network.forward(E, m, self.x_norm, v, cfg.dropout, normalised=True)
        loss, correct = network.backward(E, m, v, cfg.label_smoothing, self.grads_w, self.grads_b, cfg.dropout)
        self.update(lr)
        return loss, correct

    def update(self, lr: float) -> None:
        """Apply the configured optimizer to every parameter; weight decay on weights only."""
        E, cfg, opt = self.E, self.cfg, self.opt
        lr32 = np.float32(lr)
        if cfg.optimizer == "sgd":
            mu = np.float32(cfg.momentum)
            for p, g, vel, _, wd in self._update_groups:
                E.sgd_momentum_update(p, g, vel, lr32, mu, wd, cfg.nesterov)
            return
        opt.updates += 1
        b1, b2, eps = np.float32(cfg.beta1), np.float32(cfg.beta2), np.float32(cfg.adam_eps)
        decoupled = cfg.optimizer == "adamw"
        for p, g, m1, m2, wd in self._update_groups:
            E.adam_update(p, g, m1, m2, lr32, b1, b2, eps, wd, decoupled, opt.updates)

    def run(self) -> list:
        """Train until cfg.epochs epochs are done or early stopping ends the run; returns the history."""
        while self.epoch < self.cfg.epochs and not self.stopped:
            self.run_epoch()
        return self.history

    def learning_rate(self, step: int) -> float:
        """The rate of 0-based global step `step` of a run of cfg.epochs epochs."""
        cfg = self.cfg
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        return learning_rate(cfg.lr_schedule, cfg.lr, step, cfg.epochs * self.steps_per_epoch, warmup)

    def run_epoch(self) -> dict:
        """Run the rest of the current epoch (all of it, unless a checkpoint stopped it part way),
        validate, and return its history record."""
        B, spe, n = self.ws.capacity, self.steps_per_epoch, len(self.train_idx)
        if self.order is None:                        # a new epoch
            self.order = self.rng.permutation(self.train_idx)
            self.pos, self.loss_sum, self.correct, self.seconds = 0, 0.0, 0, 0.0
        t0 = time.perf_counter()
        # the epoch's labels in its order, in one pass: a step's 128 random reads of y_train would
        # mostly miss the caches the step's own data just filled
        labels = self.data.y_train[self.order]
        while self.pos < spe:
            if self.should_stop():
                self.seconds += time.perf_counter() - t0
                raise Interrupted(self.epoch + 1, self.pos)
            lr = self.learning_rate(self.epoch * spe + self.pos)
            batch = slice(self.pos * B, (self.pos + 1) * B)
            loss, c = self.step(self.order[batch], lr, labels[batch])
            if not math.isfinite(loss):
                raise Diverged(
                    f"training diverged: the loss became {loss} in epoch {self.epoch + 1} (step {self.pos + 1}) "
                    f"at learning rate {lr:.4g}; try a lower --lr than {self.cfg.lr:g}")
            self.loss_sum += loss
            self.correct += c
            self.pos += 1
            self.on_step(self.pos, spe)
        self.seconds += time.perf_counter() - t0
        if not self.params_finite():   # the last update of the epoch; earlier ones showed in the next loss
            raise Diverged(f"training diverged: the weights became NaN or inf in epoch {self.epoch + 1}; "
                           f"try a lower --lr than {self.cfg.lr:g}")
        self.epoch += 1
        record = {"epoch": self.epoch, "lr": lr, "train_loss": self.loss_sum / n, "train_accuracy": self.correct / n}
        record |= self.validate()
        record["seconds"] = self.seconds
        if record["val_loss"] is not None and not math.isfinite(record["val_loss"]):
            raise Diverged(f"training diverged: the validation loss became {record['val_loss']} after epoch "
                           f"{self.epoch}; try a lower --lr than {self.cfg.lr:g}")
        self.order, self.pos = None, 0
        self.history.append(record)
        if self.cfg.patience and self.early_stop(self.epoch, record["val_accuracy"]):
            self.stopped = True
        self.on_epoch(record)
        return record

    def params_finite(self) -> bool:
        """Whether every parameter is finite. An update that overflows shows in the next step's
        loss, so this runs once an epoch, for the epoch's last update."""
        return all(np.isfinite(p.sum(dtype=np.float32)) for p in self.params)

    def should_stop(self) -> bool:
        """Whether the run should stop at this step boundary (set by a signal handler)."""
        return False

    def early_stop(self, epoch: int, val_accuracy: float) -> bool:
        """Keep a copy of the weights when validation accuracy improves; True once it has not
        improved for cfg.patience epochs."""
        if val_accuracy > self.best_val_accuracy:
            self.best_epoch, self.best_val_accuracy = epoch, val_accuracy
            for dst, src in zip(self.best_params, self.params):
                np.copyto(dst, src)
        return epoch - self.best_epoch >= self.cfg.patience

    def best_model(self):
        """The model with the best-validation weights (needs cfg.patience > 0 and a finished run)."""
        n = len(self.model.weights)
        return replace(self.model, weights=self.best_params[:n], biases=self.best_params[n:])

    def validate(self) -> dict:
        if len(self.val_idx) == 0:
            return {"val_loss": None, "val_accuracy": None}
        loss, acc = network.evaluate(self.E_eval, self.model, self.data.x_train, self.data.y_train, self.val_idx)
        return {"val_loss": loss, "val_accuracy": acc}
