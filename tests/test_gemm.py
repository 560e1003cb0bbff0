"""gemm_nt and gemm_op against NumPy on shapes that hit every remainder of their tilings: the
register tiles (4x6 dot products; 8x32 or 6x16 outer products), the parallel blocks and the reduction
blocks (see kernels/matmul.py)."""
import os

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


PACK = K.pack_workspace(matmul.packed_a_floats(4 * matmul.OMB, 4 * matmul.OKC))   # room for every op(a) below


class Forced(dict):
    """A stand-in for matmul.B_PLANS that answers `in_place` for every shape."""

    def __init__(self, in_place):
        super().__init__()
        self.in_place = in_place

    def get(self, key, default=None):
        return self.in_place


def gemm_op_each_way(*args):
    """gemm_op(*args) with b packed and with b read in place (a (K, N) b; a transposed b is always
    packed): the two must give the same bits. Returns the output."""
    out, plans = args[4], matmul.B_PLANS
    results = []
    try:
        for in_place in (False, True):
            matmul.B_PLANS = Forced(in_place)
            out.fill(np.nan)
            K.gemm_op(*args)
            results.append(out.copy())
    finally:
        matmul.B_PLANS = plans
    np.testing.assert_array_equal(results[0], results[1])
    return out


def check_op(m, n, k, trans_a, trans_b=False, mode=R.PLAIN, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    mask = rng.standard_normal((m, n), dtype=np.float32)
    got = gemm_op_each_way(a, trans_a, b, trans_b, np.empty((m, n), np.float32), bias, mask, mode, PACK)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    if mode == R.MASK:
        want *= mask > 0
    elif mode in (R.BIAS, R.BIAS_RELU):
        want += bias
        if mode == R.BIAS_RELU:
            want = np.maximum(want, 0)
    scale = max(float(np.abs(want).max()), 1.0) if want.size else 1.0
    err = float(np.abs(got - want).max()) / scale if want.size else 0.0
    assert err <= 1e-5 * max(1.0, np.sqrt(k) / 16), (m, n, k, trans_a, trans_b, err)


@pytest.mark.parametrize("m", [1, 7, 8, 9, 17])
@pytest.mark.parametrize("n", [1, 31, 32, 33, 65])
@pytest.mark.parametrize("trans_a,trans_b", [(True, False), (False, False), (False, True), (True, True)])
def test_op_tile_remainders(m, n, trans_a, trans_b):
    check_op(m, n, 9, trans_a, trans_b, seed=m * 1000 + n)


@pytest.mark.parametrize("m,n", [(matmul.OMB + 1, matmul.ONB + 33), (matmul.OMB - 1, 2 * matmul.ONB + 3),
                                 (2 * matmul.OMB + 5, matmul.ONB - 1)])
@pytest.mark.parametrize("k", [1, matmul.OKC - 1, matmul.OKC + 1, 2 * matmul.OKC + 3])
@pytest.mark.parametrize("trans_a,trans_b", [(True, False), (False, False), (False, True)])   # dw, dx, forward
@pytest.mark.parametrize("mode", [R.PLAIN, R.BIAS_RELU, R.MASK])
def test_op_block_remainders(m, n, k, trans_a, trans_b, mode):
    check_op(m, n, k, trans_a, trans_b, mode, seed=k + m)


@pytest.mark.parametrize("trans_a,trans_b", [(True, False), (False, False), (False, True)])
def test_op_tall_blocks(trans_a, trans_b):
    """Enough output for blocks of up to 4 x OMB rows (see _row_blocks), with a remainder."""
    m = 4 * matmul.OMB + 9
    assert matmul._row_blocks(m, 4 * matmul.ONB + 5, 2) == 2          # two blocks of 2 x OMB rows and more
    assert matmul._row_blocks(1024, 3072, 2) == {8: 1, 6: 2}[matmul.OM]   # wide dw0: 1024 rows, or 2 x 512
    # an output of one block of columns, op(b) shared: two blocks a thread, never more than its panels
    assert matmul._row_blocks(128, 64, 2, matmul.OM) == 4
    assert matmul._row_blocks(128, 64, 16, matmul.OM) == {8: 16, 6: 22}[matmul.OM]     # all 128 / OM panels
    assert matmul._row_blocks(9, 64, 16, matmul.OM) == 2 and matmul._row_blocks(0, 64, 2, matmul.OM) == 1
    check_op(4 * matmul.OMB + 9, 4 * matmul.ONB + 5, 7, trans_a, trans_b, R.BIAS_RELU, seed=3)


@pytest.mark.parametrize("m,n,k", [(600, 70, 300), (520, matmul.ONB, 1030), (2 * matmul.OMB + 5, 10, 9)])
@pytest.mark.parametrize("trans_b", [False, True])
def test_op_packs_a_narrow_b_once_when_there_is_room(m, n, k, trans_b):
    """One block of columns cut into several blocks of rows: with room in the workspace op(b) is
    packed once for all tasks (split_pack), serially or in parallel over k blocks by its size, and
    gives the same bits as each task packing it, and NumPy's product."""
    import numba

    mb = matmul._row_blocks(m, n, numba.get_num_threads(), matmul.min_block_rows(n))
    assert mb > 1
    roomy = K.pack_workspace(matmul.packed_a_floats(m, k) + matmul.packed_b_floats(k))
    tight = K.pack_workspace(matmul.packed_a_floats(m, k))
    assert matmul.split_pack(roomy, m, n, k, mb, numba.get_num_threads())[2].shape[0] == -(-k // matmul.OKC)
    assert matmul.split_pack(tight, m, n, k, mb, numba.get_num_threads())[2].shape[0] == 0
    rng = np.random.default_rng(m + k)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    got = {}
    for name, pack in (("roomy", roomy), ("tight", tight)):
        got[name] = np.full((m, n), np.nan, np.float32)
        K.gemm_op(a, False, b, trans_b, got[name], bias, got[name], R.BIAS_RELU, pack)
    np.testing.assert_array_equal(got["roomy"], got["tight"])
    want = np.maximum(a.astype(np.float64) @ (b.T if trans_b else b) + bias, 0)
    assert np.abs(got["roomy"] - want).max() <= 1e-5 * max(1.0, np.abs(want).max()) * max(1.0, np.sqrt(k) / 16)


@pytest.mark.parametrize("faster", [True, False])
def test_op_times_both_ways_of_reading_b_on_its_first_calls_then_keeps_the_faster(monkeypatch, faster):
    """B_PLANS: the first calls of a shape alternate b packed and in place, timed; then the way with
    the better best time, the first call of each way not counted, serves every later call untimed.
    Every call's result is the product. A transposed b is always packed, and never timed."""
    import types

    from fastfcnn.kernels.config import num_threads

    rng = np.random.default_rng(7)
    m, n, k = 11, 70, 40
    a, b = rng.standard_normal((k, m), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    want = a.T.astype(np.float64) @ b
    clock = types.SimpleNamespace(now=0.0)
    ways = []
    real = matmul._gemm_op

    def timed_kernel(*args):     # the way `faster` takes 1 s a call, the other 2 s; each way's first
        in_place = args[-1]      # call is slow for `faster` (9 s) and fast for the other (0.1 s)
        first = in_place not in ways
        ways.append(in_place)
        clock.now += (9.0 if first else 1.0) if in_place == faster else (0.1 if first else 2.0)
        real(*args)

    monkeypatch.setattr(matmul, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    monkeypatch.setattr(matmul, "_gemm_op", timed_kernel)
    monkeypatch.setattr(matmul, "B_PLANS", {})
    trials = 2 * (matmul.PLAN_TRIALS + 1)
    for call in range(trials + 3):
        out = np.full((m, n), np.nan, np.float32)
        K.gemm_op(a, True, b, False, out, b[0], out, R.PLAIN, PACK)
        assert np.abs(out - want).max() <= 1e-5 * np.abs(want).max()
        assert isinstance(matmul.B_PLANS[((m, n), k, True, num_threads())], bool) == (call >= trials - 1)
    assert ways == [False, True] * (matmul.PLAN_TRIALS + 1) + [faster] * 3
    assert matmul.B_PLANS == {((m, n), k, True, num_threads()): faster}
    assert matmul.b_plans() == [{"out": [m, n], "k": k, "trans_a": True, "threads": num_threads(),
                                 "in_place": faster}]
    ways.clear()
    out = np.full((n, m), np.nan, np.float32)
    K.gemm_op(b, True, np.ascontiguousarray(a.T), True, out, a[0], out, R.PLAIN, PACK)   # b.T @ a: packed
    np.testing.assert_allclose(out, want.T, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert ways == [False] and len(matmul.B_PLANS) == 1


def test_op_empty_reduction_writes_zeros_plus_bias():
    check_op(9, 33, 0, True)
    check_op(9, 33, 0, False, True, R.BIAS)


def test_op_column_blocks_keep_every_thread_busy():
    """_col_blocks narrows the column blocks when the tasks would not divide among the threads
    (see its docstring), and keeps ceil(n / ONB) of them when they do."""
    on, onb, omb = matmul.ON, matmul.ONB, matmul.OMB
    assert matmul.col_blocks(omb, 3 * onb, 1) == (1, 3)            # one thread: nothing to balance
    assert matmul.col_blocks(omb, 3 * onb, 2) == (1, 4)            # 3 blocks on 2 threads: 4
    assert matmul.col_blocks(omb, 4 * onb, 2) == (1, 4)            # 4 on 2: kept
    assert matmul.col_blocks(omb, 4 * onb, 16) == (1, 16)          # 4 on 16: one each
    assert matmul.col_blocks(64, 12 * onb, 8) == (1, 16)           # 12 on 8: two each
    assert matmul.col_blocks(64, 12 * onb, 4) == (1, 12)
    assert matmul.col_blocks(3 * matmul.OM, 64, 2) == (3, 2)        # one block of columns: cut by rows,
    if matmul.OM == 8:                                              # and by columns where the panels do
        assert matmul.col_blocks(128, 64, 16) == (16, 1)            # not divide among the threads
        assert matmul.col_blocks(128, 64, 12) == (16, 2)
    for m, n, threads in [(256, 3 * onb, 2), (256, 640, 2), (128, 1280, 2), (64, 12 * onb, 16), (256, 4 * onb, 12),
                          (128, 64, 12), (3 * matmul.OM, 64, 2)]:
        mb, nb = matmul.col_blocks(m, n, threads)
        spans = [matmul._col_span(n, nb, c) for c in range(nb)]
        assert spans[0][0] == 0 and spans[-1][1] == n and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        widths = [j1 - j0 for j0, j1 in spans]
        assert max(widths) <= onb and all(j0 % on == 0 for j0, _ in spans)
        assert max(widths) - min(widths) <= on                      # as even as whole tiles allow
        assert matmul._makespan(m, n, mb, nb, threads) <= matmul._makespan(m, n, mb, -(-n // onb), threads)
    # 640 columns (20 tiles of 32) on 2 threads: 3 blocks (6, 7 and 7 tiles) give one thread 14 tiles'
    # work, 4 give each 10
    if matmul.OM == 8:
        assert matmul._makespan(256, 640, 1, 3, 2) == 256 * 14 * on
        assert matmul._makespan(256, 640, 1, 4, 2) == 256 * 10 * on


def test_op_results_do_not_depend_on_the_thread_count_or_its_blocks():
    """The same bits on 1 to 16 threads (a subprocess with a pool of 16, on however many cores), for
    outputs whose column blocks _col_blocks narrows on some of those counts, with op(b) packed per
    task, shared, and read in place."""
    code = """
import numpy as np, numba
from fastfcnn import kernels as K
from fastfcnn.kernels import matmul as M
rng = np.random.default_rng(2)
pack = M.pack_workspace(M.packed_a_floats(3 * M.ONB, 600) + M.packed_b_floats(600))
for m, n, k, ta, tb in [(40, 3 * M.ONB + 9, 70, False, False), (3 * M.ONB, 70, 300, True, False),
                        (9, 12 * M.ONB, 20, True, False), (3 * M.OM, 2 * M.ON, 600, False, True),
                        (16 * M.OM, M.ONB - 5, 300, False, True)]:
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    outs = []
    for threads in (1, 2, 3, 6, 8, 12, 16):
        numba.set_num_threads(threads)
        for call in range(2):     # a (K, N) b: packed on a shape's first call, in place on its second (B_PLANS)
            out = np.full((m, n), np.nan, np.float32)
            K.gemm_op(a, ta, b, tb, out, b[0, :n] if tb else b[0], out, M.PLAIN, pack)
            outs.append(out)
    assert all(np.array_equal(outs[0], o) for o in outs[1:]), (m, n, k, ta, tb)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    assert np.abs(outs[0] - want).max() <= 1e-4 * np.sqrt(k) * np.abs(want).max(), (m, n, k, ta, tb)
print("ok")
"""
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_NUM_THREADS="16")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_op_results_do_not_depend_on_the_thread_count():
    from fastfcnn.engine import max_threads, set_threads

    if max_threads() < 2:
        pytest.skip("needs 2 cores")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 600), dtype=np.float32)
    b = rng.standard_normal((300, 700), dtype=np.float32)
    outs = []
    try:
        for threads in (1, max_threads(), 1):
            set_threads(threads)
            out = np.empty((600, 700), np.float32)
            K.gemm_op(a, True, b, False, out, b[0], out, R.PLAIN, PACK)
            outs.append(out)
    finally:
        set_threads(None)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_the_layers_see_every_thread_count_numba_is_set_to():
    """kernels.config.num_threads (what the layer functions pass their kernels) follows
    numba.set_num_threads, whoever calls it."""
    import numba

    from fastfcnn.engine import max_threads
    from fastfcnn.kernels.config import num_threads

    try:
        for threads in (1, max_threads(), 1):
            numba.set_num_threads(threads)
            assert num_threads() == numba.get_num_threads() == threads
    finally:
        numba.set_num_threads(max_threads())


@pytest.mark.parametrize("bf16", [False, True])
def test_op_rejects_what_its_unchecked_kernel_would_read_or_write_out_of_bounds(bf16):
    """The kernel checks its arguments before it touches them (the layouts its types fix are checked
    in Python, before any compiling): every fault is one ValueError naming the function and what is
    wrong, and out is left as it was."""
    from fastfcnn.kernels import bf16 as B
    from fastfcnn.kernels.config import num_threads

    if bf16 and not B.AVAILABLE:
        pytest.skip("needs AVX512_BF16")
    gemm, name = (B.gemm_op_bf16, "gemm_op_bf16") if bf16 else (K.gemm_op, "gemm_op")
    a = np.ones((4, 5), np.float32)
    out = np.zeros((5, 6), np.float32)
    b = np.ones((4, 6), np.float32)
    bias = np.ones(6, np.float32)
    gemm(a, True, b, False, out, bias, out, R.BIAS, PACK)
    assert (out == 5).all()
    small = "is too small for a 5x4 op"
    bad = [
        ((a, True, b, False, out, bias, out, R.PLAIN, PACK[: matmul.PACK_FLOATS]), small),   # no room for op(a)
        ((a, True, b, False, out, bias, out, R.PLAIN, K.pack_workspace()), small),
        ((a, True, b, False, out, bias, out, R.PLAIN, PACK[:, None]), "must be a flat float32"),
        ((a, True, b, False, out, bias, out, R.PLAIN, PACK.astype(np.float64)), "must be a flat float32"),
        ((a, True, b, False, out, bias, out, 7, PACK), "unknown mode 7"),
        ((a, False, b, False, out, bias, out, R.PLAIN, PACK), "shapes do not fit"),           # a is (K,M), not (M,K)
        ((a, True, b, True, out, bias, out, R.PLAIN, PACK), "shapes do not fit"),             # b is (K,N), not (N,K)
        ((a, True, b[:, :5].copy(), False, out, bias, out, R.PLAIN, PACK), "shapes do not fit"),   # b too narrow
        ((a, True, b, False, out, bias, out[:4], R.MASK, PACK), "shapes do not fit"),         # mask too short
        ((a, True, b, False, out, bias[:5], out, R.BIAS_RELU, PACK), "shapes do not fit"),    # bias too short
        ((a[0], True, b, False, out, bias, out, R.PLAIN, PACK), "a and b must be matrices"),
        ((a, True, b, False, out, bias[None], out, R.BIAS, PACK), "bias a vector"),
        ((np.asfortranarray(a), True, b, False, out, bias, out, R.PLAIN, PACK), "rows of a and b must be contiguous"),
        ((a, True, np.ones((6, 4), np.float32).T, False, out, bias, out, R.PLAIN, PACK), "must be contiguous"),
    ]
    if num_threads() > 1:           # room for op(a) and one thread's scratch, not for every thread's
        bad.append(((a, True, b, False, out, bias, out, R.PLAIN,
                     K.pack_workspace(matmul.packed_a_floats(5, 4))[matmul.PACK_FLOATS:]), small))
    out.fill(-1)
    for args, what in bad:
        with pytest.raises(ValueError, match=f"^{name}: .*{what}"):
            gemm(*args)
    assert (out == -1).all()


def test_wide_vectors_only_where_the_cpu_has_avx512():
    from llvmlite.binding import FeatureMap
    from fastfcnn.kernels.config import wide_vector_features

    avx2 = FeatureMap(); avx2.update({"avx2": True, "fma": True, "avx512f": False})
    assert wide_vector_features(avx2) is None
    avx512 = FeatureMap(); avx512.update({"avx2": True, "avx512f": True})
    assert wide_vector_features(avx512).split(",") == ["+avx2", "+avx512f", "-prefer-256-bit"]


def test_kernels_compile_with_the_chosen_features():
    import numba
    from llvmlite.binding import get_host_cpu_features
    from numba.core.registry import cpu_target

    from fastfcnn.kernels import config

    built = cpu_target.target_context.codegen()._tm_features   # what the code generator really uses
    if config.USER_CPU_FEATURES:                                 # the user's choice is kept as given
        assert built == config.USER_CPU_FEATURES
    else:
        assert built.endswith(",-prefer-256-bit") == bool(get_host_cpu_features().get("avx512f"))
    # Numba re-reads its configuration from the environment when a NUMBA_* variable changes: the
    # settings live there, so they survive it.
    numba.core.config.reload_config()
    want = 1 if config.USER_SLP_VECTORIZE is None else int(config.USER_SLP_VECTORIZE)
    assert numba.config.SLP_VECTORIZE == want


def test_forward_products_pick_packed_panels_unless_the_output_is_narrower_than_a_tile():
    assert matmul.op_suits(256, 1024, 3072, 2)            # the wide net's hidden layers
    assert matmul.op_suits(128, 1024, 1024, 4)
    assert not matmul.op_suits(256, 1024, 1024, 16)       # 4 column blocks cannot keep 16 threads busy
    # the seed net's first layer (128 x 3072 in, 64 out) on any number of threads, cut by rows
    assert matmul.op_suits(128, 64, 3072, 1) and matmul.op_suits(128, 64, 3072, 16)
    assert matmul.min_block_rows(64) == matmul.OM and matmul.min_block_rows(1024) == matmul.OMB
    assert not matmul.op_suits(1, 64, 3072, 1)            # a batch of one: nothing to share the packing
    # the seed net's second layer (128 x 64 in, 64 out): its input fits L2, and 64 rows a thread are
    # enough, 32 are not
    assert matmul.op_suits(128, 64, 64, 1) and matmul.op_suits(128, 64, 64, 2)
    assert not matmul.op_suits(128, 64, 64, 4) and matmul.op_suits(64, 64, 64, 1)
    assert not matmul.op_suits(63, 64, 64, 1) and not matmul.op_suits(64, 64, 64, 2)
    assert not matmul.op_suits(256, 10, 3072, 1)          # a 10-class output


def test_register_tile_follows_the_vector_width():
    from numba.core.registry import cpu_target

    built = cpu_target.target_context.codegen()._tm_features
    assert (matmul.OM, matmul.ON) == ((8, 32) if "+avx512f" in built.split(",") else (6, 16))


AVX2_CHECK = """
import numpy as np
from fastfcnn.kernels import matmul as M
assert (M.OM, M.ON) == (6, 16), (M.OM, M.ON)
rng = np.random.default_rng(0)
pack = M.pack_workspace(M.packed_a_floats(1100, 600))
for m, n, k, ta, tb, mode in [(1, 1, 3, False, True, M.BIAS_RELU), (7, 17, 9, True, False, M.PLAIN),
                              (13, 33, 300, False, False, M.MASK), (M.OMB + 7, M.ONB + 5, 9, False, True, M.BIAS),
                              (4 * M.OMB + 9, 4 * M.ONB + 5, 7, True, False, M.PLAIN), (50, 70, 530, False, True, M.BIAS),
                              (20, 2 * M.ONB + 5, 300, False, False, M.MASK)]:
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    bias, mask = rng.standard_normal(n, dtype=np.float32), rng.standard_normal((m, n), dtype=np.float32)
    ways = []
    for in_place in (False, True):                        # b packed, and read in place where it can be
        M.B_PLANS = {((m, n), k, ta, M.num_threads()): in_place}
        got = np.full((m, n), np.nan, np.float32)
        M.gemm_op(a, ta, b, tb, got, bias, mask, mode, pack)
        ways.append(got)
    assert np.array_equal(ways[0], ways[1]), (m, n, k)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    want = want * (mask > 0) if mode == M.MASK else want + bias if mode in (M.BIAS, M.BIAS_RELU) else want
    want = np.maximum(want, 0) if mode == M.BIAS_RELU else want
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (m, n, k)
print("ok")
"""


def test_the_avx2_tile_on_this_machine(tmp_path):
    """With AVX-512 masked off (as on most laptops) gemm_op uses the 6x16 tile: check it here too."""
    import subprocess
    import sys

    from fastfcnn.bench.avx2_features import avx2_features

    env = dict(os.environ, NUMBA_CPU_FEATURES=avx2_features(), NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", AVX2_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_jit_cache_key_covers_every_kernel_file(tmp_path, monkeypatch):
    """A kernel inlines helpers from other files of kernels/ (tiles, transposes, the bf16 packing),
    so editing any of them must invalidate every cached kernel, not just its own file's."""
    import shutil
    from pathlib import Path

    from fastfcnn.kernels import config
    for f in Path(config.KERNELS_DIR).glob("*.py"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setattr(config, "KERNELS_DIR", str(tmp_path))
    locator = config._KernelsInTree.from_function(matmul._gemm_op.py_func, str(tmp_path / "matmul.py"))
    before = locator.get_source_stamp()
    assert locator.get_source_stamp() == before
    helper = tmp_path / "transpose.py"
    helper.write_text(helper.read_text() + "\n# edited\n")
    assert locator.get_source_stamp() != before
    assert config._KernelsInTree.from_function(matmul._gemm_op.py_func, str(tmp_path.parent / "other.py")) is None


@pytest.mark.parametrize("w", [6, 8, 16, 32])
def test_panels_packed_from_source_rows_are_the_transpose(w):
    """_pack_cols (register transposes of 16x16 blocks, scalar remainders) against NumPy, for every
    panel width the tiles use, with row and k ranges that leave remainders on both sides."""
    rng = np.random.default_rng(w)
    src = rng.standard_normal((61, 77), dtype=np.float32)
    r0, r1, k0, kn, kd = 3, 58, 5, 50, 2
    n_panels = (r1 - r0 + w - 1) // w
    panels = np.full((n_panels, kd + kn, w), np.nan, np.float32)
    matmul._pack_cols(src, panels, r0, r1, k0, kn, kd)
    want = np.zeros((n_panels * w, kn), np.float32)
    want[: r1 - r0] = src[r0:r1, k0 : k0 + kn]
    got = panels[:, kd:, :].transpose(0, 2, 1).reshape(n_panels * w, kn)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(panels[:, :kd]).all()                # rows before kd are left alone


def test_the_register_tile_is_packed_fma():
    """gemm_op's float32 tile, compiled afresh (cached code cannot be inspected): packed FMAs on
    zmm registers (8x32, AVX-512) or ymm (6x16, AVX2), one per accumulator and k."""
    import numba

    @numba.njit
    def one_tile(pa, pb, out):
        matmul.tile(pa, pb, out, 0, 0, pa.shape[0], False)

    pa = np.arange(4 * matmul.OM, dtype=np.float32).reshape(4, matmul.OM)
    pb = np.arange(4 * matmul.ON, dtype=np.float32).reshape(4, matmul.ON)
    out = np.empty((matmul.OM, matmul.ON), np.float32)
    one_tile(pa, pb, out)
    np.testing.assert_array_equal(out, pa.T @ pb)
    reg, lanes = ("zmm", 16) if matmul.ON == 32 else ("ymm", 8)
    asm = one_tile.inspect_asm(one_tile.signatures[0])
    fmas = [line for line in asm.splitlines() if line.strip().startswith("vfmadd")]
    assert len(fmas) >= matmul.OM * matmul.ON // lanes and all(reg in line for line in fmas)
