"""The linear algebra of `ChannelSparseUpdate`: a layer's forward map, its input gradient, and its
kernel gradient on a subset of input channels (or of output neurons), for the three canonical maps
of `layer_views`: dense, 2-D convolution (grouped and dilated included) and 2-D depthwise
convolution (dilated included). `layer` is the wrapped layer's `LinearView` (its canonical
parameters: `kernel_shape`, strides, padding, dilation, groups, bias); `kind` is "dense", "conv"
or "depthwise". The two `*_sparse_linear` functions are the layer's map with the backward pass that
keeps and computes only what the selection needs.
"""

import tensorflow as tf

from tf_tradyx.sparse_update import layer_views


def _view(layer):
    """A layer's `LinearView` (a view passes through): the functions here accept either."""
    return layer if isinstance(layer, layer_views.LinearView) else layer_views.view_of(layer)


def _conv_args(layer):
    return (1, *layer.strides, 1), layer.padding.upper(), (1, *layer.dilation_rate, 1)


def _dilated_depthwise(layer, kind):
    return kind == "depthwise" and tuple(layer.dilation_rate) != (1, 1)


def _pointwise(layer, kind):
    """A 1x1, stride-1, ungrouped conv: a matmul over every position. Its backward pass runs as
    one (BLAS-like) matmul: oneDNN's conv backward primitives would be compiled anew for every
    selection size, each holding tens of KB of JIT code, and they reorder the activations to
    their blocked layout and back at every step."""
    return (
        kind == "conv"
        and tuple(layer.kernel_shape[:2]) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and int(layer.groups) == 1
    )


def _as_dense(kernel):
    return tf.reshape(kernel, kernel.shape[2:])


def linear(layer, kind, x, kernel):
    """The layer's linear map (no bias, no activation) with this kernel."""
    layer = _view(layer)
    if kind == "dense":
        return tf.tensordot(x, kernel, [[x.shape.rank - 1], [0]])
    strides, padding, dilations = _conv_args(layer)
    if kind == "depthwise":
        return tf.nn.depthwise_conv2d(x, kernel, strides, padding, dilations=dilations[1:3])
    return tf.nn.conv2d(x, kernel, strides, padding, dilations=dilations)  # groups: by shape


def input_grad(layer, kind, dy, kernel, x_shape):
    """d loss / d input: needs only the kernel."""
    layer = _view(layer)
    if _pointwise(layer, kind):
        k = _as_dense(kernel)  # (in, out)
        return tf.reshape(tf.matmul(tf.reshape(dy, (-1, k.shape[1])), k, transpose_b=True), x_shape)
    if kind == "dense":
        return tf.tensordot(dy, kernel, [[dy.shape.rank - 1], [1]])
    strides, padding, dilations = _conv_args(layer)
    if _dilated_depthwise(layer, kind):
        # TensorFlow's CPU depthwise backprop kernels ignore dilation (wrong numbers, no
        # error); the same map as a conv with one group per channel is right everywhere.
        kh, kw, c_in, m = kernel.shape
        kernel = tf.reshape(kernel, (kh, kw, 1, c_in * m))
    elif kind == "depthwise":
        return tf.compat.v1.nn.depthwise_conv2d_native_backprop_input(
            x_shape, kernel, dy, strides, padding
        )
    return tf.compat.v1.nn.conv2d_backprop_input(
        x_shape, kernel, dy, strides, padding, dilations=dilations
    )


