"""The whole net: gradients against finite differences, and both engines against each other."""
import numpy as np
import pytest
from cifar_fixture import make_synthetic

from fastfcnn import network
from fastfcnn import kernels as K
from fastfcnn.data import Dataset
from fastfcnn.engine import get_engine
from fastfcnn.model import init_model
from fastfcnn.config import TrainConfig
from fastfcnn.train import Trainer


def loss64(model, xb, labels, smoothing, drop_u=None, p=0.0):
    """Mean softmax cross-entropy of the net, written independently of the kernels, in float64.
    drop_u[l] (for hidden activation l = 1..) is a fixed dropout draw: keep where u >= p."""
    mean, inv_std = (a.astype(np.float64) for a in model.input_transform())
    h = (xb.astype(np.float64) - mean) * inv_std
    if model.whiten is not None:
        h = h @ model.whiten.astype(np.float64).T + model.whiten_bias
    last = len(model.weights) - 1
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        h = h @ w.astype(np.float64).T + b
        if l < last:
            h = np.maximum(h, 0)
            if drop_u is not None:
                h = h * (drop_u[l + 1] >= p) / (1 - p)
    log_p = h - h.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    c = h.shape[1]
    target = np.full(h.shape, smoothing / c)
    target[np.arange(len(labels)), labels] += 1 - smoothing
    return float(-(target * log_p).sum(axis=1).mean())


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize("smoothing,dropout,whiten", [(0.0, 0.0, False), (0.1, 0.0, False),
                                                      (0.0, 0.4, False), (0.1, 0.5, True)])
def test_gradients_match_finite_differences(engine, smoothing, dropout, whiten):
    rng = np.random.default_rng(3)
    sizes = [12, 7, 5, 3]                      # 12 inputs = 3 channel planes of 4 pixels
    model = init_model(sizes, [120.0, 110.0, 100.0], [60.0, 50.0, 40.0], ["a", "b", "c"], rng,
                       image_shape=(3, 2, 2))
    if whiten:                                 # a fixed 12 -> 12 map before the first layer
        model.whiten = rng.standard_normal((12, 12), dtype=np.float32) * np.float32(0.3)
        model.whiten_bias = rng.standard_normal(12, dtype=np.float32)
    n = 5
    xb = rng.integers(0, 256, (n, 12), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int64)
    E = get_engine(engine)
    ws = network.workspace_for(E, model, n, dropout=dropout > 0)
    v = ws.rows(n)
    v.xb[:] = xb
    v.labels[:] = labels
    drop_u = None
    if dropout:
        for u in v.drop_u[1:-1]:
            u[:] = rng.random(u.shape, dtype=np.float32)
        drop_u = [None if u is None else u.astype(np.float64) for u in v.drop_u]
        assert all(((u < dropout).any() and (u >= dropout).any()) for u in drop_u[1:-1])
    grads_w = [np.zeros_like(w) for w in model.weights]
    grads_b = [np.zeros_like(b) for b in model.biases]
    logits = network.forward(E, model, model.input_transform(), v, dropout).copy()
    loss_sum, correct = network.backward(E, model, v, smoothing, grads_w, grads_b, dropout)
    assert correct == np.count_nonzero(logits.argmax(axis=1) == labels)

    def float64_loss(model, xb, labels, smoothing):
        return loss64(model, xb, labels, smoothing, drop_u, dropout)

    assert loss_sum / n == pytest.approx(float64_loss(model, xb, labels, smoothing), rel=1e-5)

    eps = 1e-3
    for params, grads in ((model.weights, grads_w), (model.biases, grads_b)):
        for p, g in zip(params, grads):
            numeric = np.zeros(p.shape)
            for i in np.ndindex(p.shape):
                saved = p[i]
                p[i] = saved + eps
                up = float64_loss(model, xb, labels, smoothing)
                p[i] = saved - eps
                down = float64_loss(model, xb, labels, smoothing)
                p[i] = saved
                numeric[i] = (up - down) / (2 * eps)
            np.testing.assert_allclose(g, numeric, rtol=2e-2, atol=2e-4)


