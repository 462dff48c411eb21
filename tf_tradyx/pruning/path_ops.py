"""How each kind of layer acts in the path networks of PX and SynFlow, mode by mode.

`paths.PathNetwork` interprets a model's graph; for every operation it asks `kind_of` (which reads
the layer-kind registry, `tf_tradyx._graph.kinds`) and computes it with the functions here:

  "weighted"    prunable Conv/Dense layers: their own linear map (`linear_call`) with the pass's
                kernels (unit, squared or absolute weights), no bias, then the fused activation
  "activation"  elementwise activations: the ReLU family exactly (its gate is read off the output),
                smooth ones linearised (their derivative at the real pre-activation, `smooth_activation`)
  "batch_norm"  inference BatchNormalization: its scale is a path weight
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
  "bilinear"    a matmul or einsum of two graph tensors (attention written with `keras.ops`): the
                product rule of "product", summed over the contracted index (`apply_bilinear`)
  "attention"   `keras.layers.MultiHeadAttention`: `tf_tradyx.pruning.attention_paths`
  "max_pool"    channels_last max pooling
  "linear"      sums, concatenation, reshapes, slicing, padding, average pooling: unchanged
  "identity"    dropout, noise, stochastic depth: the identity at inference
"""

import math

import keras
import tensorflow as tf
from keras import layers, ops

from tf_tradyx import _keras_compat
from tf_tradyx._graph import kinds

DTYPE = tf.float64


def kind_of(op):
    """(path kind, None) for an operation the path networks treat, (None, why) otherwise."""
    kind, why = kinds.path_support(op)
    if kind == "activation" and layer_activation_spec(op) is None:
        return None, "an activation that is not elementwise or not known"
    return kind, why


class UnsupportedLayerError(ValueError):
    """A layer the path-based scorers cannot treat exactly.

    Raised by `PathNetwork` and so by PX and SynFlow (which compute modified copies of the
    network layer by layer), naming every such layer at once, with what they support and the
    pruners that take any differentiable layer instead (SNIP, GraSP, magnitude, random). A
    subclass of `ValueError`.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((4,)),
      ...     keras.layers.Dense(4),
      ...     keras.layers.Lambda(lambda x: x * 2, name="double"),
      ...     keras.layers.Dense(2),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> tx.pruning.SynFlowPruner(verbose=0).prune(masked, 0.5)
      Traceback (most recent call last):
      ...
      tf_tradyx.pruning.path_ops.UnsupportedLayerError: Layer 'double' (Lambda) is not supported ...
      >>> report = tx.pruning.MagnitudePruner(verbose=0).prune(masked, 0.5)  # works
      >>> report.kept, report.total
      (12, 24)
    """


def _supported():
    """The list of what the path networks treat, read from the layer-kind registry."""
    weighted = "/".join(kinds.names_of(lambda k: k.path == "weighted"))
    other = ", ".join(
        kinds.names_of(lambda k: k.path is not None and k.path not in ("weighted", "activation"))
    )
    return (
        f"Supported: {weighted}; activation layers and fused activations of the ReLU family "
        f"(exact) and smooth elementwise ones ({', '.join(_SMOOTH_NAMES[:6])}, ...; linearised); "
        f"{other}; keras.ops arithmetic and reshapes. For this model, use a scorer that "
        "differentiates the real network instead: SNIPPruner, IterSNIPPruner, GraSPPruner (or "
        "magnitude, random)."
    )


def unsupported(op, why):
    """The error for one layer the path-based scorers cannot treat exactly."""
    return UnsupportedLayerError(
        f"Layer {op.name!r} ({type(op).__name__}) is not supported by path-based scoring (PX, "
        f"SynFlow): {why}. {_supported()}"
    )


def unsupported_all(problems):
    """One error naming every unsupported layer (`problems`: (layer, why) pairs) at once."""
    if len(problems) == 1:
        return unsupported(*problems[0])
    listed = "; ".join(f"{op.name!r} ({type(op).__name__}): {why}" for op, why in problems[:20])
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return UnsupportedLayerError(
        f"{len(problems)} layers are not supported by path-based scoring (PX, SynFlow): "
        f"{listed}{more}. {_supported()}"
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
    if isinstance(op, layers.Softmax) or (
        type(op).__name__ == "Softmax" and not isinstance(op, layers.Layer)  # keras.ops.softmax
    ):
        return ("softmax",)
    return None


def softmax_gate(p):
    """(p (1 - p))^2 read off a softmax's output: the squared diagonal of its Jacobian (the
    -p_i p_j terms between positions are left out, as LayerNormalization's centering terms)."""
    p = tf.cast(tf.stop_gradient(p), tf.float32)
    return tf.square(p * (1.0 - p))


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
    if kinds.kind_of(layer).name == "prunable_layer":
        if not hasattr(layer, "linear_call"):
            raise UnsupportedLayerError(
                f"Layer {layer.name!r} implements PrunableLayer but not linear_call(inputs, "
                "kernels), which path-based scoring needs."
            )
        return layer.linear_call(x, kernels)
    if isinstance(layer, layers.Dense):
        return ops.matmul(x, kernels[0])
    if isinstance(layer, layers.EinsumDense):  # dense-like equations only (kinds.path_problem)
        return ops.einsum(layer.equation, x, kernels[0])
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


# ----- weightless operations ---------------------------------------------------------------------


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
    gamma, beta, mean, var = bn_scale_shift(bn)
    shape = channel_shape(bn, len(x.shape))
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


def apply_bilinear(fn, factors, mode, real_squares=None):
    """A bilinear map `fn(a, b)` of two graph tensors (a matmul or an einsum: attention's q.k^T and
    p.v) in an auxiliary mode: the product rule summed over the contracted index. z1: each
    factor's paths times the other factor's squared real values, `fn(z1_a, b^2) + fn(a^2, z1_b)`;
    z2, SynFlow and connect: each factor passes the other's paths with unit gain,
    `fn(a, 1) + fn(1, b)`, as for an elementwise product."""
    a, b = factors
    if mode == "z1":
        sq_a, sq_b = (tf.cast(sq, a.dtype) for sq in real_squares)
        return fn(a, sq_b) + fn(sq_a, b)
    return fn(a, tf.ones_like(b)) + fn(tf.ones_like(a), b)


def _broadcast_all(tensors):
    shape = tf.shape(tensors[0])
    for t in tensors[1:]:
        shape = tf.broadcast_dynamic_shape(shape, tf.shape(t))
    return [tf.broadcast_to(t, shape) for t in tensors]
