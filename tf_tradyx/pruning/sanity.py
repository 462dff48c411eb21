"""Sanity-check transforms (Frankle et al., "Pruning Neural Networks at Initialization: Why are We
Missing the Mark?"): if a method's masks survive these unchanged in accuracy, the method found a
per-layer density, not which weights matter.
"""

import keras
import numpy as np

from tf_tradyx.pruning import masking


def _fresh_values(layer, variable, seed):
    initializer = None
    for attr in ("kernel_initializer", "depthwise_initializer", "pointwise_initializer"):
        candidate = getattr(layer, attr, None)
        if candidate is not None and (attr == "kernel_initializer" or attr.split("_")[0] in variable.path):
            initializer = candidate
    if initializer is None:
        initializer = keras.initializers.HeNormal()
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = int(seed)
    return np.asarray(type(initializer).from_config(config)(variable.shape, dtype=variable.dtype))


def shuffle_masks(model, seed=0):
    """Randomly permutes each kernel's mask within its layer (same per-layer density).

    Weights that become unpruned get fresh values from the layer's initializer.
    """
    rng = np.random.default_rng(seed)
    for i, wrapper in enumerate(masking.masked_layers(model)):
        for j, (var, mask) in enumerate(zip(wrapper.kernels, wrapper.masks)):
            old = np.asarray(mask)
            new = rng.permutation(old.ravel()).reshape(old.shape)
            fresh = _fresh_values(wrapper.layer, var, seed * 1000 + i * 10 + j)
            value = np.where(old > 0, np.asarray(var), fresh) * new
            mask.assign(new)
            var.assign(value)
    return model


def reinitialize(model, seed=0):
    """Draws every masked kernel anew from its initializer, keeping the masks."""
    for i, wrapper in enumerate(masking.masked_layers(model)):
        for j, (var, mask) in enumerate(zip(wrapper.kernels, wrapper.masks)):
            var.assign(_fresh_values(wrapper.layer, var, seed * 1000 + i * 10 + j) * np.asarray(mask))
    return model