def tiny_data(n_train=300, n_test=60, seed=0):
    x, y, xt, yt = make_synthetic(n_train, n_test, seed)
    return Dataset(x, y, xt, yt, [f"c{i}" for i in range(10)], (3, 32, 32))


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize("whiten", [False, True])
def test_forward_on_a_batch_gathered_normalised_is_the_same(engine, whiten):
    """Steps and evaluation gather their batch normalised (gather_normalise, gather_augment_normalise);
    from a raw batch, forward normalises it first. Both ways give the same logits, bit for bit,
    whitened or not."""
    rng = np.random.default_rng(4)
    model = init_model([12, 9, 3], [120.0, 110.0, 100.0], [60.0, 50.0, 40.0], ["a", "b", "c"], rng,
                       image_shape=(3, 2, 2))
    if whiten:
        model.whiten = rng.standard_normal((12, 12), dtype=np.float32) * np.float32(0.3)
        model.whiten_bias = rng.standard_normal(12, dtype=np.float32)
    x = rng.integers(0, 256, (40, 12), dtype=np.uint8)
    idx = rng.integers(0, 40, 7).astype(np.int64)
    E = get_engine(engine)
    logits = []
    for normalised in (False, True):
        v = network.workspace_for(E, model, 7).rows(7)
        v.xb[:] = 0 if normalised else x[idx]      # the normalised path must not read v.xb
        if normalised:
            E.gather_normalise(x, idx, *model.input_transform(), v.x_in)
        logits.append(network.forward(E, model, model.input_transform(), v, normalised=normalised).copy())
    np.testing.assert_array_equal(logits[0], logits[1])
    assert np.abs(logits[0]).max() > 0


def test_engines_agree_on_first_steps():
    data = tiny_data()
    losses = {}
    for engine in ("numba", "numpy"):
        cfg = TrainConfig(hidden=[33, 17], batch_size=37, engine=engine, val_size=30, seed=5)
        t = Trainer(cfg, data)
        order = t.rng.permutation(t.train_idx)
        losses[engine] = [t.step(order[s * 37:(s + 1) * 37], 0.05)[0] / 37 for s in range(6)]
    np.testing.assert_allclose(losses["numba"], losses["numpy"], rtol=1e-3)
    assert losses["numba"][-1] < losses["numba"][0]


def test_training_is_deterministic_and_learns():
    data = tiny_data()
    runs = []
    for _ in range(2):
        cfg = TrainConfig(hidden=[16], epochs=4, batch_size=32, val_size=50, seed=11)
        t = Trainer(cfg, data)
        history = t.run()
        runs.append((history, [w.copy() for w in t.model.weights]))
    (h1, w1), (h2, w2) = runs
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert h1[-1]["val_accuracy"] >= 0.9
    assert h1[-1]["train_loss"] < h1[0]["train_loss"]


def test_last_partial_batch_is_used():
    data = tiny_data(n_train=100)
    cfg = TrainConfig(hidden=[8], epochs=1, batch_size=32, val_size=10)
    t = Trainer(cfg, data)
    seen = []
    original = t.step
    t.step = lambda idx, lr, labels=None: (seen.append(idx.copy()), original(idx, lr, labels))[1]
    t.run()
    assert [len(i) for i in seen] == [32, 32, 26]
    assert sorted(np.concatenate(seen)) == sorted(t.train_idx)


def test_divergence_is_a_clear_error():
    from fastfcnn.errors import UserError
    cfg = TrainConfig(hidden=[8], epochs=2, batch_size=32, val_size=10, lr=1e6, warmup_epochs=0)
    with pytest.raises(UserError, match=r"diverged: the (validation )?loss became (nan|inf) (in|after) epoch [12].*lower --lr than 1e\+06"):
        Trainer(cfg, tiny_data(n_train=100)).run()


