"""Every layer TraDy can select, seen as one of the three linear maps its backward pass knows.

`channel_grads` differentiates three maps sparsely: a dense map over the last axis ("dense"), a
2-D convolution ("conv", grouped and dilated included) and a 2-D depthwise convolution
("depthwise"). The other selectable layers are one of these in another shape, and a `LinearView`
says how to get there and back with reshapes alone, so that the sparse backward pass is written
once:

- Dense on any rank (a token sequence (batch, tokens, features) included): "dense" as is; a
  channel is an input feature, kept for every token.
- Conv1D / DepthwiseConv1D: a 2-D convolution of height 1 (input (batch, 1, length, channels),
  kernel (1, k, in, out)); causal padding is an explicit left padding, then "valid".
- EinsumDense whose equation contracts trailing input axes with leading kernel axes and keeps
  the rest in order (the query/key/value and output projections of `MultiHeadAttention`:
  "abc,cde->abde", "abcd,cde->abe"): "dense" over the flattened contracted axes. A channel is one
  entry of the contracted axes (for the output projection, one (head, feature) pair).

Reshapes of a tensor are views, so the backward pass still keeps only the gathered channels.
"""

import dataclasses
import math

import tensorflow as tf

from tf_tradyx._graph import kinds


@dataclasses.dataclass(frozen=True)
class LinearView:
    """How one layer is computed as a canonical "dense", "conv" or "depthwise" map.

    Attributes:
      layer: the Keras layer.
      kind: the canonical map: "dense", "conv" or "depthwise".
      kernel_shape: the canonical kernel's shape ((in, out) or (kh, kw, in, out)).
      strides, padding, dilation_rate, groups: the canonical convolution's parameters.
      in_channels: how many input channels the selection chooses from.
      contracted: for EinsumDense, the number of trailing input axes flattened into channels.
      causal: Conv1D's causal padding (left padding of dilation * (k - 1)).
      fused_bias: whether the bias is added inside the canonical map (per output channel);
        otherwise (EinsumDense) it is added after the output is reshaped back.
    """

    layer: object
    kind: str
    kernel_shape: tuple
    in_channels: int
    strides: tuple = (1, 1)
    padding: str = "valid"
    dilation_rate: tuple = (1, 1)
    groups: int = 1
    contracted: int = 0
    causal: bool = False
    fused_bias: bool = True

    @property
    def use_bias(self):
        """Whether the canonical map adds the layer's bias itself."""
        return self.fused_bias and self.bias is not None

    @property
    def bias(self):
        """The layer's bias variable (None when it has none)."""
        return getattr(self.layer, "bias", None)

    def inputs(self, x):
        """The layer's input in the canonical map's shape."""
        if self.contracted:
            return tf.reshape(x, tf.concat([tf.shape(x)[: -self.contracted], [-1]], 0))
        if len(self.kernel_shape) == 4 and x.shape.rank == 3:  # a 1-D convolution
            if self.causal:
                left = self.dilation_rate[1] * (self.kernel_shape[1] - 1)
                x = tf.pad(x, [[0, 0], [left, 0], [0, 0]])
            return tf.expand_dims(x, 1)
        return x

    def kernel(self, k):
        """The layer's kernel in the canonical map's shape (no op when it already is: every op
        stays in the train function's graph for the whole fit)."""
        if tuple(k.shape) == tuple(self.kernel_shape):
            return k
        return tf.reshape(k, self.kernel_shape)

    def outputs(self, y, x):
        """The canonical map's output in the layer's shape (`x`: the layer's own input)."""
        if self.contracted:
            out = self.layer.kernel.shape[self.contracted :]
            lead = tf.shape(x)[: x.shape.rank - self.contracted]
            return tf.reshape(y, tf.concat([lead, list(out)], 0))
        if len(self.kernel_shape) == 4 and x.shape.rank == 3:
            return tf.squeeze(y, 1)
        return y

    def kernel_channel_mask(self, keep):
        """A per-channel 0/1 vector `keep` (in_channels,) shaped to broadcast over the layer's
        own kernel: 1 on the kernel slices of the kept input channels."""
        shape = list(self.layer.kernel.shape)
        if self.contracted:
            return tf.reshape(keep, shape[: self.contracted] + [1] * (len(shape) - self.contracted))
        mask = [1] * len(shape)
        mask[-2] = shape[-2]
        return tf.reshape(keep, mask)


def view_of(layer):
    """The `LinearView` of a built selectable layer, or None when TraDy cannot select it."""
    kind = kinds.selectable_kind(layer)
    if kind is None:
        return None
    shape = tuple(int(d) for d in layer.kernel.shape)
    if kind == "einsum":
        n = kinds.einsum_contracted_axes(layer.equation)
        c_in = math.prod(shape[:n])
        return LinearView(
            layer,
            "dense",
            (c_in, math.prod(shape[n:])),
            c_in,
            contracted=n,
            fused_bias=False,
        )
    if kind == "dense":
        return LinearView(layer, "dense", shape, shape[0])
    if kind in ("conv1d", "depthwise1d"):
        causal = layer.padding == "causal"
        return LinearView(
            layer,
            "conv" if kind == "conv1d" else "depthwise",
            (1, *shape),
            shape[1] * int(getattr(layer, "groups", 1)) if kind == "conv1d" else shape[1],
            strides=(1, int(layer.strides[0])),
            padding="valid" if causal else layer.padding,
            dilation_rate=(1, int(layer.dilation_rate[0])),
            groups=int(getattr(layer, "groups", 1)),
            causal=causal,
        )
    return LinearView(
        layer,
        kind,
        shape,
        shape[2] * int(getattr(layer, "groups", 1)) if kind == "conv" else shape[2],
        strides=tuple(layer.strides),
        padding=layer.padding,
        dilation_rate=tuple(layer.dilation_rate),
        groups=int(getattr(layer, "groups", 1)),
    )