def selected_kernel_grad(layer, kind, x_sel, dy, idx, kernel_shape):
    """d loss / d kernel from the gathered input channels `x_sel` (channels `idx`), scattered
    into a zero kernel."""
    layer = _view(layer)
    if _pointwise(layer, kind):
        g = selected_kernel_grad(layer, "dense", x_sel, dy, idx, kernel_shape[2:])
        return tf.reshape(g, kernel_shape)
    n = tf.size(idx)  # (fewer graph ops than tf.shape(idx)[0]; see wrapper.call)
    if kind == "dense":
        if x_sel.shape.rank != 2:  # (batch, ..., channels): every position is a row
            with tf.control_dependencies([dy]):  # a backward op: the kept tensor stays the gather
                x_sel = tf.reshape(x_sel, (-1, n))
            dy = tf.reshape(dy, (-1, kernel_shape[1]))
        g = tf.matmul(x_sel, dy, transpose_a=True)
        return tf.scatter_nd(tf.expand_dims(idx, 1), g, kernel_shape)
    kh, kw, c_in, c_out = kernel_shape
    strides, padding, dilations = _conv_args(layer)
    if kind == "depthwise":
        # Output channel c * m + j belongs to input channel c.
        m = c_out
        dy_sel = tf.reshape(
            tf.gather(tf.reshape(dy, tf.concat([tf.shape(dy)[:3], [c_in, m]], 0)), idx, axis=3),
            tf.concat([tf.shape(dy)[:3], [n * m]], 0),
        )
        if _dilated_depthwise(layer, kind):  # (see _input_grad) every pair, then the diagonal
            g = tf.compat.v1.nn.conv2d_backprop_filter(
                x_sel,
                tf.stack([kh, kw, n, n * m]),
                dy_sel,
                strides,
                padding,
                dilations=dilations,
            )
            g = tf.linalg.diag_part(
                tf.transpose(tf.reshape(g, tf.stack([kh, kw, n, n, m])), (0, 1, 4, 2, 3))
            )
            g = tf.transpose(g, (0, 1, 3, 2))
        else:
            g = tf.compat.v1.nn.depthwise_conv2d_native_backprop_filter(
                x_sel, tf.stack([kh, kw, n, m]), dy_sel, strides, padding
            )
    else:
        groups = int(layer.groups)
        g = tf.compat.v1.nn.conv2d_backprop_filter(
            x_sel, tf.stack([kh, kw, n, c_out]), dy, strides, padding, dilations=dilations
        )
        if groups > 1:
            return _grouped_scatter(g, idx, kernel_shape, groups)
    g = tf.scatter_nd(tf.expand_dims(idx, 1), tf.transpose(g, (2, 0, 1, 3)), (c_in, kh, kw, c_out))
    return tf.transpose(g, (1, 2, 0, 3))


def selected_output_kernel_grad(layer, kind, x, dy_sel, idx, kernel_shape):
    """d loss / d kernel of the output neurons `idx` (dy_sel: their output gradients), from the
    whole input `x`, scattered into a zero kernel (Dense and ungrouped Conv2D)."""
    layer = _view(layer)
    if _pointwise(layer, kind):
        g = selected_output_kernel_grad(layer, "dense", x, dy_sel, idx, kernel_shape[2:])
        return tf.reshape(g, kernel_shape)
    n = tf.size(idx)
    if kind == "dense":
        if x.shape.rank != 2:
            x, dy_sel = tf.reshape(x, (-1, kernel_shape[0])), tf.reshape(dy_sel, tf.stack([-1, n]))
        g = tf.matmul(x, dy_sel, transpose_a=True)  # (in, n)
        return tf.transpose(
            tf.scatter_nd(tf.expand_dims(idx, 1), tf.transpose(g), kernel_shape[::-1])
        )
    kh, kw, c_in, c_out = kernel_shape
    strides, padding, dilations = _conv_args(layer)
    g = tf.compat.v1.nn.conv2d_backprop_filter(
        x, tf.stack([kh, kw, c_in, n]), dy_sel, strides, padding, dilations=dilations
    )
    g = tf.scatter_nd(tf.expand_dims(idx, 1), tf.transpose(g, (3, 0, 1, 2)), (c_out, kh, kw, c_in))
    return tf.transpose(g, (1, 2, 3, 0))


def _grouped_scatter(g, idx, kernel_shape, groups):
    """A grouped conv's kernel gradient from the gradient against every output channel
    (kh, kw, n, groups * per_group): input channel c (kernel row c % rows) keeps only the
    outputs of its own group c // rows."""
    kh, kw, rows, c_out = kernel_shape
    per_group = c_out // groups
    n = tf.size(idx)
    g = tf.reshape(tf.transpose(g, (2, 3, 0, 1)), tf.stack([n, groups, per_group, kh, kw]))
    group = idx // rows
    g = tf.gather(g, group, axis=1, batch_dims=1)  # (n, per_group, kh, kw)
    cols = group[:, None] * per_group + tf.range(per_group)[None, :]
    where = tf.stack([tf.broadcast_to((idx % rows)[:, None], tf.shape(cols)), cols], -1)
    g = tf.scatter_nd(where, g, (rows, c_out, kh, kw))
    return tf.transpose(g, (2, 3, 0, 1))