RECIPES = {
    "sgd": dict(),
    "nesterov": dict(nesterov=True),
    "adam": dict(optimizer="adam", lr=2e-3),
    "adamw": dict(optimizer="adamw", lr=2e-3, weight_decay=0.05),
    "step": dict(lr_schedule="step"),
    "constant": dict(lr_schedule="constant", warmup_epochs=0.5),
    "onecycle": dict(lr_schedule="onecycle", lr=0.1),
    "smoothing": dict(label_smoothing=0.1),
    "dropout": dict(dropout=0.3),
    "crop+flip": dict(crop_pad=2, flip=True, epochs=8),
    "zero-crop": dict(crop_pad=4, crop_mode="zero", epochs=8),
    "everything": dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, lr_schedule="onecycle", epochs=8,
                       dropout=0.2, crop_pad=2, flip=True, label_smoothing=0.1),
}   # whitened training: see test_cli (each fit is a 3072x3072 eigendecomposition)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_learns(recipe):
    data = tiny_data()
    cfg = TrainConfig(**{**dict(hidden=[16], epochs=4, batch_size=32, val_size=50, seed=11), **RECIPES[recipe]})
    t = Trainer(cfg, data)
    history = t.run()
    floor = 0.5 if cfg.crop_pad or cfg.flip else 0.9   # the random prototypes are not shift/flip invariant
    assert history[-1]["val_accuracy"] >= floor, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_augmented_dropout_training_is_deterministic():
    data = tiny_data()
    weights = []
    for _ in range(2):
        cfg = TrainConfig(hidden=[16, 8], epochs=2, batch_size=32, val_size=50, seed=2, dropout=0.3,
                          crop_pad=3, flip=True)
        t = Trainer(cfg, data)
        t.run()
        weights.append(t.model.weights)
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_augmentation_draws_shifts_in_range_and_keeps_labels():
    data = tiny_data(n_train=100)
    cfg = TrainConfig(hidden=[8], epochs=1, batch_size=64, val_size=10, crop_pad=3, flip=True)
    t = Trainer(cfg, data)
    v = t.ws.rows(64)
    idx = t.train_idx[:64]
    seen = set()
    for _ in range(20):
        t.gather(idx, v)
        seen |= set(t._shift[:, :64].ravel().tolist())
        assert t._flip[:64].any() and not t._flip[:64].all()
    assert seen == set(range(-3, 4))
    t.step(idx, 0.01)
    np.testing.assert_array_equal(v.labels, data.y_train[idx])


def test_early_stopping_keeps_best_weights():
    data = tiny_data()
    cfg = TrainConfig(hidden=[16], epochs=30, batch_size=32, val_size=50, seed=1, patience=2,
                      lr_schedule="constant", lr=0.5, momentum=0.0)
    t = Trainer(cfg, data)
    history = t.run()
    accs = [r["val_accuracy"] for r in history]
    assert t.best_epoch == 1 + int(np.argmax(accs))
    assert len(history) == t.best_epoch + 2 or len(history) == 30
    best = t.best_model()
    _, acc = network.evaluate(t.E, best, data.x_train, data.y_train, t.val_idx)
    assert acc == max(accs)


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_flip_tta_averages_the_logits_of_both_mirror_images(engine):
    rng = np.random.default_rng(5)
    side, n = 4, 37                                  # 3 planes of 4x4 pixels; batches of 16 + a remainder
    model = init_model([3 * side * side, 9, 4], [120.0] * 3, [60.0] * 3, list("abcd"), rng,
                       image_shape=(3, side, side))
    x = rng.integers(0, 256, (n, 3 * side * side), dtype=np.uint8)
    y = rng.integers(0, 4, n).astype(np.int64)
    idx = rng.permutation(n)[:29]
    mirrored = x.reshape(n, 3, side, side)[..., ::-1].reshape(n, -1)

    def logits64(images):
        mean, inv_std = (a.astype(np.float64) for a in model.input_transform())
        h = (images.astype(np.float64) - mean) * inv_std
        h = np.maximum(h @ model.weights[0].astype(np.float64).T + model.biases[0], 0)
        return h @ model.weights[1].astype(np.float64).T + model.biases[1]

    avg = (logits64(x[idx]) + logits64(mirrored[idx])) / 2
    log_p = avg - avg.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    want_loss = -log_p[np.arange(len(idx)), y[idx]].mean()
    want_acc = (avg.argmax(axis=1) == y[idx]).mean()

    E = get_engine(engine)
    loss, acc = network.evaluate(E, model, x, y, idx, batch=16, flip_tta=True)
    assert acc == want_acc
    assert loss == pytest.approx(want_loss, rel=1e-5)
    plain_loss, plain_acc = network.evaluate(E, model, x, y, idx, batch=16)
    assert plain_loss != pytest.approx(loss, rel=1e-3)  # the mirror view changed the logits
    # On images that are their own mirror image both views agree.
    sym = np.concatenate([x.reshape(n, 3, side, side)[..., :2], x.reshape(n, 3, side, side)[..., 1::-1]], axis=3)
    sym = np.ascontiguousarray(sym.reshape(n, -1))
    assert network.evaluate(E, model, sym, y, idx, batch=16, flip_tta=True) == pytest.approx(
        network.evaluate(E, model, sym, y, idx, batch=16), rel=1e-6)


