"""channel_grads, the linear algebra of ChannelSparseUpdate, against TensorFlow's own autodiff of
the plain Keras layer: the forward map, the input gradient, and the kernel gradient of the selected
input channels (or output neurons), which must be the dense kernel gradient with every other
channel zeroed. Dense (also on token sequences), Conv2D (same/valid, strided, dilated, grouped,
1x1) and DepthwiseConv2D (multiplier, strided, dilated); the bias inside the custom gradient
(trained or frozen); the `valid` weights of empty draws and XLA's padding slots; small cases by
hand; indices out of range refused."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_tradyx.sparse_update import channel_grads

try:  # channel_grads reads a layer's canonical LinearView where layer_views exists
    from tf_tradyx.sparse_update.layer_views import view_of
except ImportError:  # before it: the Keras layer itself
    view_of = None

C_IN = 6  # every case below has 6 input channels

# name: (layer factory (kwargs for bias/activation), input shape, kind)
CASES = {
    "dense": (lambda **kw: keras.layers.Dense(5, **kw), (3, C_IN), "dense"),
    "dense_tokens": (lambda **kw: keras.layers.Dense(5, **kw), (2, 4, C_IN), "dense"),
    "conv_same": (
        lambda **kw: keras.layers.Conv2D(5, 3, padding="same", **kw),
        (2, 7, 7, C_IN),
        "conv",
    ),
    "conv_strided_valid": (
        lambda **kw: keras.layers.Conv2D(5, 3, strides=2, **kw),
        (2, 9, 9, C_IN),
        "conv",
    ),
    "conv_dilated": (
        lambda **kw: keras.layers.Conv2D(5, 3, dilation_rate=2, padding="same", **kw),
        (2, 9, 9, C_IN),
        "conv",
    ),
    "conv_grouped": (
        lambda **kw: keras.layers.Conv2D(6, 3, padding="same", groups=3, **kw),
        (2, 7, 7, C_IN),
        "conv",
    ),
    "pointwise": (lambda **kw: keras.layers.Conv2D(5, 1, **kw), (2, 5, 5, C_IN), "conv"),
    "pointwise_strided": (
        lambda **kw: keras.layers.Conv2D(5, 1, strides=2, **kw),
        (2, 6, 6, C_IN),
        "conv",
    ),
    "depthwise": (
        lambda **kw: keras.layers.DepthwiseConv2D(3, padding="same", **kw),
        (2, 7, 7, C_IN),
        "depthwise",
    ),
    "depthwise_multiplier_strided": (
        lambda **kw: keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, **kw),
        (2, 9, 9, C_IN),
        "depthwise",
    ),
    "depthwise_dilated": (
        lambda **kw: keras.layers.DepthwiseConv2D(
            3, dilation_rate=2, padding="same", depth_multiplier=2, **kw
        ),
        (2, 9, 9, C_IN),
        "depthwise",
    ),
}
# Output-neuron selection: Dense and ungrouped Conv2D only.
OUTPUT_CASES = [
    "dense",
    "dense_tokens",
    "conv_same",
    "conv_strided_valid",
    "conv_dilated",
    "pointwise",
]
SELECTIONS = [[3], [0, 2, 5], [1, 2, 3, 4], list(range(C_IN))]
TOL = dict(rtol=1e-5, atol=1e-5)


def _case(name, bias=False, seed=0):
    """(built layer with a random kernel and bias, input x, kind)."""
    make, shape, kind = CASES[name]
    keras.utils.set_random_seed(seed)
    layer = make(use_bias=bias, bias_initializer="random_normal" if bias else "zeros")
    layer.build(shape)
    x = tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))
    return layer, x, kind


def _upstream(layer, x, seed=1):
    """A random output gradient dy of the layer's output shape."""
    shape = layer.compute_output_shape(x.shape)
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _dense_grads(layer, x, dy):
    """The reference: d sum(layer(x) * dy) / d (x, kernel[, bias]) by tf.GradientTape on the plain
    Keras layer (its own forward pass, TensorFlow's own backward pass)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * dy)
    variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
    grads = tape.gradient(loss, [x, *variables])
    return y.numpy(), [g.numpy() for g in grads]


def _input_channel_mask(layer, kind, idx):
    """1 where a kernel entry multiplies one of the input channels `idx`, else 0."""
    shape = tuple(layer.kernel.shape)
    keep = np.zeros(C_IN, bool)
    keep[idx] = True
    if kind == "dense":
        return np.broadcast_to(keep[:, None], shape).astype(np.float32)
    groups = int(getattr(layer, "groups", 1))
    rows, c_out = shape[2], shape[3]
    mask = np.zeros(shape, np.float32)
    for r in range(rows):
        for j in range(c_out):
            channel = (j // (c_out // groups)) * rows + r if kind == "conv" else r
            mask[:, :, r, j] = keep[channel]
    return mask


def _output_mask(layer, idx):
    mask = np.zeros(tuple(layer.kernel.shape), np.float32)
    mask[..., idx] = 1.0
    return mask


def _view(layer, kind):
    """What channel_grads takes for `layer`: its LinearView (kind checked), or the layer itself."""
    if view_of is None:
        return layer
    view = view_of(layer)
    assert view.kind == kind
    return view


def _idx(channels):
    return tf.constant(channels, tf.int32)


# ----- the map and its input gradient -----


@pytest.mark.parametrize("name", sorted(CASES))
def test_linear_is_the_layers_own_map(name):
    layer, x, kind = _case(name)
    got = channel_grads.linear(_view(layer, kind), kind, x, tf.convert_to_tensor(layer.kernel))
    np.testing.assert_allclose(got, layer(x), **TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_input_grad_is_the_dense_input_gradient(name):
    layer, x, kind = _case(name)
    dy = _upstream(layer, x)
    _, (dx, _) = _dense_grads(layer, x, dy)
    got = channel_grads.input_grad(
        _view(layer, kind), kind, dy, tf.convert_to_tensor(layer.kernel), tf.shape(x)
    )
    assert tuple(got.shape) == tuple(x.shape)
    np.testing.assert_allclose(got, dx, **TOL)


# ----- kernel gradients of a selection -----


@pytest.mark.parametrize("channels", SELECTIONS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("name", sorted(CASES))
def test_selected_kernel_grad_is_the_dense_gradient_on_the_selected_input_channels(name, channels):
    layer, x, kind = _case(name)
    dy = _upstream(layer, x)
    _, (_, dk) = _dense_grads(layer, x, dy)
    idx = _idx(channels)
    x_sel = tf.gather(x, idx, axis=-1)
    shape = tuple(layer.kernel.shape)
    got = channel_grads.selected_kernel_grad(
        _view(layer, kind), kind, x_sel, dy, idx, shape
    ).numpy()
    assert got.shape == shape
    mask = _input_channel_mask(layer, kind, channels)
    np.testing.assert_allclose(got, dk * mask, **TOL)
    assert np.all(got[mask == 0] == 0)  # exactly zero off the selection, not merely small
    if len(channels) == C_IN:
        np.testing.assert_allclose(got, dk, **TOL)


@pytest.mark.parametrize(
    "channels", [[4], [0, 3], [0, 1, 2, 3, 4]], ids=lambda c: "-".join(map(str, c))
)
@pytest.mark.parametrize("name", OUTPUT_CASES)
def test_selected_output_kernel_grad_is_the_dense_gradient_on_the_selected_neurons(name, channels):
    layer, x, kind = _case(name)
    dy = _upstream(layer, x)
    _, (_, dk) = _dense_grads(layer, x, dy)
    idx = _idx(channels)
    dy_sel = tf.gather(dy, idx, axis=-1)
    shape = tuple(layer.kernel.shape)
    got = channel_grads.selected_output_kernel_grad(
        _view(layer, kind), kind, x, dy_sel, idx, shape
    ).numpy()
    mask = _output_mask(layer, channels)
    np.testing.assert_allclose(got, dk * mask, **TOL)
    assert np.all(got[mask == 0] == 0)


def test_dense_kernel_gradient_by_hand():
    """y = x K, x = [1, 2, 3], dy = [1, -1]: dK = x^T dy, rows of channels 0 and 2 only."""
    layer = keras.layers.Dense(2, use_bias=False)
    layer.build((1, 3))
    x = tf.constant([[1.0, 2.0, 3.0]])
    dy = tf.constant([[1.0, -1.0]])
    idx = _idx([0, 2])
    got = channel_grads.selected_kernel_grad(
        _view(layer, "dense"), "dense", tf.gather(x, idx, axis=-1), dy, idx, (3, 2)
    )
    np.testing.assert_array_equal(got, [[1.0, -1.0], [0.0, 0.0], [3.0, -3.0]])
    neurons = channel_grads.selected_output_kernel_grad(
        _view(layer, "dense"), "dense", x, tf.gather(dy, _idx([1]), axis=-1), _idx([1]), (3, 2)
    )
    np.testing.assert_array_equal(neurons, [[0.0, -1.0], [0.0, -2.0], [0.0, -3.0]])


def test_conv_and_depthwise_kernel_gradients_by_hand():
    """A 2x2 'valid' kernel on a 2x2 input gives one output per map: dK[h, w, c, o] =
    x[h, w, c] * dy[o] (conv), dK[h, w, c, 0] = x[h, w, c] * dy[c] (depthwise)."""
    x = np.arange(1, 9, dtype=np.float32).reshape(1, 2, 2, 2)  # channel c at [..., c]
    conv = keras.layers.Conv2D(3, 2, use_bias=False)
    conv.build(x.shape)
    dy = tf.constant([[[[1.0, 2.0, -1.0]]]])
    idx = _idx([1])
    got = channel_grads.selected_kernel_grad(
        _view(conv, "conv"), "conv", tf.gather(x, idx, axis=-1), dy, idx, (2, 2, 2, 3)
    ).numpy()
    expected = np.zeros((2, 2, 2, 3), np.float32)
    expected[:, :, 1, :] = x[0, :, :, 1, None] * np.array([1.0, 2.0, -1.0])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    depthwise = keras.layers.DepthwiseConv2D(2, use_bias=False)
    depthwise.build(x.shape)
    dy = tf.constant([[[[3.0, -2.0]]]])
    got = channel_grads.selected_kernel_grad(
        _view(depthwise, "depthwise"),
        "depthwise",
        tf.gather(x, idx, axis=-1),
        dy,
        idx,
        (2, 2, 2, 1),
    ).numpy()
    expected = np.zeros((2, 2, 2, 1), np.float32)
    expected[:, :, 1, 0] = x[0, :, :, 1] * -2.0
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# ----- the custom-gradient maps, bias included -----


def _sparse_grads(fn, layer, kind, x, dy, slots, valid=None, input_gradient=True):
    kernel = tf.convert_to_tensor(layer.kernel)
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = fn(_view(layer, kind), kind, x, kernel, slots, valid, input_gradient)
        loss = tf.reduce_sum(y * dy)
    sources = [x, kernel] + ([layer.bias] if layer.use_bias else [])
    return y, tape.gradient(loss, sources)


@pytest.mark.parametrize(
    "name", ["dense", "dense_tokens", "conv_grouped", "pointwise", "depthwise_dilated"]
)
def test_input_sparse_linear_adds_the_bias_and_returns_the_selected_gradients(name):
    layer, x, kind = _case(name, bias=True)
    dy = _upstream(layer, x)
    y_ref, (dx_ref, dk_ref, db_ref) = _dense_grads(layer, x, dy)
    assert np.abs(layer.bias.numpy()).max() > 0  # a bias that matters
    channels = [0, 2, 5]
    y, (dx, dk, db) = _sparse_grads(
        channel_grads.input_sparse_linear, layer, kind, x, dy, _idx(channels), tf.constant(1.0)
    )
    np.testing.assert_allclose(y, y_ref, **TOL)
    np.testing.assert_allclose(dx, dx_ref, **TOL)
    np.testing.assert_allclose(dk, dk_ref * _input_channel_mask(layer, kind, channels), **TOL)
    np.testing.assert_allclose(db, db_ref, **TOL)


@pytest.mark.parametrize("name", OUTPUT_CASES)
def test_output_sparse_linear_adds_the_bias_and_returns_the_selected_gradients(name):
    layer, x, kind = _case(name, bias=True)
    dy = _upstream(layer, x)
    y_ref, (dx_ref, dk_ref, db_ref) = _dense_grads(layer, x, dy)
    channels = [1, 4]
    y, (dx, dk, db) = _sparse_grads(
        channel_grads.output_sparse_linear, layer, kind, x, dy, _idx(channels)
    )
    np.testing.assert_allclose(y, y_ref, **TOL)
    np.testing.assert_allclose(dx, dx_ref, **TOL)
    np.testing.assert_allclose(dk, dk_ref * _output_mask(layer, channels), **TOL)
    np.testing.assert_allclose(db, db_ref, **TOL)


@pytest.mark.parametrize(
    "fn",
    [channel_grads.input_sparse_linear, channel_grads.output_sparse_linear],
    ids=["input", "output"],
)
def test_a_frozen_bias_is_added_but_gets_no_gradient_and_no_input_gradient_when_not_asked(fn):
    layer, x, kind = _case("conv_same", bias=True)
    layer.bias.trainable = False
    dy = _upstream(layer, x)
    y_ref, (_, dk_ref, _) = _dense_grads(layer, x, dy)
    kernel = tf.convert_to_tensor(layer.kernel)
    with tf.GradientTape() as tape:
        tape.watch([x, kernel, layer.bias.value])  # watched: still no gradient may reach it
        y = fn(_view(layer, kind), kind, x, kernel, _idx([0, 1, 2, 3, 4]), None, False)
        loss = tf.reduce_sum(y * dy)
    dx, dk, db = tape.gradient(loss, [x, kernel, layer.bias.value])
    np.testing.assert_allclose(y, y_ref, **TOL)
    assert dx is None and db is None
    mask = (
        _input_channel_mask(layer, kind, [0, 1, 2, 3, 4])
        if fn is channel_grads.input_sparse_linear
        else _output_mask(layer, [0, 1, 2, 3, 4])
    )
    np.testing.assert_allclose(dk, dk_ref * mask, **TOL)


@pytest.mark.parametrize("name", ["dense", "conv_same", "conv_grouped", "depthwise_dilated"])
def test_valid_weights_zero_an_empty_draw_and_the_padding_slots(name):
    layer, x, kind = _case(name)
    dy = _upstream(layer, x)
    _, (dx_ref, dk_ref) = _dense_grads(layer, x, dy)
    fn = channel_grads.input_sparse_linear
    # An empty draw runs as one slot whose derivative is scaled by 0; the input gradient stays.
    _, (dx, dk) = _sparse_grads(fn, layer, kind, x, dy, _idx([3]), tf.constant(0.0))
    np.testing.assert_array_equal(dk, np.zeros_like(dk_ref))
    np.testing.assert_allclose(dx, dx_ref, **TOL)
    # XLA's static slots: the selection {2, 4} first, then padding slots on channel 0, weight 0.
    slots, valid = _idx([2, 4, 0, 0]), tf.constant([1.0, 1.0, 0.0, 0.0])
    _, (_, dk) = _sparse_grads(fn, layer, kind, x, dy, slots, valid)
    np.testing.assert_allclose(dk, dk_ref * _input_channel_mask(layer, kind, [2, 4]), **TOL)
    # Output neurons: padding slot on neuron 0 gets nothing either.
    if kind != "depthwise" and name != "conv_grouped":
        _, (_, dk) = _sparse_grads(
            channel_grads.output_sparse_linear,
            layer,
            kind,
            x,
            dy,
            _idx([3, 0]),
            tf.constant([1.0, 0.0]),
        )
        np.testing.assert_allclose(dk, dk_ref * _output_mask(layer, [3]), **TOL)


def test_an_empty_output_selection_keeps_no_input_and_gives_a_zero_kernel_gradient():
    layer, x, kind = _case("conv_same")
    dy = _upstream(layer, x)
    _, (dx_ref, _) = _dense_grads(layer, x, dy)
    _, (dx, dk) = _sparse_grads(
        channel_grads.output_sparse_linear, layer, kind, x, dy, tf.zeros([0], tf.int32)
    )
    np.testing.assert_array_equal(dk, np.zeros(tuple(layer.kernel.shape), np.float32))
    np.testing.assert_allclose(dx, dx_ref, **TOL)


@pytest.mark.parametrize("name", ["conv_grouped", "depthwise_dilated", "pointwise", "dense_tokens"])
def test_the_sparse_gradients_hold_in_a_graph_and_under_xla(name):
    layer, x, kind = _case(name, bias=True)
    dy = _upstream(layer, x)
    y_ref, (dx_ref, dk_ref, db_ref) = _dense_grads(layer, x, dy)
    slots, valid = _idx([1, 5, 0]), tf.constant([1.0, 1.0, 0.0])
    expected_dk = dk_ref * _input_channel_mask(layer, kind, [1, 5])
    for jit in (False, True):

        @tf.function(jit_compile=jit, autograph=False)
        def step(x, dy):
            return _sparse_grads(
                channel_grads.input_sparse_linear, layer, kind, x, dy, slots, valid
            )

        y, (dx, dk, db) = step(x, dy)
        np.testing.assert_allclose(y, y_ref, **TOL, err_msg=f"jit={jit}")
        np.testing.assert_allclose(dx, dx_ref, **TOL, err_msg=f"jit={jit}")
        np.testing.assert_allclose(dk, expected_dk, **TOL, err_msg=f"jit={jit}")
        np.testing.assert_allclose(db, db_ref, **TOL, err_msg=f"jit={jit}")


@pytest.mark.parametrize("bad", [[C_IN], [-1], [0, C_IN + 3]])
def test_a_channel_index_out_of_range_is_an_error_not_a_silent_zero(bad):
    layer, x, kind = _case("conv_same")
    with tf.device("/CPU:0"), pytest.raises(tf.errors.InvalidArgumentError):
        channel_grads.input_sparse_linear(
            _view(layer, kind),
            kind,
            x,
            tf.convert_to_tensor(layer.kernel),
            _idx(bad),
            tf.constant(1.0),
            True,
        )


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
