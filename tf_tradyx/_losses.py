"""The one rule for a default loss, used wherever a method differentiates a loss the user did not
give (SNIP, GraSP, layer ranking, Det RGN, retained-memory analysis).

The model's compiled loss wins; otherwise cross-entropy that matches the model's output: from
probabilities when the model ends in softmax (or sigmoid), from logits otherwise, sparse or
one-hot by the labels' shape. Differentiating logits cross-entropy on probabilities (what a
from_logits=True default would do on a softmax model) gives wrong gradients and a Keras warning.
"""

import keras
import tensorflow as tf

from tf_tradyx._graph import walk


def default_loss(model, loss=None):
    """A callable (y_true, y_pred) -> scalar mean loss for `model`: `loss` if given, else the
    model's compiled loss, else the cross-entropy its output activation calls for."""
    if loss is None:
        loss = getattr(model, "loss", None)
    if loss is not None:
        fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        if isinstance(fn, keras.losses.Loss):
            return fn  # reduces itself
        # A string gives Keras' per-example function (a vector): averaged here, so that every
        # method differentiates the mean (ProsPr's SGD steps would otherwise scale with the batch).
        return lambda y, out: tf.reduce_mean(fn(y, out))
    activation = walk.output_activation(model)
    if activation == "sigmoid":
        return keras.losses.BinaryCrossentropy(from_logits=False)
    from_logits = activation != "softmax"

    def cross_entropy(y, out):
        if len(y.shape) == len(out.shape) and y.shape[-1] == out.shape[-1] and out.shape[-1] != 1:
            value = keras.losses.categorical_crossentropy(y, out, from_logits=from_logits)
        else:
            value = keras.losses.sparse_categorical_crossentropy(y, out, from_logits=from_logits)
        return tf.reduce_mean(value)

    return cross_entropy
