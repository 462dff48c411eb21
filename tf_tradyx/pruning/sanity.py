"""Sanity-check transforms (Frankle et al., "Pruning Neural Networks at Initialization: Why are We
Missing the Mark?"): if a method's masks survive these unchanged in accuracy, the method found a
per-layer density, not which weights matter.
"""

import keras
import numpy as np

from tf_tradyx import _seeds
from tf_tradyx.pruning import masking


def _fresh_values(layer, attribute, variable, seed):
    """New values for a kernel from its layer's initializer (seeded).

    Depthwise kernels use `depthwise_initializer`, separable ones their own; a user's layer without
    a known initializer gets a normal draw with the kernel's current standard deviation.
    """
    name = {
        "depthwise_kernel": "depthwise_initializer",
        "pointwise_kernel": "pointwise_initializer",
    }.get(attribute.lstrip("_"))
    if name is None:
        name = (
            "depthwise_initializer"
            if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D))
            else "kernel_initializer"
        )
    initializer = getattr(layer, name, None)
    if initializer is None:
        values = np.asarray(variable)
        std = float(values[values != 0].std()) if np.any(values != 0) else 0.05
        initializer = keras.initializers.RandomNormal(stddev=std)
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = int(seed)
    return np.asarray(type(initializer).from_config(config)(variable.shape, dtype=variable.dtype))


def shuffle_masks(model, seed=0):
    """Randomly permutes each kernel's mask within its layer (same per-layer density).

    Weights that become unpruned get fresh values from the layer's initializer; kept weights
    that stay kept keep their values.

    Args:
      model (keras.Model): a masked model (from `wrap`); changed in place.
      seed (int | None): seed of the permutations and the fresh values; None follows Keras'
        global seed.

    Returns:
      keras.Model: `model` itself.

    Raises:
      ValueError: for a negative or non-integer `seed`.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.prune_at_init(model, "magnitude", sparsity=0.5, verbose=0)
      >>> before = [np.asarray(w.masks[0]) for w in tx.pruning.masked_layers(masked)]
      >>> _ = tx.pruning.shuffle_masks(masked, seed=1)
      >>> after = [np.asarray(w.masks[0]) for w in tx.pruning.masked_layers(masked)]
      >>> [int(a.sum()) == int(b.sum()) for a, b in zip(after, before)]  # same count per layer
      [True, True]
      >>> any(not np.array_equal(a, b) for a, b in zip(after, before))  # at other places
      True
    """
    seed = _seeds.resolve(seed)
    rng = np.random.default_rng(seed)
    for i, wrapper in enumerate(masking.masked_layers(model)):
        for j, (var, mask) in enumerate(zip(wrapper.kernels, wrapper.masks)):
            old = np.asarray(mask)
            new = rng.permutation(old.ravel()).reshape(old.shape)
            fresh = _fresh_values(
                wrapper.layer, wrapper.kernel_attributes[j], var, seed * 1000 + i * 10 + j
            )
            value = np.where(old > 0, np.asarray(var), fresh) * new
            mask.assign(new)
            var.assign(value)
    return model


def reinitialize(model, seed=0):
    """Draws every masked kernel anew from its initializer, keeping the masks.

    Args:
      model (keras.Model): a masked model (from `wrap`); changed in place.
      seed (int | None): seed of the new values; None follows Keras' global seed.

    Returns:
      keras.Model: `model` itself, its pruned weights still zero.

    Raises:
      ValueError: for a negative or non-integer `seed`.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.prune_at_init(model, "magnitude", sparsity=0.5, verbose=0)
      >>> wrapper = tx.pruning.masked_layers(masked)[0]
      >>> old = np.asarray(wrapper.layer.kernel).copy()
      >>> _ = tx.pruning.reinitialize(masked, seed=1)
      >>> new, mask = np.asarray(wrapper.layer.kernel), np.asarray(wrapper.masks[0])
      >>> bool(np.all(new[mask == 0] == 0)), bool(np.any(new[mask == 1] != old[mask == 1]))
      (True, True)
    """
    seed = _seeds.resolve(seed)
    for i, wrapper in enumerate(masking.masked_layers(model)):
        for j, (var, mask) in enumerate(zip(wrapper.kernels, wrapper.masks)):
            fresh = _fresh_values(
                wrapper.layer, wrapper.kernel_attributes[j], var, seed * 1000 + i * 10 + j
            )
            var.assign(fresh * np.asarray(mask))
    return model
