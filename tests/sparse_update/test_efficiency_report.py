"""The efficiency figures of a selection, computed by hand on the small CNN."""

import sys

import pytest

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, small_cnn

SU = tx.sparse_update


def _almost(expected):
    """unittest's assertAlmostEqual default: equal to 7 decimal places."""
    return pytest.approx(expected, rel=0, abs=5e-8)


def test_efficiency_by_hand():
    model = small_cnn()
    costs = SU.cost_table(model)
    # c1: C'D^2 = 8*9 = 72, HW = 144; dw: 1*9, HW = 12*12 (before its ZeroPadding2D), out 6*6;
    # pw: 6, HW = 36; fc: 5, HW = 1. The head is not counted.
    assert [(r.name, r.weight_units, r.in_hw, r.out_hw) for r in costs] == [
        ("c1", 72, 144, 144),
        ("dw", 9, 144, 36),
        ("pw", 6, 36, 36),
        ("fc", 5, 1, 1),
    ]
    sparse = SU.wrap(model, budget=10_000, layers=CANDIDATES)
    SU.set_selection(sparse, {"c1": [0], "pw": [1, 2], "fc": [0, 1, 4]})
    e = SU.efficiency(sparse)
    total_w = 3 * 72 + 8 * 9 + 8 * 6 + 6 * 5
    total_a = 3 * 144 + 8 * 144 + 8 * 36 + 6 * 1
    total_f = 3 * 72 * 144 + 8 * 9 * 36 + 8 * 6 * 36 + 6 * 5 * 1
    assert e.units == (72 + 144) + 2 * (6 + 36) + 3 * (5 + 1)
    assert e.full_units == total_w + total_a
    assert e.weight_derivative_sparsity == _almost(1 - (72 + 12 + 15) / total_w)
    assert e.activation_sparsity == _almost(1 - (144 + 72 + 3) / total_a)
    assert e.weight_derivative_flops_saved == _almost(1 - (72 * 144 + 2 * 6 * 36 + 3 * 5) / total_f)
    assert (e.channels, e.layers_updated) == (6, 3)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
