"""The weightless operations of a graph in the path networks: what kind each one is, and how the
affine ones, layer normalization and products of two branches act in each mode.

Kinds (`kind_of`):
  "weighted"    prunable Conv/Dense layers (their own linear map, see path_layers.linear_call)
  "activation"  elementwise activations (the ReLU family exactly, smooth ones linearised)
  "batch_norm"  inference BatchNormalization
  "affine"      per-channel or constant scale and shift: Rescaling, Normalization, ConvNeXt's
                LayerScale, and the op-layers of `keras.ops` arithmetic with a constant (x / 127.5,
                x - mean: what `preprocess_input` makes). The scale is a path weight: 1 in z1,
                squared in z2, absolute in SynFlow (with the absolute shift).
  "layer_norm"  LayerNormalization: its scale gamma is a path weight; its 1 / sigma is a gate
                read from the real data in z1, and 1 in z2 and SynFlow (a data-free stand-in: the
                all-ones input has no spread).
  "product"     a product of graph tensors (squeeze-excite `Multiply`): z1 follows the product
                rule with the other factor's real value as the gate; z2 and SynFlow add the
                factors' paths (each factor passes the other's paths with unit gain): multiplying
                them would square path magnitudes at every squeeze-excite block (float64 overflows
                within a few blocks) and no longer be a sum over paths.
  "max_pool"    channels_last max pooling
  "linear"      sums, concatenation, reshapes, slicing, padding, average pooling: unchanged
  "identity"    dropout, noise, stochastic depth: the identity at inference
"""

import keras
import tensorflow as tf
from keras import layers

from tf_tradyx import _keras_compat
from tf_tradyx.pruning import masking, path_layers
from tf_tradyx.pruning.path_layers import DTYPE

# Op-layers Keras creates for `keras.ops` calls on symbolic tensors, by class name.
ARITHMETIC_OPS = ("Add", "Subtract", "Multiply", "TrueDivide", "Divide", "Negative")
LINEAR_OPS = (
    "Concatenate",
    "Reshape",
    "Flatten",
    "Transpose",
    "ExpandDims",
    "Squeeze",
    "GetItem",
    "Stack",
)
_ACTIVATION_LAYERS = (layers.ReLU, layers.LeakyReLU, layers.ELU, layers.Activation, layers.Softmax)


def kind_of(op):
    """(kind, None) for a supported operation, (None, why) otherwise."""
    if isinstance(op, masking.MaskedLayer) or masking.is_prunable(op):
        return "weighted", None
    if isinstance(op, layers.BatchNormalization):
        return "batch_norm", None
    if isinstance(op, layers.LayerNormalization):
        return "layer_norm", None
    if isinstance(op, (layers.Rescaling, layers.Normalization)) or _keras_compat.is_layer_scale(op):
        return "affine", None
    if isinstance(op, layers.MaxPooling2D):
        if op.data_format != "channels_last":
            return None, "channels_first max pooling"
        return "max_pool", None
    if isinstance(op, layers.Multiply):
        return "product", None
    if isinstance(op, path_layers.NOISE_LAYERS) or _keras_compat.is_stochastic_depth(op):
        return "identity", None
    if isinstance(op, path_layers.LINEAR_LAYERS):
        return "linear", None
    if isinstance(op, _ACTIVATION_LAYERS):
        if path_layers.layer_activation_spec(op) is None:
            return None, "an activation that is not elementwise or not known"
        return "activation", None
    if not isinstance(op, layers.Layer):
        name = type(op).__name__
        if name in ARITHMETIC_OPS:
            return "arithmetic", None
        if name in LINEAR_OPS:
            return "linear", None
    return None, "unknown layer type"


def _as64(value):
    return tf.cast(tf.convert_to_tensor(value), DTYPE)


