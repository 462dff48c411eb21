"""The path networks' per-layer pieces: each layer's linear map is the layer's own, and a layer
they cannot treat is named."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tf_tradyx.pruning import masking, paths


@keras.saving.register_keras_serializable(package="tests")
def _cube(t):
    return t * t * t


def test_unsupported_layer_is_named():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, activation=_cube, name="cube_dense")(inputs)
    masked = tx.pruning.wrap(keras.Model(inputs, keras.layers.Dense(2)(h)))
    with pytest.raises(tx.pruning.UnsupportedLayerError, match="cube_dense"):
        tx.pruning.PXPruner(verbose=False).prune(masked, 0.5, np.zeros((2, 4), np.float32))
    # Data-driven scorers still work on it.
    tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.5, (np.ones((2, 4)), np.zeros(2)))


def test_every_unsupported_layer_is_named_at_once_with_advice_that_works():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, activation=_cube, name="cube_dense")(inputs)
    h = keras.layers.PReLU(name="prelu")(h)
    h = keras.layers.Lambda(_cube, name="cube_lambda")(h)
    h = keras.layers.Activation("gelu", name="gelu_act")(h)  # supported: not named
    h = keras.layers.LayerNormalization(name="ln")(h)  # supported: not named
    masked = tx.pruning.wrap(keras.Model(inputs, keras.layers.Dense(2)(h)))
    with pytest.raises(tx.pruning.UnsupportedLayerError) as error:
        tx.pruning.SynFlowPruner(verbose=False).prune(masked, 0.5)
    message = str(error.value)
    assert message.startswith("3 layers are not supported")
    for name in ("cube_dense", "prelu", "cube_lambda"):
        assert repr(name) in message
    assert "gelu_act" not in message and "'ln'" not in message
    assert "skip=" not in message  # skip= cannot help (it only leaves masks alone)
    assert "SNIPPruner" in message  # the advice: a scorer that differentiates the real network
    tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.5, (np.ones((2, 4)), np.zeros(2)))


@pytest.mark.parametrize(
    "layer,shape",
    [
        (lambda: keras.layers.Conv1D(3, 3, strides=2, padding="same"), (2, 9, 2)),
        (
            lambda: keras.layers.Conv2D(3, 3, strides=2, padding="valid", dilation_rate=1),
            (2, 7, 7, 2),
        ),
        (lambda: keras.layers.Conv2D(4, 3, padding="same", groups=2), (2, 6, 6, 4)),
        (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (2, 6, 6, 3)),
        (lambda: keras.layers.SeparableConv2D(4, 3, strides=2, padding="same"), (2, 8, 8, 3)),
        (lambda: keras.layers.Dense(5), (2, 4, 3)),
    ],
)
def test_linear_call_is_the_layer_without_bias(layer, shape):
    """The path networks rebuild each layer's linear map; it must be the layer's own."""
    layer = layer()
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    y = layer(x).numpy()
    bias = np.asarray(layer.bias)
    kernels = [tf.convert_to_tensor(v) for v in masking.prunable_variables(layer)]
    got = paths.linear_call(layer, tf.constant(x), kernels).numpy()
    np.testing.assert_allclose(got + bias, y, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
