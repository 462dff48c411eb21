"""How each kind of layer acts in the path networks: each layer's linear map is the layer's own,
a layer they cannot treat is named, and the weightless operations match hand-computed values."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tf_tradyx.pruning import masking, path_ops, paths


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


# ----- the weightless operations, against hand-computed values ---------------------------------


def test_affine_layers_act_as_path_weights_in_each_mode():
    x = tf.constant([[1.0, 2.0]], tf.float64)
    scale, shift = path_ops.affine_scale_shift(keras.layers.Rescaling(-2.0, offset=3.0), ())
    assert float(scale) == -2.0 and float(shift) == 3.0
    np.testing.assert_array_equal(path_ops.apply_affine(x, scale, shift, "z1"), [[1.0, 2.0]])
    np.testing.assert_array_equal(path_ops.apply_affine(x, scale, shift, "z2"), [[4.0, 8.0]])
    # SynFlow: |scale| x + |shift|.
    np.testing.assert_array_equal(path_ops.apply_affine(x, scale, shift, "synflow"), [[5.0, 7.0]])


def test_keras_ops_arithmetic_with_a_constant_is_affine_on_the_right_side():
    class Op:  # stands in for an op-layer: only its class name matters
        def __init__(self, name):
            self.__class__ = type(name, (), {})

    sub = Op("Subtract")
    assert [float(v) for v in path_ops.affine_scale_shift(sub, ["x", 5.0])] == [1.0, -5.0]
    assert [float(v) for v in path_ops.affine_scale_shift(sub, [5.0, "x"])] == [-1.0, 5.0]
    assert [float(v) for v in path_ops.affine_scale_shift(Op("TrueDivide"), ["x", 4.0])] == [
        0.25,
        0.0,
    ]
    assert path_ops.affine_scale_shift(Op("TrueDivide"), [4.0, "x"]) is None  # 4 / x


def test_batch_norm_scale_is_squared_in_z2_and_absolute_in_synflow():
    bn = keras.layers.BatchNormalization(epsilon=0.0)
    bn.build((None, 1))
    bn.set_weights([np.array([-3.0]), np.array([-1.0]), np.array([2.0]), np.array([4.0])])
    x = tf.constant([[1.0]], tf.float64)
    # scale = gamma / sqrt(var) = -1.5
    np.testing.assert_allclose(path_ops.apply_batch_norm(bn, x, "z2"), [[2.25]], rtol=1e-15)
    # SynFlow: (x - |mean|) * |gamma| / sqrt(|var|) + |beta| = (1 - 2) * 1.5 + 1
    np.testing.assert_allclose(path_ops.apply_batch_norm(bn, x, "synflow"), [[-0.5]], rtol=1e-15)
    np.testing.assert_array_equal(path_ops.apply_batch_norm(bn, x, "z1"), [[1.0]])


def test_layer_norm_gate_is_one_over_the_variance_and_gamma_a_path_weight():
    ln = keras.layers.LayerNormalization(epsilon=0.0)
    ln.build((None, 2))
    ln.set_weights([np.array([2.0, -1.0]), np.array([0.5, 0.5])])
    x = tf.constant([[1.0, 3.0]])  # variance 1
    gate = path_ops.layer_norm_gate(ln, x)
    np.testing.assert_allclose(gate, [[1.0]])
    y = tf.constant([[1.0, 1.0]], tf.float64)
    np.testing.assert_allclose(path_ops.apply_layer_norm(ln, y, "z1", gate), [[1.0, 1.0]])
    np.testing.assert_allclose(path_ops.apply_layer_norm(ln, y, "z2"), [[4.0, 1.0]])
    np.testing.assert_allclose(path_ops.apply_layer_norm(ln, y, "synflow"), [[2.5, 1.5]])


def test_a_product_follows_the_product_rule_in_z1_and_adds_paths_otherwise():
    a = tf.constant([[1.0, 2.0]], tf.float64)
    b = tf.constant([[3.0]], tf.float64)  # broadcast, as a squeeze-excite scale
    squares = [tf.constant([[4.0, 9.0]]), tf.constant([[16.0]])]
    # z1: a * b^2 + b * a^2 (each factor's paths times the other's squared real value)
    np.testing.assert_allclose(
        path_ops.apply_product([a, b], "z1", squares), [[1 * 16 + 3 * 4, 2 * 16 + 3 * 9]]
    )
    np.testing.assert_allclose(path_ops.apply_product([a, b], "z2"), [[4.0, 5.0]])


def test_relu_family_gates_are_exact_squared_derivatives():
    y = tf.constant([-2.0, 0.0, 3.0, 6.0])
    relu6 = path_ops.layer_activation_spec(keras.layers.ReLU(max_value=6.0))
    np.testing.assert_array_equal(path_ops.squared_gate(y, relu6, tf.float32), [0, 0, 1, 0])
    leaky = path_ops.layer_activation_spec(keras.layers.LeakyReLU(negative_slope=0.5))
    np.testing.assert_array_equal(path_ops.squared_gate(y, leaky, tf.float32), [0.25, 0, 1, 1])
    assert path_ops.layer_activation_spec(keras.layers.ReLU(threshold=1.0)) is None


def test_smooth_activation_gate_is_the_squared_derivative():
    pre = tf.constant([0.0, 1.0, -2.0])
    y, gate = path_ops.smooth_activation(tf.math.tanh, pre)
    np.testing.assert_allclose(y, np.tanh([0.0, 1.0, -2.0]), rtol=1e-6)
    np.testing.assert_allclose(gate, (1 - np.tanh([0.0, 1.0, -2.0]) ** 2) ** 2, rtol=1e-5)


def _projection_model(einsum):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8))
    if einsum:
        layer = keras.layers.EinsumDense(
            "abc,cd->abd", output_shape=(6, 5), bias_axes="d", activation="relu", name="p"
        )
    else:
        layer = keras.layers.Dense(5, activation="relu", name="p")
    h = keras.layers.GlobalAveragePooling1D()(layer(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def test_a_dense_like_einsum_scores_exactly_as_the_dense_layer_it_equals():
    """An EinsumDense "abc,cd->abd" is a Dense on a sequence: PX and SynFlow must give it the
    Dense layer's scores (float64 throughout; einsum and matmul sum the same 8 products)."""
    einsum, dense = _projection_model(True), _projection_model(False)
    for name in ("p", "head"):
        dense.get_layer(name).set_weights(einsum.get_layer(name).get_weights())
    x = np.random.default_rng(0).normal(size=(8, 6, 8)).astype("float32")
    for pruner, data in [(tx.pruning.PXPruner, x), (tx.pruning.SynFlowPruner, None)]:
        a = pruner(verbose=False).score(tx.pruning.wrap(einsum), data)
        b = pruner(verbose=False).score(tx.pruning.wrap(dense), data)
        for key in b:
            assert np.abs(b[key]).max() > 0
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=0)


def test_einsum_and_embedding_kernels_are_masked_and_stay_zero_through_fit():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(30, 8, name="embed")(tokens)
    h = keras.layers.EinsumDense("abc,cde->abde", output_shape=(6, 2, 4), name="q")(h)
    h = keras.layers.Reshape((6, 8))(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    masked = tx.pruning.wrap(keras.Model(tokens, keras.layers.Dense(3, name="head")(h)))
    names = sorted(l.layer.name for l in tx.pruning.masked_layers(masked))
    assert names == ["embed", "head", "q"]
    x = np.random.default_rng(0).integers(0, 30, (16, 6)).astype("int32")
    y = np.arange(16) % 3
    tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.6, (x, y))
    masked.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    masked.fit(x, y, epochs=2, verbose=0)
    for layer in tx.pruning.masked_layers(masked):
        for kernel, mask in zip(layer.kernels, layer.masks):
            assert np.all(np.asarray(kernel)[np.asarray(mask) == 0] == 0.0)
    # Path-based scoring refuses the embedding by name, with what to use instead.
    with pytest.raises(tx.pruning.UnsupportedLayerError, match="'embed'.*token ids.*SNIP"):
        tx.pruning.PXPruner(verbose=False).prune(masked, 0.7, x)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
