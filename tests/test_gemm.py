"""gemm_nt against NumPy on shapes that hit every remainder of its tiling: the 4x6 register tile,
the MB x NB parallel blocks and the KC reduction blocks (see kernels/matmul.py)."""
import numpy as np
import pytest

from fastfcnn import kernels as K
from fastfcnn import reference as R
from fastfcnn.kernels import matmul

SIZES = [1, 3, 5, 17, 33, 65, 129]


def check(m, n, k, mode=R.PLAIN, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    mask = rng.standard_normal((m, n), dtype=np.float32)
    got = np.full((m, n), np.nan, np.float32)
    want = np.empty((m, n), np.float32)
    K.gemm_nt(a, b, got, bias, mask, mode)
    R.gemm_nt(a, b, want, bias, mask, mode)
    scale = max(float(np.abs(want).max()), 1.0) if want.size else 1.0
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale if want.size else 0.0
    assert err <= 1e-4 * max(1.0, np.sqrt(k) / 16), (m, n, k, err)


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("n", SIZES)
def test_tile_remainders(m, n):
    check(m, n, 9, seed=m * 1000 + n)


@pytest.mark.parametrize("m,n", [(matmul.MB + 1, matmul.NB + 1), (matmul.MB - 1, 2 * matmul.NB + 3),
                                 (2 * matmul.MB + 5, matmul.NB - 1)])
@pytest.mark.parametrize("k", [1, 5, 129, matmul.KC - 1, matmul.KC + 1, 2 * matmul.KC + 3])
@pytest.mark.parametrize("mode", [R.PLAIN, R.BIAS_RELU, R.MASK])
def test_block_remainders(m, n, k, mode):
    check(m, n, k, mode, seed=k)


def test_empty_reduction_writes_zeros_plus_bias():
    check(5, 7, 0, R.BIAS)


def test_wide_vectors_only_where_the_cpu_has_avx512():
    from llvmlite.binding import FeatureMap
    from fastfcnn.kernels.config import wide_vector_features

    avx2 = FeatureMap(); avx2.update({"avx2": True, "fma": True, "avx512f": False})
    assert wide_vector_features(avx2) is None
    avx512 = FeatureMap(); avx512.update({"avx2": True, "avx512f": True})
    assert wide_vector_features(avx512).split(",") == ["+avx2", "+avx512f", "-prefer-256-bit"]


def test_kernels_compile_with_the_chosen_features():
    import os
    from llvmlite.binding import get_host_cpu_features
    from numba.core.registry import cpu_target

    features = cpu_target.target_context.codegen()._get_host_cpu_features()
    if os.environ.get("NUMBA_CPU_FEATURES"):     # the user's choice is kept as given
        assert features == os.environ["NUMBA_CPU_FEATURES"]
    else:
        assert features.endswith(",-prefer-256-bit") == bool(get_host_cpu_features().get("avx512f"))
