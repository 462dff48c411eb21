"""TraDy on 1-D convolutions, token sequences and attention projections: each layer seen as a
canonical dense / conv / depthwise map gives the plain layer's outputs, the dense gradient on the
selected channels (zero elsewhere), the dense input gradient, in graph mode and under XLA, and
costs counted by hand.

Tolerances: the sparse backward pass sums the same products as TensorFlow's dense one in another
order (a gathered matmul or a conv filter gradient of the gathered channels). Every reduction here
has at most 3 * 8 * 16 * 6 = 2304 terms of size O(1) in float32 (eps 6e-8): a relative error of
at most ~1.4e-4 in the worst case, ~1e-6 typically (errors of a sum of n terms grow like sqrt(n)
for random round-off). rtol=1e-4 with atol=1e-5 bounds it with room; a wrong channel or a missing
term is off by O(1).
"""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import tf_tradyx as tx
from tf_tradyx._graph import kinds, walk
from tf_tradyx.sparse_update import layer_views
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate

sp = tx.sparse_update
RTOL, ATOL = 1e-4, 1e-5


def _cases():
    """(name, layer factory, input shape without batch, kernel axes that index input channels)."""
    return [
        ("conv1d_causal", lambda: layers.Conv1D(6, 3, padding="causal", use_bias=True), (9, 8)),
        ("conv1d_strided", lambda: layers.Conv1D(6, 3, strides=2, padding="same"), (9, 8)),
        ("conv1d_dilated", lambda: layers.Conv1D(6, 3, dilation_rate=2), (9, 8)),
        ("conv1d_grouped", lambda: layers.Conv1D(6, 1, groups=2), (9, 8)),
        (
            "depthwise1d",
            lambda: layers.DepthwiseConv1D(3, depth_multiplier=2, padding="same"),
            (9, 8),
        ),
        ("dense_tokens", lambda: layers.Dense(5, activation="gelu"), (7, 8)),
        (
            "einsum_qkv",
            lambda: layers.EinsumDense("abc,cde->abde", output_shape=(7, 2, 4), bias_axes="de"),
            (7, 8),
        ),
        (
            "einsum_out",
            lambda: layers.EinsumDense("abcd,cde->abe", output_shape=(7, 5), bias_axes="e"),
            (7, 2, 4),
        ),
    ]


def _keep_mask(wrapper, selected):
    """The kernel slices of the selected input channels, computed from the layer's own kernel
    layout (independently of `LinearView`): 1-D convs (k, C_in/groups, C_out), EinsumDense
    (contracted axes first), Dense (C_in, C_out)."""
    layer = wrapper.layer
    shape = tuple(layer.kernel.shape)
    keep = np.zeros(shape, np.float32)
    if isinstance(layer, layers.EinsumDense):
        n = kinds.einsum_contracted_axes(layer.equation)
        flat = keep.reshape(int(np.prod(shape[:n])), -1)
        flat[selected] = 1.0
        return flat.reshape(shape)
    if isinstance(layer, layers.Conv1D) and layer.groups > 1:
        rows, per_group = shape[1], shape[2] // layer.groups
        for c in selected:
            g = c // rows
            keep[:, c % rows, g * per_group : (g + 1) * per_group] = 1.0
        return keep
    keep[..., selected, :] = 1.0
    return keep


@pytest.mark.parametrize("name, make, shape", _cases(), ids=[c[0] for c in _cases()])
@pytest.mark.parametrize("xla", [False, True], ids=["graph", "xla"])
def test_selected_channels_get_the_dense_gradient_and_the_others_none(name, make, shape, xla):
    keras.utils.set_random_seed(0)
    plain = make()
    x = tf.constant(np.random.default_rng(1).normal(size=(3, *shape)).astype("float32"))
    plain(x)
    wrapper = ChannelSparseUpdate(make(), update_bias=True)
    wrapper(x)
    wrapper.layer.set_weights(plain.get_weights())
    selected = [0, 3, 5]
    wrapper.set_channels(selected)
    cotangent = tf.constant(np.random.default_rng(2).normal(size=plain(x).shape).astype("float32"))

    def grads(layer, inner):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * cotangent)
        return (y, *tape.gradient(loss, [x, inner.kernel, inner.bias]))

    # (Variables are read inside the function: passed in, a keras.Variable becomes a tensor.)
    y, dx, dk, db = tf.function(lambda: grads(wrapper, wrapper.layer), jit_compile=xla)()
    y0, dx0, dk0, db0 = grads(plain, plain)
    np.testing.assert_allclose(y, y0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx, dx0, rtol=RTOL, atol=ATOL)
    keep = _keep_mask(wrapper, selected)
    np.testing.assert_allclose(dk, np.asarray(dk0) * keep, rtol=RTOL, atol=ATOL)
    assert np.all(np.asarray(dk)[keep == 0] == 0.0)  # exactly zero, not small
    np.testing.assert_allclose(db, db0, rtol=RTOL, atol=ATOL)
    assert np.abs(np.asarray(dk0) * keep).max() > 1e-3  # the check is not vacuous


