"""Seeds: an explicit seed wins; `seed=None` follows Keras' global seed.

`keras.utils.set_random_seed(s)` seeds Python's `random` (among others), and Keras draws its own
default seeds from it (`keras.random.SeedGenerator()` without a seed). tf_tradyx does the same, so
that after `set_random_seed(0)` two runs with `seed=None` draw the same masks and selections, and
`set_random_seed(1)` draws different ones.
"""

import random

import numpy as np


def resolve(seed, name="seed"):
    """A non-negative int seed: `seed` itself, or a draw from the global (Keras-seeded) stream."""
    if seed is None:
        return random.randint(0, 2**31 - 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"{name} must be a non-negative integer or None (follow Keras' global "
            f"seed, keras.utils.set_random_seed), got {seed!r}."
        )
    return int(seed)
