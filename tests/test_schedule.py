import math

import pytest

from fastfcnn.schedule import learning_rate


def test_warmup_is_linear_then_schedule_starts_at_peak():
    lrs = [learning_rate("cosine", 0.1, s, 100, 10) for s in range(100)]
    assert lrs[:10] == pytest.approx([0.01 * (s + 1) for s in range(10)])
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.05)
    assert lrs[-1] == pytest.approx(0.05 * (1 + math.cos(math.pi * 89 / 90)))


def test_step_decays_at_half_and_three_quarters():
    lrs = [learning_rate("step", 1.0, s, 100, 0) for s in range(100)]
    assert lrs[49] == 1.0 and lrs[50] == pytest.approx(0.1) and lrs[74] == pytest.approx(0.1)
    assert lrs[75] == pytest.approx(0.01) and lrs[99] == pytest.approx(0.01)


def test_constant_and_onecycle():
    assert {learning_rate("constant", 0.3, s, 50, 0) for s in range(50)} == {0.3}
    assert learning_rate("onecycle", 1.0, 0, 100, 10) == pytest.approx(0.04 + 0.96 / 10)
    assert learning_rate("onecycle", 1.0, 9, 100, 10) == pytest.approx(1.0)
    assert learning_rate("onecycle", 1.0, 55, 100, 10) == pytest.approx(0.5)


def test_unknown_schedule():
    with pytest.raises(ValueError):
        learning_rate("linear", 0.1, 0, 10, 0)
