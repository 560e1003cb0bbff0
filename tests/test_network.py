"""The whole net: gradients against finite differences, and both engines against each other."""
import numpy as np
import pytest
from cifar_fixture import make_synthetic

from fastfcnn import network
from fastfcnn.data import CIFAR10
from fastfcnn.engine import get_engine
from fastfcnn.model import init_model
from fastfcnn.train import TrainConfig, Trainer


def float64_loss(model, xb, labels, smoothing):
    """Mean softmax cross-entropy of the net, written independently of the kernels, in float64."""
    mean, inv_std = (a.astype(np.float64) for a in model.input_transform())
    h = (xb.astype(np.float64) - mean) * inv_std
    last = len(model.weights) - 1
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        h = h @ w.astype(np.float64).T + b
        if l < last:
            h = np.maximum(h, 0)
    log_p = h - h.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    c = h.shape[1]
    target = np.full(h.shape, smoothing / c)
    target[np.arange(len(labels)), labels] += 1 - smoothing
    return float(-(target * log_p).sum(axis=1).mean())


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradients_match_finite_differences(engine, smoothing):
    rng = np.random.default_rng(3)
    sizes = [12, 7, 5, 3]                      # 12 inputs = 3 channel planes of 4 pixels
    model = init_model(sizes, [120.0, 110.0, 100.0], [60.0, 50.0, 40.0], ["a", "b", "c"], rng)
    n = 5
    xb = rng.integers(0, 256, (n, 12), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int64)
    E = get_engine(engine)
    ws = network.Workspace(sizes, n)
    v = ws.rows(n)
    v.xb[:] = xb
    v.labels[:] = labels
    grads_w = [np.zeros_like(w) for w in model.weights]
    grads_b = [np.zeros_like(b) for b in model.biases]
    network.forward(E, model, model.input_transform(), v)
    loss_sum = network.backward(E, model, v, smoothing, grads_w, grads_b)
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
    return CIFAR10(x, y, xt, yt, [f"c{i}" for i in range(10)])


def test_engines_agree_on_first_steps():
    data = tiny_data()
    losses = {}
    for engine in ("numba", "numpy"):
        cfg = TrainConfig(hidden=[33, 17], batch_size=37, engine=engine, val_size=30, seed=5)
        t = Trainer(cfg, data)
        t.x_norm = t.model.input_transform()
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
    t.step = lambda idx, lr: (seen.append(idx.copy()), original(idx, lr))[1]
    t.run()
    assert [len(i) for i in seen] == [32, 32, 26]
    assert sorted(np.concatenate(seen)) == sorted(t.train_idx)


def test_divergence_is_a_clear_error():
    from fastfcnn.errors import UserError
    cfg = TrainConfig(hidden=[8], epochs=2, batch_size=32, val_size=10, lr=1e6, warmup_epochs=0)
    with pytest.raises(UserError, match=r"diverged: the loss became (nan|inf) in epoch [12] \(step \d+\).*lower --lr than 1e\+06"):
        Trainer(cfg, tiny_data(n_train=100)).run()
