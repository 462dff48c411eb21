"""Full kernel gradients of a (possibly wrapped) model, shared by layer ranking, Det RGN and tests.

Ranking layers by RGN and the Det RGN oracle both need the ordinary dense gradient of kernels that
may sit inside `ChannelSparseUpdate` wrappers, whose own backward pass only yields the selected
channels; `dense_gradients` switches the wrappers to the plain computation for eager calls.
"""

import contextlib

import numpy as np
import tensorflow as tf

from tf_tradyx import _batches, _losses
from tf_tradyx._graph import walk
from tf_tradyx.sparse_update.wrapper import wrappers_of


def channel_norms_tf(gradient, kind, in_channels=None):
    """|| g[:, c] ||_2 of each input channel c of a kernel gradient, as a tensor (see
    `costs.channel_norms` for numpy arrays and the arguments)."""
    if kind == "dense":
        gradient = tf.reshape(gradient, (in_channels or gradient.shape[0], -1))
        return tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=[1]))
    if gradient.shape.rank == 3:  # a 1-D convolution: height 1
        gradient = gradient[None]
    return tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=[0, 1, 3]))


@contextlib.contextmanager
def dense_gradients(model):
    """Within this block (eager calls only), wrapped layers compute their ordinary full gradient."""
    wrappers = wrappers_of(model)
    for w in wrappers:
        w.dense_gradient = True
    try:
        yield
    finally:
        for w in wrappers:
            w.dense_gradient = False


def full_kernel_gradients(model, data, layer_names, batches=4, loss=None):
    """{layer name: kernel gradient summed over `batches` batches}, computed in inference mode."""
    loss_fn = _losses.default_loss(model, loss)
    kernels = {}
    for layer in walk.flatten_layers(model):
        inner = walk.inner(layer)
        if inner.name in layer_names:
            kernels[inner.name] = inner.kernel
    missing = [n for n in layer_names if n not in kernels]
    if missing:
        raise ValueError(f"Layers {missing} are not in the model.")
    names = list(layer_names)
    total = {n: None for n in names}
    seen = 0
    with dense_gradients(model):
        for batch in _batches.as_dataset(data).take(batches):
            x, y = _batches.xy(batch)
            x = _batches.model_input(model, x)
            _batches.check_batch(model, x, y)
            with tf.GradientTape() as tape:
                tape.watch([kernels[n].value for n in names])
                value = loss_fn(y, model(x, training=False))
            grads = tape.gradient(value, [kernels[n].value for n in names])
            for n, g in zip(names, grads):
                g = np.zeros(kernels[n].shape) if g is None else g.numpy()
                total[n] = g if total[n] is None else total[n] + g
            seen += 1
    if not seen:
        raise ValueError("data yielded no batch; Det RGN needs at least one.")
    return total
