"""`tx.multi_worker.enable_multi_worker_fit`: installs the two mends once, and leaves training on
one device (or any strategy but a multi-worker one) exactly as Keras does it. The two-worker runs
live in tests/integration/test_multi_worker.py."""

import sys

import keras
import numpy as np
import pytest
from keras.src.backend.tensorflow import trainer as tf_trainer  # what the mends wrap

import tf_tradyx as tx


def _fit_loss():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    history = model.fit(x, x[:, :1], epochs=2, batch_size=8, verbose=0)
    return history.history["loss"], model.get_weights()


def test_it_installs_once_and_one_device_training_is_unchanged():
    loss_before, weights_before = _fit_loss()
    tx.multi_worker.enable_multi_worker_fit()
    build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    reduce = tf_trainer.reduce_per_replica
    assert getattr(build, "tf_tradyx_multi_worker_fix", False)
    assert getattr(reduce, "tf_tradyx_multi_worker_fix", False)
    tx.multi_worker.enable_multi_worker_fit()  # idempotent: the same wrappers, not wrapped twice
    assert tf_trainer.TensorFlowTrainer._maybe_symbolic_build is build
    assert tf_trainer.reduce_per_replica is reduce
    loss_after, weights_after = _fit_loss()
    assert loss_after == loss_before  # bit-identical: the mends pass everything through
    for a, b in zip(weights_after, weights_before):
        np.testing.assert_array_equal(a, b)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
