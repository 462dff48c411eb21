"""ReLU / ReLU6 whose backward pass keeps one bit per element instead of a float activation.

TensorFlow's ReluGrad and Relu6Grad read the float input or output of the activation, so a ReLU
between two layers of the backward path holds a full float32 copy of its map until the backward pass
reaches it. Their derivative is only the gate 0 < x (< 6), so here the forward pass packs that gate
eight elements to a byte (uint8; one byte per element when the channel count is not a multiple of
8) and the backward pass unpacks it. Forward values and gradients are bit-identical to TensorFlow's.
"""

import keras
import tensorflow as tf
from keras import layers

# Eight 0/1 bytes read as one little-endian uint64 and multiplied by this constant land, as bits
# 7..0, in the product's top byte; a byte multiplied by it and masked with _TOP spreads its bits
# back, one to the top bit of each byte. Every partial product sits at its own bit (no carries), so
# both are exact; one multiply per 8 elements instead of a shift and a sum over each element.
_SPREAD = 0x8040201008040201
_TOP = 0x8080808080808080


def pack_bits(mask):
    """bool (..., C) -> uint8 (-1, C // 8) when C % 8 == 0, else uint8 (..., C)."""
    channels = mask.shape[-1]
    if channels is None or channels % 8:
        return tf.cast(mask, tf.uint8)
    # Leading axes are flattened (unpack_bits restores them): fewer ops in the train graph.
    words = tf.bitcast(tf.reshape(tf.cast(mask, tf.uint8), (-1, channels // 8, 8)), tf.uint64)
    top = tf.bitwise.right_shift(
        words * tf.constant(_SPREAD, tf.uint64), tf.constant(56, tf.uint64)
    )
    return tf.cast(top, tf.uint8)


def unpack_bits(packed, shape, channels):
    """Inverse of `pack_bits`: a bool tensor of `shape`."""
    if channels is None or channels % 8:
        return tf.cast(packed, tf.bool)
    words = tf.bitwise.bitwise_and(
        tf.cast(packed, tf.uint64) * tf.constant(_SPREAD, tf.uint64), tf.constant(_TOP, tf.uint64)
    )
    return tf.reshape(tf.cast(tf.bitcast(words, tf.uint8), tf.bool), shape)


def compact_relu(x, max_value=None):
    """relu(x) (or relu6 with max_value=6) with a 1-bit-per-element backward pass."""
    x = tf.convert_to_tensor(x)
    channels = x.shape[-1]

    @tf.custom_gradient
    def relu(x):
        if max_value is None:
            y = tf.nn.relu(x)
            gate = x > 0
        else:
            y = tf.nn.relu6(x) if max_value == 6.0 else tf.clip_by_value(x, 0.0, max_value)
            gate = tf.logical_and(x > 0, x < max_value)
        packed = pack_bits(gate)
        shape = tf.shape(x)
        # The forward pass continues only once the mask is packed, so x is freed now, not when
        # a scheduler gets round to packing it.
        with tf.control_dependencies([packed]):
            y = tf.identity(y)

        def grad(dy):
            # The control dependency keeps TensorFlow from unpacking early (in the forward pass),
            # which would hold a full-size mask until the backward pass.
            with tf.control_dependencies([dy]):
                gate = unpack_bits(tf.identity(packed), shape, channels)
            # A scalar zero: no full-size temporary besides the result.
            return tf.where(gate, dy, tf.zeros((), dy.dtype))

        return y, grad

    return relu(x)


def compact_activation(activation):
    """A compact replacement for keras relu / relu6 activations; None for anything else."""
    name = getattr(activation, "__name__", None)
    if name == "relu":
        return compact_relu
    if name == "relu6":
        return lambda x: compact_relu(x, 6.0)
    return None


def replaceable_relu(layer):
    """max_value (None or a float) when `layer` is a plain ReLU/ReLU6 layer, else False."""
    if isinstance(layer, layers.ReLU):
        if float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0:
            return None if layer.max_value is None else float(layer.max_value)
        return False
    if isinstance(layer, layers.Activation):
        name = getattr(layer.activation, "__name__", None)
        return {"relu": None, "relu6": 6.0}.get(name, False)
    return False


@keras.saving.register_keras_serializable(package="tf_tradyx")
class CompactReLU(layers.Layer):
    """ReLU (max_value=None) or clipped ReLU whose gradient keeps a packed bit mask.

    `wrap` puts one in place of a ReLU or ReLU6 layer on the backward path (compact_activations
    =True); forward values and gradients equal Keras' ReLU, while the backward pass keeps one bit
    per element instead of a float32 map. `strip` turns it back into `keras.layers.ReLU`.

    Args:
      max_value (float | None): None for ReLU, 6.0 for ReLU6.
      **kwargs: `keras.layers.Layer` arguments.

    Raises:
      ValueError: for a `max_value` that is not positive.

    Examples:
      >>> import tensorflow as tf
      >>> relu6 = tx.sparse_update.CompactReLU(max_value=6.0)
      >>> x = tf.constant([[-1.0, 3.0, 8.0]])
      >>> with tf.GradientTape() as tape:
      ...     tape.watch(x)
      ...     y = relu6(x)
      >>> y.numpy(), tape.gradient(y, x).numpy()
      (array([[0., 3., 6.]], dtype=float32), array([[0., 1., 0.]], dtype=float32))
      >>> type(relu6.to_keras()).__name__
      'ReLU'
    """

    def __init__(self, max_value=None, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None and not float(max_value) > 0:
            raise ValueError(f"max_value must be positive or None, got {max_value!r}.")
        self.max_value = None if max_value is None else float(max_value)

    def call(self, inputs):
        return compact_relu(inputs, self.max_value)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value}

    def to_keras(self):
        """The equivalent Keras ReLU layer (for `strip`)."""
        return layers.ReLU(max_value=self.max_value, name=self.name)
