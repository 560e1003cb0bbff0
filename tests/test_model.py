import numpy as np
import pytest

from fastfcnn.errors import UserError
from fastfcnn.model import init_model, load_model, save_model


def test_he_init_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    m = init_model([3072, 256, 10], [125.0, 122.0, 113.0], [62.0, 61.0, 66.0], list("abcdefghij"), rng,
                   {"hidden": [256]})
    assert m.weights[0].dtype == np.float32 and m.weights[0].shape == (256, 3072)
    assert m.weights[0].std() == pytest.approx(np.sqrt(2 / 3072), rel=0.02)
    assert not m.biases[0].any()
    save_model(tmp_path / "m.npz", m)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left behind
    back = load_model(tmp_path / "m.npz")
    assert back.sizes == [3072, 256, 10] and back.class_names == list("abcdefghij")
    assert back.config == {"hidden": [256]}
    for a, b in zip(m.weights + m.biases + [m.mean, m.std], back.weights + back.biases + [back.mean, back.std]):
        np.testing.assert_array_equal(a, b)


def test_input_transform_expands_channels():
    m = init_model([12, 2], [10.0, 20.0, 30.0], [1.0, 2.0, 4.0], ["a", "b"], np.random.default_rng(0))
    mean, inv_std = m.input_transform()
    np.testing.assert_array_equal(mean, np.repeat([10, 20, 30], 4).astype(np.float32))
    np.testing.assert_array_equal(inv_std, np.repeat([1, 0.5, 0.25], 4).astype(np.float32))


def test_inconsistent_model_is_rejected(tmp_path):
    m = init_model([12, 4, 2], [1.0] * 3, [1.0] * 3, ["a", "b", "c"], np.random.default_rng(0))
    save_model(tmp_path / "m.npz", m)
    with pytest.raises(UserError, match="3 class names for 2 outputs"):
        load_model(tmp_path / "m.npz")


def test_whitened_model_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    m = init_model([5, 4, 2], [1.0] * 3, [2.0] * 3, ["a", "b"], rng)
    m.whiten = rng.standard_normal((5, 12), dtype=np.float32)
    m.whiten_bias = rng.standard_normal(5, dtype=np.float32)
    assert m.sizes == [5, 4, 2] and m.n_inputs == 12 and m.input_transform()[0].shape == (12,)
    save_model(tmp_path / "m.npz", m)
    back = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.whiten, m.whiten)
    np.testing.assert_array_equal(back.whiten_bias, m.whiten_bias)
    assert back.n_inputs == 12
    m.whiten_bias = m.whiten_bias[:4]
    save_model(tmp_path / "bad.npz", m)
    with pytest.raises(UserError, match="whitening map"):
        load_model(tmp_path / "bad.npz")
