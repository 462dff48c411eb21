"""Path networks interpret the model's graph: gates through max pooling follow the real network."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tf_tradyx.pruning.paths import PathNetwork


def test_max_pool_gates_follow_the_real_network():
    """z1 through max pooling uses the real argmax: compare with a brute-force numpy pass."""
    inputs = keras.Input((4, 4, 1))
    c = keras.layers.Conv2D(2, 1, use_bias=False, name="c")(inputs)
    p = keras.layers.MaxPooling2D(2, name="p")(c)
    out = keras.layers.Flatten()(p)
    model = keras.Model(inputs, out)
    model.get_layer("c").set_weights([np.array([[[[1.0, -1.0]]]], np.float32)])
    masked = tx.pruning.wrap(model)
    net = PathNetwork(masked)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32)
    gates = []
    net.run(tf.constant(x), "real", gates=gates)
    z1 = net.run(tf.constant(x.astype(np.float64) ** 2), "z1", gates=gates).numpy()
    expected = np.zeros((2, 2, 2, 2))
    for n, i, j, ch in np.ndindex(2, 2, 2, 2):
        window = x[n, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 0] * (1.0 if ch == 0 else -1.0)
        a, b = np.unravel_index(np.argmax(window), (2, 2))
        expected[n, i, j, ch] = float(x[n, 2 * i + a, 2 * j + b, 0]) ** 2
    np.testing.assert_allclose(z1, expected.reshape(2, -1), rtol=1e-12)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
