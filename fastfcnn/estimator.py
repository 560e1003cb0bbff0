"""FCNNClassifier: fastfcnn as a scikit-learn classifier (pipelines, grid searches, cross-validation).

fit() is the library call behind `fastfcnn train` (fastfcnn.fit.fit) on a Dataset made by
from_arrays, so the same data, options, seed and thread count give the same model as the CLI.
scikit-learn is an optional extra: `pip install 'fastfcnn[sklearn]'`.
"""
from __future__ import annotations

import math
import numbers
import operator
import re
from contextlib import contextmanager
from dataclasses import MISSING
from pathlib import Path

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
    from sklearn.utils.validation import check_array, check_is_fitted, check_X_y, validate_data
except ImportError as e:  # pragma: no cover - exercised in a subprocess without sklearn
    raise ImportError("fastfcnn.FCNNClassifier needs scikit-learn: pip install 'fastfcnn[sklearn]'") from e

from . import network
from .config import TrainConfig, option_fields
from .data import Dataset, from_arrays
from .engine import get_engine, max_threads
from .errors import UserError
from .fit import fit as fit_run
from .model import load_model, save_model
from .predict import rows_for_model
from .train import Trainer

# partial_fit runs one epoch per call over the data it is given: no validation split, no early
# stopping, and a constant learning rate (a schedule needs to know the run's length).
PARTIAL_FIT_OPTIONS = {"epochs": 1, "val_size": 0.0, "patience": 0, "lr_schedule": "constant", "warmup_epochs": 0.0}


