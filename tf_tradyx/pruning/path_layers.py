"""The per-layer pieces of the path networks: which layers and activations they treat, how an
activation becomes a gate, and each weighted layer's linear map (its own convolution, no bias).

`paths.PathNetwork` interprets a model's graph with these; they are apart so that each part of the
PX / SynFlow machinery stays small enough to read in one sitting.
"""

import math

import keras
import tensorflow as tf
from keras import layers, ops

from tf_tradyx import _model_walk
from tf_tradyx.pruning import masking

DTYPE = tf.float64

NOISE_LAYERS = _model_walk.NOISE_LAYERS  # the identity at inference: passed through
LINEAR_LAYERS = (
    layers.Add,
    layers.Average,
    layers.Concatenate,
    layers.Flatten,
    layers.Reshape,
    layers.Permute,
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
    layers.AveragePooling1D,
    layers.AveragePooling2D,
    layers.AveragePooling3D,
    layers.ZeroPadding1D,
    layers.ZeroPadding2D,
    layers.ZeroPadding3D,
    layers.Cropping1D,
    layers.Cropping2D,
    layers.Cropping3D,
    layers.Identity,
    *NOISE_LAYERS,
)
LINEAR_OPS = ("Add", "Concatenate", "Reshape", "Flatten", "Transpose", "ExpandDims", "Squeeze")


class UnsupportedLayerError(ValueError):
    """A layer the path-based scorers cannot treat exactly."""


_SUPPORTED = (
    "Supported: Conv/DepthwiseConv/SeparableConv/Dense, BatchNormalization, ReLU/ReLU6/LeakyReLU "
    "(as layers or fused), average and max pooling, Add, Concatenate, Flatten, padding, dropout, "
    "Rescaling. For this model, use a scorer that differentiates the real network instead: "
    "SNIPPruner, IterSNIPPruner, GraSPPruner (or magnitude, random)."
)


def unsupported(op, why):
    """The error for one layer the path-based scorers cannot treat exactly."""
    return UnsupportedLayerError(
        f"Layer {op.name!r} ({type(op).__name__}) is not supported by path-based scoring (PX, "
        f"SynFlow): {why}. {_SUPPORTED}"
    )


def unsupported_all(problems):
    """One error naming every unsupported layer (`problems`: (layer, why) pairs) at once."""
    if len(problems) == 1:
        return unsupported(*problems[0])
    listed = "; ".join(f"{op.name!r} ({type(op).__name__}): {why}" for op, why in problems[:20])
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return UnsupportedLayerError(
        f"{len(problems)} layers are not supported by path-based scoring (PX, SynFlow): "
        f"{listed}{more}. {_SUPPORTED}"
    )


# ----- activations -------------------------------------------------------------------------------

# Elementwise activations whose derivative at the real network's pre-activation is the data term's
# gate (its first-order linearisation): read by automatic differentiation, so every one of them is
# treated by the same code. The ReLU family is apart because its gate is exact and is read off the
# activation's output.
_SMOOTH_NAMES = (
    "silu",
    "swish",
    "gelu",
    "hard_silu",
    "hard_swish",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
    "elu",
    "selu",
    "celu",
    "softplus",
    "softsign",
    "mish",
    "exponential",
    "log_sigmoid",
    "hard_tanh",
    "tanh_shrink",
    "squareplus",
    "sparse_plus",
    "sparse_sigmoid",
)
_SMOOTH = tuple(
    getattr(keras.activations, n) for n in _SMOOTH_NAMES if hasattr(keras.activations, n)
)


def activation_spec(fn):
    """("linear",), ("relu", negative_slope, max_value), ("smooth", fn), ("softmax",), or None
    when the path networks cannot treat the activation (not elementwise, or unknown)."""
    if fn is None or fn is keras.activations.linear:
        return ("linear",)
    if fn is keras.activations.relu:
        return ("relu", 0.0, math.inf)
    if fn is keras.activations.relu6:
        return ("relu", 0.0, 6.0)
    if fn is keras.activations.leaky_relu:
        return ("relu", 0.2, math.inf)
    if fn is keras.activations.softmax:
        return ("softmax",)
    if any(fn is f for f in _SMOOTH):
        return ("smooth", fn)
    return None


def layer_activation_spec(op):
    if isinstance(op, layers.ReLU):
        if float(op.threshold) != 0.0:
            return None
        max_value = math.inf if op.max_value is None else float(op.max_value)
        return ("relu", float(op.negative_slope), max_value)
    if isinstance(op, layers.LeakyReLU):
        return ("relu", float(op.negative_slope), math.inf)
    if isinstance(op, layers.ELU):
        return ("smooth", op.call)
    if isinstance(op, layers.Activation):
        return activation_spec(op.activation)
    if isinstance(op, layers.Softmax):
        return ("softmax",)
    return None


def squared_gate(y, spec, dtype):
    """(d act / d pre)^2 read off the activation output y (the sign and saturation of y tell)."""
    _, slope, max_value = spec
    if slope == 0.0:
        active = y > 0 if not math.isfinite(max_value) else tf.logical_and(y > 0, y < max_value)
        return tf.cast(active, dtype)
    one, zero = tf.ones_like(y), tf.zeros_like(y)
    active = tf.where(y < max_value, one, zero) if math.isfinite(max_value) else one
    gate = tf.where(y > 0, active, tf.where(y < 0, slope * one, zero))
    return tf.cast(gate * gate, dtype)


def smooth_activation(fn, pre):
    """(fn(pre), (d fn / d pre)^2): the activation and its squared derivative at `pre`, by
    automatic differentiation (the activation is elementwise, so the gradient of the sum is the
    derivative). The derivative is a constant of the data term: no gradient flows through it."""
    with tf.GradientTape() as tape:
        tape.watch(pre)
        y = fn(pre)
    slope = tf.stop_gradient(tape.gradient(y, pre))
    return y, slope * slope


# ----- weighted layers ---------------------------------------------------------------------------


def linear_call(layer, x, kernels):
    """The layer's output with the given kernels: no bias, no activation."""
    if isinstance(layer, masking.PrunableLayer):
        if not hasattr(layer, "linear_call"):
            raise UnsupportedLayerError(
                f"Layer {layer.name!r} implements PrunableLayer but not linear_call(inputs, "
                "kernels), which path-based scoring needs."
            )
        return layer.linear_call(x, kernels)
    if isinstance(layer, layers.Dense):
        return ops.matmul(x, kernels[0])
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        return ops.separable_conv(
            x,
            kernels[0],
            kernels[1],
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        return ops.depthwise_conv(
            x,
            kernels[0],
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if layer.padding == "causal":
        raise unsupported(layer, "causal padding")
    return layer.convolution_op(x, kernels[0])


def channel_shape(layer, rank):
    """Broadcast shape of a per-channel vector for an output of this rank."""
    axis = -1
    if getattr(layer, "data_format", "channels_last") == "channels_first" and rank > 2:
        axis = 1
    if isinstance(layer, layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    shape = [1] * rank
    shape[axis] = -1
    return shape


def bn_scale_shift(bn):
    """Inference-mode y = scale * x + shift of a BatchNormalization layer, in float64."""
    var = tf.cast(tf.convert_to_tensor(bn.moving_variance), DTYPE)
    mean = tf.cast(tf.convert_to_tensor(bn.moving_mean), DTYPE)
    gamma = tf.cast(tf.convert_to_tensor(bn.gamma), DTYPE) if bn.scale else tf.ones_like(var)
    beta = tf.cast(tf.convert_to_tensor(bn.beta), DTYPE) if bn.center else tf.zeros_like(var)
    return gamma, beta, mean, var
