"""The one default-loss rule every gradient-based step uses."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.testing_utils import tiny_cnn, tiny_data
from tf_tradyx import _losses


@pytest.mark.parametrize("softmax", [False, True])
def test_one_default_loss_rule_follows_the_output_activation(softmax):
    model = tiny_cnn(softmax=softmax)
    x, y = next(iter(tiny_data()))
    out = model(x)
    expected = keras.losses.sparse_categorical_crossentropy(y, out, from_logits=not softmax)
    np.testing.assert_allclose(
        float(_losses.default_loss(model)(y, out)), float(tf.reduce_mean(expected)), rtol=1e-6
    )
    one_hot = tf.one_hot(y, 3)
    np.testing.assert_allclose(
        float(_losses.default_loss(model)(one_hot, out)), float(tf.reduce_mean(expected)), rtol=1e-5
    )
    model.compile(loss=keras.losses.MeanSquaredError())
    assert isinstance(_losses.default_loss(model), keras.losses.MeanSquaredError)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