def affine_scale_shift(op, args):
    """y = scale * x + shift of an affine operation, as float64 tensors broadcastable to x.
    For arithmetic op-layers, `args` tells which argument is the graph tensor ("x") and which the
    constant; None when the arithmetic is not affine in the graph tensor (e.g. c / x)."""
    if isinstance(op, layers.Rescaling):
        return _as64(op.scale), _as64(op.offset)
    if isinstance(op, layers.Normalization):
        std = tf.maximum(tf.sqrt(_as64(op.variance)), keras.backend.epsilon())
        mean = _as64(op.mean)
        if op.invert:
            return std, mean
        return 1.0 / std, -mean / std
    if _keras_compat.is_layer_scale(op):
        return _as64(op.gamma), tf.zeros((), DTYPE)
    name = type(op).__name__
    (x_pos,) = [i for i, a in enumerate(args) if a == "x"]
    const = [_as64(a) for a in args if not isinstance(a, str)]
    zero, one = tf.zeros((), DTYPE), tf.ones((), DTYPE)
    if name == "Negative":
        return -one, zero
    (c,) = const
    if name == "Add":
        return one, c
    if name == "Subtract":
        return (one, -c) if x_pos == 0 else (-one, c)
    if name == "Multiply":
        return c, zero
    if name in ("TrueDivide", "Divide") and x_pos == 0:
        return 1.0 / c, zero
    return None


def apply_affine(x, scale, shift, mode):
    """An affine operation in an auxiliary mode ("z1", "z2", "synflow", "connect")."""
    if mode in ("z1", "connect"):
        return x
    scale = tf.cast(scale, x.dtype)
    if mode == "z2":
        return x * scale * scale
    return x * tf.abs(scale) + tf.abs(tf.cast(shift, x.dtype))


def apply_batch_norm(bn, x, mode):
    """Inference BatchNormalization in an auxiliary mode: its scale is a path weight; SynFlow
    uses absolute parameters and statistics, as the authors' code does."""
    gamma, beta, mean, var = path_layers.bn_scale_shift(bn)
    shape = path_layers.channel_shape(bn, len(x.shape))
    if mode in ("z1", "connect"):
        return x
    if mode == "z2":
        scale = gamma / tf.sqrt(var + bn.epsilon)
        return x * tf.reshape(scale * scale, shape)
    scale = tf.abs(gamma) / tf.sqrt(tf.abs(var) + bn.epsilon)
    return (x - tf.reshape(tf.abs(mean), shape)) * tf.reshape(scale, shape) + tf.reshape(
        tf.abs(beta), shape
    )


def _layer_norm_axes(op, rank):
    axes = op.axis if isinstance(op.axis, (list, tuple)) else [op.axis]
    return [a % rank for a in axes]


def layer_norm_gate(op, x):
    """(1 / sigma)^2 of the real input, per sample and position (kept dimensions of size 1)."""
    x = tf.cast(x, tf.float32)
    axes = _layer_norm_axes(op, len(x.shape))
    if op.rms_scaling:
        var = tf.reduce_mean(tf.square(x), axis=axes, keepdims=True)
    else:
        _, var = tf.nn.moments(x, axes=axes, keepdims=True)
    return tf.stop_gradient(1.0 / (var + op.epsilon))


def _layer_norm_param(op, name, x):
    value = getattr(op, name, None)
    if value is None:
        return None
    axes = _layer_norm_axes(op, len(x.shape))
    shape = [x.shape[a] if a in axes else 1 for a in range(len(x.shape))]
    return tf.reshape(tf.cast(tf.convert_to_tensor(value), x.dtype), shape)


def apply_layer_norm(op, x, mode, gate=None):
    """LayerNormalization in an auxiliary mode; `gate` (z1) from `layer_norm_gate`."""
    if mode == "z1":
        return x * tf.cast(gate, x.dtype)
    if mode == "connect":
        return x
    gamma = _layer_norm_param(op, "gamma", x)
    if mode == "z2":
        return x if gamma is None else x * gamma * gamma
    beta = _layer_norm_param(op, "beta", x)
    y = x if gamma is None else x * tf.abs(gamma)
    return y if beta is None else y + tf.abs(beta)


def apply_product(factors, mode, real_squares=None):
    """A product of graph tensors in an auxiliary mode. z1: the product rule, each factor's paths
    scaled by the other factors' squared real values (`real_squares`); z2 and SynFlow: the sum of
    the factors (broadcast)."""
    if mode != "z1":
        return tf.add_n(_broadcast_all(factors))
    terms = []
    for i, f in enumerate(factors):
        term = f
        for j, sq in enumerate(real_squares):
            if j != i:
                term = term * tf.cast(sq, f.dtype)
        terms.append(term)
    return tf.add_n(_broadcast_all(terms))


def _broadcast_all(tensors):
    shape = tf.shape(tensors[0])
    for t in tensors[1:]:
        shape = tf.broadcast_dynamic_shape(shape, tf.shape(t))
    return [tf.broadcast_to(t, shape) for t in tensors]