def _leading(t, count):
    """The first `count` examples of `t` (a run-time count)."""
    rank = t.shape.rank
    return tf.slice(t, [0] * rank, tf.concat([[count], [-1] * (rank - 1)], 0))


def _bias_of(layer, dtype):
    """(bias tensor or None, whether it trains: a scheme may train a bias of a wrapped layer)."""
    if not layer.use_bias:  # (an EinsumDense's bias is added outside, after its reshape)
        return None, False
    return tf.cast(tf.convert_to_tensor(layer.bias), dtype), bool(layer.bias.trainable)


def _biased_custom_linear(layer, x, kernel, body):
    """One custom-gradient call of `body(x, kernel) -> (y, grad(dy) -> (dx, dk))` with the layer's
    bias added to y inside it, next to the conv, so that Grappler fuses the two into one oneDNN
    kernel (an Identity between them prevents it). A bias that trains is an input of the
    gradient (sum of dy over all but the channel axis); a frozen one is a constant here."""
    bias, trains = _bias_of(layer, x.dtype)

    @tf.custom_gradient
    def call(x, kernel, *trained_bias):
        y, grad = body(x, kernel, trained_bias[0] if trains else bias)

        def grads(dy):
            dx, dk = grad(dy)
            if not trains:
                return dx, dk
            return dx, dk, tf.reduce_sum(dy, axis=list(range(dy.shape.rank - 1)))

        return y, grads

    return call(x, kernel, bias) if trains else call(x, kernel)


def _with_bias(y, bias):
    return y if bias is None else tf.nn.bias_add(y, bias)


def input_sparse_linear(layer, kind, x, kernel, slots, valid, input_gradient):
    """The linear map (plus the bias) whose backward pass keeps only the input channels `slots`
    and returns their kernel derivative. `valid` weighs the slots: per slot under XLA (padding
    slots 0), or a scalar 0/1 that scales the derivative (0: an empty draw padded to one slot)."""
    layer = _view(layer)
    kernel_shape = tuple(layer.kernel_shape)
    per_slot = valid is not None and valid.shape.rank == 1

    def body(x, kernel, bias):
        y = _with_bias(linear(layer, kind, x, kernel), bias)
        x_shape = tf.shape(x)
        x_sel = tf.gather(x, slots, axis=-1)  # All the backward pass keeps of x.
        if per_slot:
            x_sel = x_sel * valid
        with tf.control_dependencies([x_sel]):  # gather now, so x can be freed now
            y = tf.identity(y)

        def grad(dy):
            dx = input_grad(layer, kind, dy, kernel, x_shape) if input_gradient else None
            dk = selected_kernel_grad(layer, kind, x_sel, dy, slots, kernel_shape)
            return dx, dk if valid is None or per_slot else dk * valid

        return y, grad

    return _biased_custom_linear(layer, x, kernel, body)


def output_sparse_linear(layer, kind, x, kernel, slots, valid, input_gradient):
    """The linear map (plus the bias) whose backward pass computes the kernel derivative of the
    output neurons `slots` only, from the whole input: kept when a neuron is selected, else
    nothing (outside XLA; under XLA, with `valid` given, it is always kept)."""
    layer = _view(layer)
    kernel_shape = tuple(layer.kernel_shape)
    keep = None if valid is not None else tf.where(tf.size(slots) > 0, tf.shape(x)[0], 0)

    def body(x, kernel, bias):
        y = _with_bias(linear(layer, kind, x, kernel), bias)
        x_shape = tf.shape(x)
        x_kept = x if keep is None else _leading(x, keep)
        with tf.control_dependencies([x_kept]):
            y = tf.identity(y)

        def grad(dy):
            dx = input_grad(layer, kind, dy, kernel, x_shape) if input_gradient else None
            dy_sel = tf.gather(dy if keep is None else _leading(dy, keep), slots, axis=-1)
            if valid is not None:
                dy_sel = dy_sel * valid
            return dx, selected_output_kernel_grad(layer, kind, x_kept, dy_sel, slots, kernel_shape)

        return y, grad

    return _biased_custom_linear(layer, x, kernel, body)