def _sequence_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8))
    h = layers.Conv1D(8, 3, padding="causal", activation="relu", name="c1")(inputs)
    h = layers.DepthwiseConv1D(3, padding="same", name="dw")(h)
    h = layers.EinsumDense("abc,cde->abde", output_shape=(6, 2, 4), bias_axes="de", name="q")(h)
    h = layers.EinsumDense("abcd,cde->abe", output_shape=(6, 8), bias_axes="e", name="o")(h)
    h = layers.Dense(8, activation="gelu", name="ffn")(h)
    h = layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, layers.Dense(3, name="head")(h))


def test_costs_of_sequence_layers_are_counted_by_hand():
    table = sp.cost_table(_sequence_model())
    rows = {r.name: r for r in table}
    # Conv1D: C' * k weights + the length-6 input map per channel.
    assert (rows["c1"].in_channels, rows["c1"].units_per_channel) == (8, 8 * 3 + 6)
    # DepthwiseConv1D: multiplier 1 * k + 6.
    assert rows["dw"].units_per_channel == 1 * 3 + 6
    # Query projection: a channel is one of the 8 features; 2 * 4 outputs; 6 tokens.
    assert (rows["q"].in_channels, rows["q"].units_per_channel) == (8, 2 * 4 + 6)
    # Output projection: a channel is a (head, feature) pair: 2 * 4 of them, 8 outputs each.
    assert (rows["o"].in_channels, rows["o"].units_per_channel) == (8, 8 + 6)
    assert rows["ffn"].units_per_channel == 8 + 6
    assert table.full_units == 8 * 30 + 8 * 9 + 8 * 14 + 8 * 14 + 8 * 14


def test_a_sequence_model_fine_tunes_under_xla_and_frozen_channels_stay_bit_identical():
    model = _sequence_model()
    wrapped = sp.wrap(model, strategy="static_full_random", budget=300, seed=0)
    wrapped.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x = np.random.default_rng(0).normal(size=(32, 6, 8)).astype("float32")
    y = np.arange(32) % 3
    np.testing.assert_allclose(
        wrapped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    before = {
        w.layer.name: np.asarray(w.layer.kernel)
        for w in walk.layers_of_type(wrapped, ChannelSparseUpdate)
    }
    wrapped.fit(x, y, epochs=2, batch_size=8, verbose=0)
    moved = 0
    for w in walk.layers_of_type(wrapped, ChannelSparseUpdate):
        keep = _keep_mask(w, w.get_channels())
        after = np.asarray(w.layer.kernel)
        np.testing.assert_array_equal(after[keep == 0], before[w.layer.name][keep == 0])
        moved += int(np.any(after[keep == 1] != before[w.layer.name][keep == 1]))
    assert moved >= 1
    assert sp.efficiency(wrapped).units <= 300


def test_an_einsum_that_is_not_a_dense_map_is_refused_with_the_reason():
    assert kinds.einsum_contracted_axes("abc,cde->abde") == 1
    assert kinds.einsum_contracted_axes("abcd,cde->abe") == 2
    assert kinds.einsum_contracted_axes("...b,bc->...c") == 1
    assert kinds.einsum_contracted_axes("abc,dc->abd") is None  # kernel contracted last
    assert kinds.einsum_contracted_axes("abc,cd->adb") is None  # output reordered
    assert kinds.einsum_contracted_axes("abc,acd->abd") is None  # batch axis in the kernel
    layer = layers.EinsumDense("abc,dc->abd", output_shape=(4, 3))
    layer.build((None, 4, 5))
    assert layer_views.view_of(layer) is None
    with pytest.raises(ValueError, match="dense-like equation"):
        ChannelSparseUpdate(layer)


def test_output_neuron_selection_refuses_the_new_kinds_by_name():
    with pytest.raises(ValueError, match="Conv1D"):
        ChannelSparseUpdate(layers.Conv1D(4, 3), channel_axis="output")


@pytest.mark.parametrize("axis", ["input", "output"])
def test_an_empty_draw_trains_nothing_on_either_selection_axis(axis):
    """An empty draw gathers one slot (TensorFlow's own conv kernels refuse zero channels) and
    must scale its derivative by 0, for output-neuron selections too."""
    keras.utils.set_random_seed(0)
    wrapper = ChannelSparseUpdate(layers.Dense(4), channel_axis=axis, update_bias=False)
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 3)).astype("float32"))
    wrapper(x)
    wrapper.set_channels([])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(wrapper(x) ** 2)
    grad = tape.gradient(loss, wrapper.layer.kernel)
    np.testing.assert_array_equal(np.asarray(grad), np.zeros((3, 4), np.float32))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
