"""Compact ReLUs keep one bit per element and change nothing: the same values and gradients as
TensorFlow's, the same training as plain ReLUs and as the simulation, and strip restores Keras ReLUs."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, data, small_cnn
from tf_tradyx.sparse_update import compact_relu as compact

SU = tx.sparse_update


def test_compact_plain_and_simulated_train_identically():
    _, _, ds = data()
    weights = {}
    for mode, kwargs in (
        ("tradi", {}),
        ("plain_relu", {"compact_activations": False}),
        ("simulated", {"simulate": True}),
    ):
        keras.utils.set_random_seed(7)
        sparse = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES, seed=5, **kwargs)
        sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS)
        history = sparse.fit(ds, epochs=3, verbose=0, callbacks=[SU.ChannelResampler()])
        weights[mode] = ([v.numpy() for v in sparse.weights], history.history["loss"])
    for mode in ("plain_relu", "simulated"):
        np.testing.assert_allclose(weights[mode][1], weights["tradi"][1], rtol=1e-5)
        for a, b in zip(weights[mode][0], weights["tradi"][0]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    channels=st.integers(1, 40),
    seed=st.integers(0, 1000),
    max_value=st.sampled_from([None, 6.0]),
)
def test_compact_relu_equals_tensorflow_relu(channels, seed, max_value):
    x = tf.constant(np.random.default_rng(seed).normal(0, 4, (3, 5, channels)).astype("float32"))
    x = tf.tensor_scatter_nd_update(x, [[0, 0, 0]], [0.0])  # exercise the boundary at 0
    dy = tf.constant(np.random.default_rng(seed + 1).normal(size=x.shape).astype("float32"))
    ref = tf.nn.relu if max_value is None else tf.nn.relu6
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y1, y2 = compact.compact_relu(x, max_value), ref(x)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(tape.gradient(y1, x, dy), tape.gradient(y2, x, dy))
    gate = x > 0
    packed = compact.pack_bits(gate)
    assert packed.shape[-1] == (channels // 8 if channels % 8 == 0 else channels)
    np.testing.assert_array_equal(compact.unpack_bits(packed, tf.shape(gate), channels), gate)


def test_every_byte_of_gates_packs_and_unpacks_exactly():
    """All 256 patterns of eight gates, in every one of 16 channel groups: the packing's
    multiply trick has no carries, so each pattern maps to its own byte and back."""
    patterns = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)  # (256, 8)
    gate = np.stack([np.roll(patterns, g, axis=0) for g in range(16)], axis=1)  # (256, 16, 8)
    gate = tf.constant(gate.reshape(256, 1, 128))
    packed = compact.pack_bits(gate)
    assert tuple(packed.shape) == (256, 16)
    assert len(np.unique(packed.numpy()[:, 0])) == 256
    np.testing.assert_array_equal(compact.unpack_bits(packed, tf.shape(gate), 128), gate)


def test_strip_turns_compact_relus_back_into_keras_relus():
    model = small_cnn()
    sparse = SU.wrap(model, budget=400, layers=CANDIDATES)
    assert any(isinstance(l, compact.CompactReLU) for l in sparse.layers)
    plain = SU.strip(sparse)
    assert not any(isinstance(l, compact.CompactReLU) for l in plain.layers)
    x, _, _ = data(4)
    np.testing.assert_allclose(plain(x), model(x), rtol=1e-6)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
