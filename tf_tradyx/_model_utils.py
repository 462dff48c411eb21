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
