import numpy as np
import pytest

from fastfcnn.errors import UserError
from fastfcnn.model import init_model, load_model, model_arrays, save_model


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
    m = init_model([12, 2], [10.0, 20.0, 30.0], [1.0, 2.0, 4.0], ["a", "b"], np.random.default_rng(0),
                   image_shape=(3, 2, 2))
    mean, inv_std = m.input_transform()
    np.testing.assert_array_equal(mean, np.repeat([10, 20, 30], 4).astype(np.float32))
    np.testing.assert_array_equal(inv_std, np.repeat([1, 0.5, 0.25], 4).astype(np.float32))


def test_inconsistent_model_is_rejected(tmp_path):
    m = init_model([12, 4, 2], [1.0] * 3, [1.0] * 3, ["a", "b", "c"], np.random.default_rng(0), image_shape=(3, 2, 2))
    save_model(tmp_path / "m.npz", m)
    with pytest.raises(UserError, match="3 class names for 2 outputs"):
        load_model(tmp_path / "m.npz")


def test_whitened_model_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    m = init_model([5, 4, 2], [1.0] * 3, [2.0] * 3, ["a", "b"], rng, image_shape=(3, 2, 2))
    m.whiten = np.asfortranarray(rng.standard_normal((5, 12), dtype=np.float32))
    m.weights[0] = np.asfortranarray(m.weights[0])
    m.whiten_bias = rng.standard_normal(5, dtype=np.float32)
    assert m.sizes == [5, 4, 2] and m.n_inputs == 12 and m.input_transform()[0].shape == (12,)
    save_model(tmp_path / "m.npz", m)
    back = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.whiten, m.whiten)
    np.testing.assert_array_equal(back.weights[0], m.weights[0])
    # a file may hold Fortran-ordered arrays; the kernels get C order, whose rows are contiguous
    assert back.whiten.flags.c_contiguous and back.weights[0].flags.c_contiguous
    np.testing.assert_array_equal(back.whiten_bias, m.whiten_bias)
    assert back.n_inputs == 12
    m.whiten_bias = m.whiten_bias[:4]
    save_model(tmp_path / "bad.npz", m)
    with pytest.raises(UserError, match="whitening map"):
        load_model(tmp_path / "bad.npz")


def small_model(image_shape=(1, 2, 3)):
    d = 6
    mean, std = ([100.0], [50.0]) if image_shape else (np.arange(d, dtype=np.float32), np.ones(d, np.float32))
    return init_model([d, 4, 3], mean, std, ["x", "y", "z"], np.random.default_rng(2), {"hidden": [4]}, image_shape)


@pytest.mark.parametrize("image_shape", [(1, 2, 3), None])
def test_image_and_feature_models_round_trip(tmp_path, image_shape):
    m = small_model(image_shape)
    save_model(tmp_path / "m.npz", m)
    back = load_model(tmp_path / "m.npz")
    assert back.image_shape == image_shape and back.input_kind == ("image" if image_shape else "features")
    for a, b in zip(m.input_transform(), back.input_transform()):
        np.testing.assert_array_equal(a, b)
    with np.load(tmp_path / "m.npz") as z:
        assert int(z["format_version"]) == 2


def test_format_version_1_loads_as_cifar(tmp_path):
    m = init_model([3072, 2], [1.0] * 3, [1.0] * 3, ["a", "b"], np.random.default_rng(0))
    arrays = model_arrays(m)
    arrays["format_version"] = np.array(1)
    del arrays["input_kind"], arrays["image_shape"]
    np.savez(tmp_path / "v1.npz", **arrays)
    assert load_model(tmp_path / "v1.npz").image_shape == (3, 32, 32)


def _broken(tmp_path, change):
    arrays = model_arrays(small_model())
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize("change,message", [
    (lambda a: a.update(format_version=np.array(99)), "format version 99"),
    (lambda a: a.pop("std"), "missing std"),
    (lambda a: a.pop("b1"), "do not match"),
    (lambda a: a.update(extra=np.zeros(2)), "unexpected array.*extra"),
    (lambda a: a.update(W0=np.zeros(4, np.float32)), "W0 is 1-d"),
    (lambda a: a.update(W1=np.zeros((3, 5), np.float32)), "do not chain at layer 1"),
    (lambda a: a.update(mean=np.array(1.0)), "normalisation statistics"),
    (lambda a: a.update(std=np.array([0.0], np.float32)), "std > 0"),
    (lambda a: a["W1"].__setitem__((0, 0), np.nan), "NaN or inf"),
    (lambda a: a.update(image_shape=np.array([2, 2, 2])), "image shape"),
    (lambda a: a.update(input_kind=np.array("audio")), "input kind"),
    (lambda a: a.update(config=np.array("{not json")), "not a readable fastfcnn model"),
])
def test_malformed_model_files_are_one_clear_error(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        load_model(_broken(tmp_path, change))


def test_npy_and_corrupt_members_are_clear_errors(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3))
    with pytest.raises(UserError, match="not a readable fastfcnn model.*npy"):
        load_model(tmp_path / "w.npy")
    good = tmp_path / "good.npz"
    save_model(good, small_model())
    raw = bytearray(good.read_bytes())
    start = raw.index(b"W0.npy") + 200          # inside the first member's data
    raw[start : start + 64] = b"\xff" * 64
    (tmp_path / "corrupt.npz").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="fastfcnn model"):
        load_model(tmp_path / "corrupt.npz")
