"""Density schedules: values, serialization, and continuing from an already pruned model."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import pruning_cnn


def test_schedules_serialize_and_continue_from_a_pruned_model():
    exp = tx.pruning.ExponentialSchedule()
    np.testing.assert_allclose(exp.densities(0.01, 2), [0.1, 0.01])
    np.testing.assert_allclose(exp.densities(0.01, 2, start=0.1), [np.sqrt(0.001), 0.01])
    np.testing.assert_allclose(tx.pruning.LinearSchedule().densities(0.2, 4), [0.8, 0.6, 0.4, 0.2])
    for schedule in (exp, tx.pruning.LinearSchedule()):
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(schedule)
        )
        assert type(restored) is type(schedule)
    with pytest.raises(ValueError, match="Unknown schedule"):
        tx.pruning.PXPruner(schedule="cosine")
    masked = tx.pruning.wrap(pruning_cnn())
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.8)
    report = tx.pruning.MagnitudePruner(rounds=2, verbose=False).prune(masked, 0.9)
    assert report.kept == round(0.1 * report.total)
    with pytest.raises(ValueError, match="already at sparsity"):
        tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
