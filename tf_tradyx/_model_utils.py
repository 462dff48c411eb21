"""Helpers both wrappers share: which models can be cloned, nested layers, layer pairs."""

import keras
from keras.src.models.functional import Functional


def check_cloneable(model):
    """Raises a TypeError for a subclassed model (its layers cannot be cloned with wrappers)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    if isinstance(model, keras.Sequential) or type(model) is Functional or (
            isinstance(model, Functional) and type(model).__init__ is Functional.__init__):
        return
    raise TypeError(
        f"{type(model).__name__} is a subclassed Keras model; its layers cannot be cloned with "
        "wrappers. Build it with the Functional or Sequential API, or put the tf_tradyx wrapper "
        "layers around its layers yourself.")


def layer_pairs(original, clone):
    """(original layer, cloned layer) pairs, recursing into nested models."""
    for a, b in zip(original.layers, clone.layers):
        if isinstance(a, keras.Model) and isinstance(b, keras.Model):
            yield from layer_pairs(a, b)
        else:
            yield a, b


def flatten_layers(model):
    """All layers of a model, nested models expanded, in graph order."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(flatten_layers(layer))
        else:
            out.append(layer)
    return out


def check_batch(model, x, y=None):
    """Raises ValueError for a batch the model cannot learn from: non-numeric or misshaped inputs,
    or integer labels outside [0, number of outputs)."""
    import numpy as np
    import tensorflow as tf

    dtype = tf.as_dtype(x.dtype)
    if not (dtype.is_floating or dtype.is_integer):
        raise ValueError(f"Inputs must be numeric images, got dtype {dtype.name}; decode and "
                         "preprocess them first (e.g. tf_tradyx.models.preprocess).")
    expected = tuple(model.inputs[0].shape[1:])
    shape = tuple(x.shape[1:])
    if len(shape) != len(expected) or any(a is not None and b is not None and a != b
                                          for a, b in zip(expected, shape)):
        raise ValueError(f"Data of shape {tuple(x.shape)} does not fit the model input "
                         f"(batch, {', '.join(map(str, expected))}); preprocess it to the "
                         "model's input size first (e.g. tf_tradyx.models.preprocess).")
    if y is None:
        return
    labels = np.asarray(y)
    classes = model.outputs[0].shape[-1]
    if labels.size and np.issubdtype(labels.dtype, np.integer) and classes is not None and (
            labels.ndim <= 1 or labels.shape[-1] == 1):
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(f"Labels must lie in [0, {classes}) for this {classes}-way model, got "
                             f"values from {labels.min()} to {labels.max()}: the data is "
                             "mislabeled or the classifier has the wrong number of classes.")
