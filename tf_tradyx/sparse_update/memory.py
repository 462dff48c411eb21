"""What a training step keeps for its backward pass, read off the traced gradient graph.

Rules of a `wrap`-ped model (checked by tests on the traced train step, measured by
benchmarks/memory.py):

- A wrapped layer keeps `x[..., selected]` (its sampled input channels) and its kernel; its input
  gradient needs only the kernel. The earliest wrapped layer computes no input gradient, so nothing
  before it has a backward pass or keeps anything.
- ReLU / ReLU6 layers and relu activations of wrapped layers (`CompactReLU`) keep a packed bit mask:
  1 bit per element (uint8, 8 channels per byte) when the channel count is a multiple of 8, else 1 byte.
- Frozen layers on the path (inference-mode BatchNormalization, depthwise and pointwise convs,
  zero padding, residual adds, global pooling) keep nothing beyond their weights: TensorFlow builds
  their weight-gradient ops but prunes them from the function, since no variable asks for them.
- The classifier keeps its (small) input, and the loss its logits' gradient.
- With frozen-segment recomputation (`wrap(recompute=...)`, on by default for models with smooth
  activations, products, LayerNormalization or max pooling), a segment keeps only its inputs: the
  tensors crossing the cuts `recompute` chose, plus what dropout layers (never recomputed) keep.

Without recomputation, frozen Conv/Dense layers with a fused relu activation keep their float output
(TensorFlow's ReluGrad reads it); with it (the default when the model also has max pooling, smooth
activations, products or LayerNormalization) they keep nothing.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tf_tradyx import _batches, _losses
from tf_tradyx.sparse_update.wrapper import wrappers_of


@dataclasses.dataclass
class RetainedTensor:
    """One forward tensor that a backward op reads."""

    name: str
    op_type: str
    shape: tuple
    dtype: str
    nbytes: int
    kind: str  # "activation", "mask", "parameter" (weights and what derives from them), "label"


def _ancestors(tensors):
    seen, stack = set(), [t.op for t in tensors]
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs)
    return seen


def train_step_graph(model, batch_size=1, loss=None):
    """The traced graph of one training step (loss and gradients of the trainable variables)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    loss_fn = _losses.default_loss(model, loss)
    variables = model.trainable_variables
    if not variables:
        raise ValueError("The model has no trainable variable; there is no backward pass.")
    # Every input of the model (token ids and a padding mask, say), as a list in its order.
    x_spec = [tf.TensorSpec((batch_size, *t.shape[1:]), t.dtype) for t in model.inputs]
    x_spec = _batches.pack_inputs(model, x_spec)
    y_spec = tf.TensorSpec((batch_size,), tf.int32)

    @tf.function
    def step(x, y, seed):
        # The upstream gradient is an input, so every backward op depends on it.
        with tf.GradientTape() as tape:
            value = loss_fn(y, model(x, training=True))
        return value, tape.gradient(value, variables, output_gradients=seed)

    return step.get_concrete_function(x_spec, y_spec, tf.TensorSpec((), tf.float32)).graph


def _depends_on(graph, sources):
    """Ops of `graph` that depend on any op in `sources` (creation order is topological)."""
    out = set(sources)
    for op in graph.get_operations():
        if any(t.op in out for t in op.inputs) or any(c in out for c in op.control_inputs):
            out.add(op)
    return out


def retained_tensors(model, batch_size=1, loss=None):
    """Forward tensors the backward pass of one training step reads, with their sizes.

    Backward ops are the ops the gradients need that depend on the upstream gradient; a retained tensor is made
    by any other op (the forward pass, including what it prepares for the backward pass: sampled
    channels, bit masks) and read by a backward op. Unknown dimensions (the sampled channel count
    of a wrapped layer's gather) are filled from the wrapper's current selection.
    """
    graph = train_step_graph(model, batch_size, loss)
    loss_tensor, grads = graph.outputs[0], graph.outputs[1:]
    needed = _ancestors(grads) | _ancestors([loss_tensor])
    n = len(model.inputs)  # the graph's placeholders: the inputs, the labels, the seed
    backward = _depends_on(graph, {graph.inputs[n + 1].op}) & needed
    data_ops = _depends_on(graph, {t.op for t in graph.inputs[:n]})
    label_ops = _depends_on(graph, {graph.inputs[n].op})
    selected = {w.name: int(w.num_channels.numpy()) for w in wrappers_of(model)}
    out, seen = [], set()
    for op in backward:
        for t in op.inputs:
            if t.op in backward or t.ref() in seen:
                continue
            seen.add(t.ref())
            shape = tuple(t.shape.as_list()) if t.shape.rank is not None else ()
            if any(d is None for d in shape):
                n = next(
                    (v for k, v in selected.items() if f"/{k}" in t.name or t.name.startswith(k)),
                    None,
                )
                shape = tuple(n if d is None else d for d in shape)
            size = None if any(d is None for d in shape) else int(np.prod(shape, dtype=np.int64))
            nbytes = None if size is None else size * t.dtype.size
            if t.op in data_ops:
                kind = "mask" if t.dtype in (tf.uint8, tf.bool) else "activation"
            elif t.op in label_ops:
                kind = "label"
            else:
                kind = "parameter"
            out.append(RetainedTensor(t.name, t.op.type, shape, t.dtype.name, nbytes, kind))
    return sorted(out, key=lambda r: r.name)


def retained_bytes(model, batch_size=1, loss=None):
    """Bytes the backward pass keeps, by kind: {"activation": ..., "mask": ..., ...}."""
    total = {"activation": 0, "mask": 0, "parameter": 0, "label": 0}
    for r in retained_tensors(model, batch_size, loss):
        total[r.kind] += r.nbytes or 0
    return total