class FCNNClassifier(ClassifierMixin, BaseEstimator):
    # __doc__ is built below from TrainConfig, so the parameter docs cannot drift from the options.

    def __init__(self, hidden=(64, 64), *, epochs=20, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                 nesterov=False, weight_decay=5e-4, beta1=0.9, beta2=0.999, adam_eps=1e-8, lr_schedule="cosine",
                 warmup_epochs=1.0, label_smoothing=0.0, dropout=0.0, crop_pad=0, crop_mode="reflect", flip=False,
                 whiten="none", whiten_dims=256, whiten_eps=0.1, patience=0, engine="numba", precision="fp32", seed=0,
                 val_size=0.1,
                 n_threads=None, random_state=None, warm_start=False):
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.beta1 = beta1
        self.beta2 = beta2
        self.adam_eps = adam_eps
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.label_smoothing = label_smoothing
        self.dropout = dropout
        self.crop_pad = crop_pad
        self.crop_mode = crop_mode
        self.flip = flip
        self.whiten = whiten
        self.whiten_dims = whiten_dims
        self.whiten_eps = whiten_eps
        self.patience = patience
        self.engine = engine
        self.precision = precision
        self.seed = seed
        self.val_size = val_size
        self.n_threads = n_threads
        self.random_state = random_state
        self.warm_start = warm_start

    # ---- training ------------------------------------------------------------------------------

    def fit(self, X, y):
        """Train on X, y (see the class docstring for the layouts X may have); returns self.

        With warm_start=True and a fitted net, training continues from its weights (and keeps its
        input normalisation) with a fresh optimizer and schedule; otherwise it starts afresh.
        """
        warm = self.warm_start and hasattr(self, "model_")
        X, y = self._validate(X, y, reset=not warm)
        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
        _need_two_classes(classes)
        if warm and not np.array_equal(classes, self.classes_):
            raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                             f"call to fit. Previously got {self.classes_}, `y` has {classes}")
        cfg = self._config()
        with _value_errors():
            data = from_arrays(X, codes.reshape(-1), class_names=[str(c) for c in classes], where="X, y")
            with _threads(self.n_threads, cfg.engine) as threads:
                if warm:
                    trainer = Trainer(cfg, data)
                    trainer.start_from(self.model_)
                    history = trainer.run()
                    model = trainer.best_model() if cfg.patience else trainer.model
                else:
                    with _blas_restored():             # fit_run limits BLAS's threads for good
                        run = fit_run(cfg, data, threads=threads)
                    history = run.history
                    model = run.model if run.best_model is None else run.best_model
        self.classes_ = classes
        self._fitted(model, history, append=warm)
        return self

    def partial_fit(self, X, y, classes=None):
        """One epoch over X, y, continuing from the current weights and optimizer state; returns self.

        classes (every label y may ever hold) is required on the first call. The first call
        that creates the net fits its input normalisation on that call's data; later calls keep
        it. Options are read when the partial-fit run starts (the first call, or the first after
        fit, load or unpickling); see the class docstring for what partial_fit leaves out.
        """
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        known = unique_labels(classes) if first else self.classes_
        if not first and classes is not None and not np.array_equal(known, unique_labels(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                             f"was: {self.classes_!r}")
        X, y = self._validate(X, y, reset=first)
        check_classification_targets(y)
        _need_two_classes(known)
        try:
            codes = np.searchsorted(known, y)
        except TypeError:                           # e.g. int labels for string classes
            codes = np.zeros(len(y), np.int64) - 1
        if not np.array_equal(known[np.clip(codes, 0, len(known) - 1)], y):
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {known}. "
                             f"'y' has {unique_labels(y)}.")
        with _value_errors():
            inputs = self.model_ if not first else _Inputs.of(X)
            rows = rows_for_model(X, inputs, "X")
            data = Dataset(rows, codes.astype(np.int64), None, None, [str(c) for c in known], inputs.image_shape)
            state = self._resume_state()
            cfg = state["cfg"] if state else self._config(**PARTIAL_FIT_OPTIONS)
            with _threads(self.n_threads, cfg.engine):
                trainer = self._partial_trainer(cfg, data)
                record = trainer.run_epoch()
        self.classes_ = known
        self._fitted(trainer.model, [record], append=not first)
        self._trainer = trainer
        return self

    def _partial_trainer(self, cfg, data) -> Trainer:
        """The Trainer partial_fit continues: the live one, fed the new data, or a new one holding
        the current weights (and the optimizer moments and generator of the run, when known)."""
        trainer = self.__dict__.get("_trainer")
        if trainer is not None and min(cfg.batch_size, len(data.y_train)) <= trainer.ws.capacity:
            trainer.feed(data)
            return trainer
        state = self._resume_state()
        trainer = Trainer(cfg, data)
        if hasattr(self, "model_"):
            trainer.start_from(self.model_, state)
        self.__dict__.pop("_resume", None)
        return trainer

    def _resume_state(self) -> dict | None:
        trainer = self.__dict__.get("_trainer")
        return partial_state(trainer) if trainer is not None else self.__dict__.get("_resume")

    def _fitted(self, model, history: list, append: bool) -> None:
        """Set the fitted attributes from a run's model and its per-epoch records."""
        before = list(getattr(self, "history_", [])) if append else []
        new = [r | {"epoch": len(before) + i + 1} for i, r in enumerate(history)]
        self.model_ = model
        self.history_ = before + new
        self.n_iter_ = len(self.history_)
        self.loss_curve_ = [r["train_loss"] for r in self.history_]
        scores = [r["val_accuracy"] for r in self.history_ if r["val_accuracy"] is not None]
        self.validation_scores_ = scores or None
        val = [r["val_accuracy"] for r in new if r["val_accuracy"] is not None]
        self.best_validation_score_ = max(val) if val and model.config.get("patience") else None
        self.__dict__.pop("_trainer", None)
        self.__dict__.pop("_resume", None)

    def _config(self, **changes) -> TrainConfig:
        """The TrainConfig of these parameters (random_state, when set, gives the seed), checked."""
        values = {f.name: _coerce(f, getattr(self, f.name)) for f in option_fields()}
        values["hidden"] = _hidden(self.hidden)
        if self.random_state is not None:
            values["seed"] = _seed(self.random_state)
        cfg = TrainConfig(**values | changes)
        with _value_errors():
            cfg.check()
        return cfg

    def _validate(self, X, y="no_validation", reset=True):
        """X (and y) checked the scikit-learn way: feature vectors become float32 (N, D); images,
        (N, H, W[, C]) uint8 (or flat channel-planar rows for a net trained on images), stay uint8."""
        images = _ndim(X) > 2 if reset else self.model_.image_shape is not None
        if not images:
            return validate_data(self, X, y, reset=reset, dtype=np.float32)
        # ensure_2d=False also skips the check of X.shape[1] against n_features_in_ (H * W * C for
        # images); rows_for_model checks an image's shape against the net's instead.
        out = validate_data(self, X, y, reset=reset, allow_nd=True, dtype=None, ensure_2d=False)
        X = out[0] if isinstance(out, tuple) else out
        if X.dtype != np.uint8 or X.ndim > 4:
            raise ValueError(f"images must be uint8 (0..255) arrays (N, H, W) or (N, H, W, C), got {X.dtype} "
                             f"of shape {X.shape}")
        if reset:
            self.n_features_in_ = math.prod(X.shape[1:])
        return out

    # ---- prediction ----------------------------------------------------------------------------

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = self._validate(X, reset=False)
        with _value_errors():
            rows = rows_for_model(X, self.model_, "X")
            with _threads(self.n_threads, self.engine):
                return network.predict_logits(get_engine(self.engine), self.model_, rows)

    def decision_function(self, X) -> np.ndarray:
        """The net's logits, float64 (N, n_classes); for 2 classes, as scikit-learn's binary
        classifiers do, one score per row: logit[1] - logit[0] (> 0 predicts classes_[1])."""
        z = self._logits(X).astype(np.float64)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict(self, X) -> np.ndarray:
        """The class of the largest logit (the first on ties, as `fastfcnn evaluate` counts)."""
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def predict_log_proba(self, X) -> np.ndarray:
        """Log class probabilities (log-softmax of the logits, float64), columns in classes_ order."""
        z = self._logits(X).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
        return z

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits, float64), columns in classes_ order."""
        return np.exp(self.predict_log_proba(X))

    # ---- files and pickling --------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the net as model.npz, the file `fastfcnn train` writes (`fastfcnn evaluate` and
        `fastfcnn predict` read it). Class labels are stored as their str()."""
        check_is_fitted(self, "model_")
        with _value_errors():
            save_model(Path(path), self.model_)

    @classmethod
    def load(cls, path, **params) -> "FCNNClassifier":
        """A fitted estimator from a model.npz (written by save or by `fastfcnn train`).

        The parameters are the options the net was trained with (its stored config), updated
        by `params` (e.g. n_threads=2). classes_ are the stored class names, as integers when
        every name is an integer (labels 0..K-1 of an .npz dataset), as floats when every name
        is a float, else as strings. The file holds no training history: history_, n_iter_ and
        the other curves are only set once this estimator trains.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        with _value_errors():
            model = load_model(path)
        known = {f.name for f in option_fields()}
        options = {k: v for k, v in model.config.items() if k in known}
        if "hidden" in options:
            options["hidden"] = tuple(options["hidden"])
        est = cls(**options | params)
        est.model_ = model
        est.classes_ = _labels_from_names(model.class_names)
        est.n_features_in_ = model.n_inputs
        return est

    def __getstate__(self):
        """Picklable state: a partial-fit Trainer holds Numba workspaces and the last call's data,
        so only what continues the run is kept (its options, optimizer moments, generator, epoch);
        the next partial_fit rebuilds the Trainer around the weights in model_."""
        state = dict(super().__getstate__())       # object.__getstate__ is the live __dict__
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            state["_resume"] = partial_state(trainer)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True      # (N, H, W[, C]) uint8 images
        return tags


class _Inputs:
    """What rows_for_model reads of a model (image_shape, n_inputs), for data before any net exists."""

    def __init__(self, image_shape, n_inputs):
        self.image_shape, self.n_inputs = image_shape, n_inputs

    @classmethod
    def of(cls, X: np.ndarray) -> "_Inputs":
        if X.ndim == 2:
            return cls(None, X.shape[1])
        shape = (1, *X.shape[1:]) if X.ndim == 3 else (X.shape[3], X.shape[1], X.shape[2])
        return cls(shape, math.prod(shape))


def partial_state(trainer: Trainer) -> dict:
    """What a partial-fit run carries besides the weights."""
    return {"cfg": trainer.cfg, "opt": trainer.opt, "rng": trainer.rng, "epoch": trainer.epoch}


@contextmanager
def _threads(n_threads, engine: str):
    """n_threads threads for one call, restored afterwards; yields the count in force (more than
    the cores means all cores, so a grid tuned on a bigger machine still runs).

    The numba engine's count is Numba's, per calling thread; the numpy engine's is BLAS's, per
    process. Only the engine's own pool is touched: threadpoolctl scans the loaded libraries on
    every call (about 5 ms), too slow for predicting a few rows at a time.
    """
    if n_threads is not None and not (isinstance(n_threads, numbers.Integral) and n_threads >= 1):
        raise ValueError(f"n_threads must be a positive number of threads or None (all cores), got {n_threads!r}")
    top = max_threads(engine)
    n = top if n_threads is None else min(int(n_threads), top)
    if engine != "numba":
        from threadpoolctl import threadpool_limits
        with threadpool_limits(n, user_api="blas"):
            yield n
        return
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(before)


@contextmanager
def _blas_restored():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=None):     # records the pools' sizes, restores them on exit
        yield


@contextmanager
def _value_errors():
    """The library's UserError as scikit-learn's ValueError, naming parameters, not CLI flags."""
    try:
        yield
    except UserError as e:
        raise ValueError(_param_names(str(e))) from e


def _param_names(message: str) -> str:
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), message)


def _ndim(X) -> int:
    """X's number of dimensions, looked at before validation (which depends on it)."""
    ndim = getattr(X, "ndim", None)
    if isinstance(ndim, int):
        return ndim
    try:
        return np.asarray(X).ndim
    except (TypeError, ValueError):
        return 2        # not an array: validate_data says why