def test_every_buffer_a_step_reads_starts_on_a_cache_line(tmp_path):
    """Weights, gradients, optimizer state, workspace and the products' scratch start on a 64-byte
    line (NumPy gives 16), in a fresh run and in a model loaded from disk."""
    from fastfcnn.model import load_model, save_model

    def offsets(arrays):
        return {a.ctypes.data % network.CACHE_LINE for a in arrays}

    cfg = TrainConfig(hidden=[33, 17], batch_size=37, engine="numba", val_size=30, seed=5, optimizer="adam")
    t = Trainer(cfg, tiny_data())
    ws = t.ws
    buffers = t.params + t.grads + t.opt.first + t.opt.second + ws._acts + ws._deltas + [ws._xb, ws.pack]
    assert offsets(buffers) == {0}
    save_model(tmp_path / "m.npz", t.model)
    loaded = load_model(tmp_path / "m.npz")
    assert offsets(loaded.weights + loaded.biases) == {0}
    assert all(np.array_equal(a, b) for a, b in zip(loaded.weights, t.model.weights))
    odd = network.aligned_copy(np.asfortranarray(np.arange(35, dtype=np.float32).reshape(5, 7)))
    assert odd.flags.c_contiguous and offsets([odd]) == {0}
    np.testing.assert_array_equal(odd, np.arange(35, dtype=np.float32).reshape(5, 7))


@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 0.0), ("sgd", 0.05), ("adamw", 0.05), ("adam", 0.05)])
def test_update_over_flat_buffers_is_the_update_of_each_array(optimizer, weight_decay):
    """The trainer updates all weights in one call and all biases in another, over flat buffers the
    model's arrays are views of: the same as updating each array alone, weight decay on weights only."""
    cfg = TrainConfig(hidden=[33, 17], batch_size=37, engine="numba", val_size=30, seed=5, optimizer=optimizer,
                      weight_decay=weight_decay, nesterov=optimizer == "sgd")
    t = Trainer(cfg, tiny_data())
    rng = np.random.default_rng(1)
    assert all(p.base is not None for p in t.params)                # views, so the update reaches the model
    assert [w.ctypes.data for w in t.model.weights + t.model.biases] == [p.ctypes.data for p in t.params]
    for arrays in (t.params, t.grads, t.opt.first, t.opt.second):
        for a in arrays:
            a[...] = rng.standard_normal(a.shape, dtype=np.float32)
    for a in t.opt.second:
        np.abs(a, out=a)                                            # a second moment is never negative
    t.opt.updates = 2
    before = [[a.copy() for a in arrays] for arrays in (t.params, t.grads, t.opt.first, t.opt.second)]
    t.update(0.1)
    n_w = len(t.model.weights)
    for i, (p, g, m1) in enumerate(zip(*before[:3])):
        wd = np.float32(weight_decay if i < n_w else 0.0)
        if optimizer == "sgd":
            K.sgd_momentum_update(p, g, m1, np.float32(0.1), np.float32(cfg.momentum), wd, True)
        else:
            K.adam_update(p, g, m1, before[3][i], np.float32(0.1), np.float32(cfg.beta1), np.float32(cfg.beta2),
                          np.float32(cfg.adam_eps), wd, optimizer == "adamw", 3)
        # vector and scalar code take fastmath's approximate division and sqrt differently; a decay
        # applied to the wrong arrays would be off by lr * weight_decay = 0.5 %
        np.testing.assert_allclose(t.params[i], p, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(t.opt.first[i], m1, rtol=2e-5, atol=1e-6)
    # the zeros between the arrays of a buffer stay zero
    groups = [group[0] for group in t._update_groups]              # the parameter buffer, cut where decay stops
    assert len(groups) == (2 if weight_decay else 1)
    assert all(a.ctypes.data + a.nbytes == b.ctypes.data for a, b in zip(groups, groups[1:]))
    flat = np.concatenate(groups)
    covered = np.zeros(flat.size, bool)
    for p in t.params:
        start = (p.ctypes.data - groups[0].ctypes.data) // 4
        covered[start : start + p.size] = True
    assert (flat[~covered] == 0).all() and (~covered).any()
