"""Sanity-check transforms: reinitialize draws from each layer's own initializer."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import pruning_cnn


def test_reinitialize_draws_from_each_layers_initializer():
    keras.utils.set_random_seed(0)
    masked = tx.pruning.wrap(tx.models.resnet20())
    tx.pruning.reinitialize(masked, seed=4)
    conv = masked.get_layer("masked_stage3_block2_1_conv")
    values = np.asarray(conv.kernels[0])
    np.testing.assert_allclose(values.std(), np.sqrt(2 / (9 * 64)), rtol=0.03)
    small = tx.pruning.wrap(pruning_cnn())
    tx.pruning.reinitialize(small, seed=1)
    dw = np.asarray(small.get_layer("masked_dw").kernels[0])  # glorot_uniform on (3, 3, 8, 1)
    limit = np.sqrt(6 / (9 * 8 + 9 * 1))  # Keras fans: fan_in 72, fan_out 9.
    assert np.abs(dw).max() <= limit and np.abs(dw).max() > 0.5 * limit


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