def _need_two_classes(classes) -> None:
    if len(classes) < 2:
        raise ValueError(f"Classifier can't train when only one class is present: y has 1 class "
                         f"({classes[0]!r}); a classifier needs at least 2")


def _coerce(f, value):
    """NumPy scalars (from grids) as the Python types TrainConfig checks for; other values as given."""
    if f.type == "int" and isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if f.type == "float" and isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    if f.type == "bool" and isinstance(value, np.bool_):
        return bool(value)
    return value


def _hidden(hidden) -> list:
    """hidden as the list of ints TrainConfig holds: a sequence of widths, or one width."""
    if isinstance(hidden, numbers.Integral):
        return [int(hidden)]
    try:
        return [operator.index(h) for h in hidden]
    except TypeError:
        raise ValueError(f"hidden must be a sequence of layer widths like (64, 64), got {hidden!r}") from None


def _seed(random_state) -> int:
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, (bool, np.bool_)):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, a RandomState or None, got {random_state}")
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _labels_from_names(names: list) -> np.ndarray:
    """Class labels from stored names: ints or floats when every name is one written plainly."""
    for kind in (int, float):
        try:
            values = [kind(n) for n in names]
        except ValueError:
            continue
        if [str(v) for v in values] == list(names):
            return np.array(values)
    return np.array(names)


