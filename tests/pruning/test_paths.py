"""Path networks interpret the model's graph: gates through max pooling follow the real network."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tf_tradyx.pruning import paths
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
    gates = paths.GateRecorder()
    net.run(tf.constant(x), "real", gates=gates)
    z1 = net.run(tf.constant(x.astype(np.float64) ** 2), "z1", gates=gates).numpy()
    expected = np.zeros((2, 2, 2, 2))
    for n, i, j, ch in np.ndindex(2, 2, 2, 2):
        window = x[n, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 0] * (1.0 if ch == 0 else -1.0)
        a, b = np.unravel_index(np.argmax(window), (2, 2))
        expected[n, i, j, ch] = float(x[n, 2 * i + a, 2 * j + b, 0]) ** 2
    np.testing.assert_allclose(z1, expected.reshape(2, -1), rtol=1e-12)


def _gated_model():
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.Activation("gelu", name="act")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(h))


def test_the_real_pass_records_one_gate_per_gated_operation_in_graph_order():
    keras.utils.set_random_seed(0)
    net = PathNetwork(_gated_model())
    gates = paths.GateRecorder()
    net.run(np.ones((2, 6, 6, 2), np.float32), "real", gates=gates)
    replay = gates.replay()
    for name, what in [
        ("c1", "activation"),
        ("pool", "max_pool"),
        ("ln", "layer_norm"),
        ("act", "activation"),
    ]:
        replay.take(net.model.get_layer(name), what)
    replay.check_consumed()


def test_passes_that_disagree_on_gates_fail_loudly():
    keras.utils.set_random_seed(0)
    model = _gated_model()
    net = PathNetwork(model)
    gates = paths.GateRecorder()
    net.run(np.ones((2, 6, 6, 2), np.float32), "real", gates=gates)
    replay = gates.replay()
    with pytest.raises(paths.GateMismatchError, match="'pool'.*'c1'"):
        replay.take(model.get_layer("pool"), "max_pool")  # c1's gate comes first
    replay = gates.replay()
    replay.take(model.get_layer("c1"), "activation")
    with pytest.raises(paths.GateMismatchError, match="1 of the 4"):
        replay.check_consumed()
    # A data-term pass with too few recorded gates names where it ran out.
    short = paths.GateRecorder()
    short.record(
        model.get_layer("c1"),
        "activation",
        gates.replay().take(model.get_layer("c1"), "activation"),
    )
    with pytest.raises(paths.GateMismatchError, match="'pool'"):
        net.run(np.ones((2, 6, 6, 2)), "z1", gates=short)
    with pytest.raises(ValueError, match="GateRecorder"):
        net.run(np.ones((2, 6, 6, 2)), "z1")
    with pytest.raises(ValueError, match="Unknown path-network mode"):
        net.run(np.ones((2, 6, 6, 2)), "z3")


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