def _parameters_doc() -> str:
    lines = []
    for f in option_fields():
        default = tuple(f.default_factory()) if f.default is MISSING else f.default
        kind = "tuple of int" if f.name == "hidden" else f.type
        lines += [f"    {f.name} : {kind}, default={default!r}", f"        {f.metadata['help']}"]
    return "\n".join(lines)


FCNNClassifier.__doc__ = f"""A fully connected net trained by fastfcnn's parallel Numba kernels,
as a scikit-learn classifier: a much faster stand-in for MLPClassifier.

    clf = FCNNClassifier(hidden=(64, 64), epochs=20, lr=0.05).fit(X_train, y_train)
    clf.score(X_test, y_test); clf.predict_proba(X_test[:5]); clf.save("model.npz")

X is feature vectors (N, D) of any numeric dtype (converted once to float32; DataFrame column
names become feature_names_in_), or uint8 images (N, H, W) or (N, H, W, C), which stay uint8 and
are the only input crop_pad and flip apply to. y holds any labels; classes_ are its sorted values.

Parameters
----------
The training options are those of `fastfcnn train` (fastfcnn.config.TrainConfig), with the
same names and defaults (hidden is a tuple here: a list default would be shared and mutable).
{_parameters_doc()}
    n_threads : int or None, default=None
        Kernel threads for fit and predict (None, or more than there are: every core). Numba's
        thread count is set for each call and restored after it. With joblib (n_jobs > 1 in GridSearchCV or
        cross_val_score) keep n_jobs * n_threads at most the number of cores.
    random_state : int, RandomState or None, default=None
        When not None it replaces `seed`: an int is the seed, a RandomState draws one at each
        fit. None keeps `seed`, so a fit is reproducible by default (unlike MLPClassifier's).
    warm_start : bool, default=False
        fit continues from the fitted weights (and input normalisation) instead of starting
        afresh; the optimizer and the learning-rate schedule start over, as in MLPClassifier.

Early stopping, in MLPClassifier's terms: early_stopping=True is patience > 0, n_iter_no_change
is patience, and validation_fraction is val_size (a fraction below 1, or a row count). These are
the CLI's options under their own names rather than aliases, so that a run's config (metrics.json,
model.npz) is this estimator's parameters as they are and get_params has one name per setting.
Unlike MLPClassifier, val_size (0.1) is held out even without early stopping, exactly as
`fastfcnn train` does, to report validation accuracy each epoch; val_size=0 trains on every row.
With patience > 0 the weights of the best validation epoch are kept (improvement means a higher
validation accuracy; there is no tol).

partial_fit runs one epoch over the rows it is given with
{", ".join(f"{k}={v!r}" for k, v in PARTIAL_FIT_OPTIONS.items())}
(the other options as set when its run starts). Between calls it keeps the optimizer's moments
and the shuffling generator, also across pickling and deepcopy: n calls on the same rows train
exactly as fit with epochs=n and those options. After fit or load it starts new moments from the
fitted weights.

Attributes
----------
classes_ : ndarray (n_classes,)
n_features_in_ : int
    Features per row (H * W * C for images).
feature_names_in_ : ndarray of str
    The columns of a DataFrame X.
model_ : fastfcnn.model.Model
    The net: weights, input normalisation, class names and the options it was trained with.
history_ : list of dict
    One record per epoch, as in metrics.json (epoch, lr, train_loss, train_accuracy,
    val_loss, val_accuracy, seconds); warm_start fits and partial_fit append.
n_iter_ : int
    Epochs run (len(history_)).
loss_curve_ : list of float
    Training loss of each epoch.
validation_scores_ : list of float or None
    Validation accuracy of each epoch that had a validation split (None: none had).
best_validation_score_ : float or None
    With early stopping (patience > 0), the validation accuracy of the weights kept.
"""
