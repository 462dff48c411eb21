"""tf_tradyx._seeds.resolve: an explicit seed wins as a plain int; `None` draws from the stream
that `keras.utils.set_random_seed` seeds (Python's `random`), so that runs repeat under one global
seed and differ under another; anything else is refused with the argument's name."""

import random
import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tf_tradyx import _seeds


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1, 2**40, np.int64(5), np.uint8(3)])
def test_an_explicit_seed_is_returned_as_a_plain_int(seed):
    got = _seeds.resolve(seed)
    assert got == int(seed) and type(got) is int
    assert [_seeds.resolve(seed) for _ in range(3)] == [got] * 3  # no draw, no state


def test_an_explicit_seed_leaves_the_global_stream_alone():
    keras.utils.set_random_seed(11)
    expected = random.random()
    keras.utils.set_random_seed(11)
    _seeds.resolve(4)
    assert random.random() == expected


def test_none_follows_keras_global_seed():
    keras.utils.set_random_seed(0)
    first = [_seeds.resolve(None) for _ in range(4)]
    keras.utils.set_random_seed(0)
    again = [_seeds.resolve(None) for _ in range(4)]
    keras.utils.set_random_seed(1)
    other = [_seeds.resolve(None) for _ in range(4)]
    assert first == again  # same global seed, same stream
    assert first != other  # another global seed, another stream
    assert len(set(first)) == 4  # successive draws differ
    assert all(type(s) is int and 0 <= s <= 2**31 - 1 for s in first + other)
    # Exactly the draws of Python's `random`, which set_random_seed seeds (as Keras' own
    # unseeded SeedGenerator does).
    reference = random.Random(0)
    assert first == [reference.randint(0, 2**31 - 1) for _ in range(4)]


def test_a_library_seed_none_repeats_under_one_global_seed():
    """What callers see: an unseeded pruner takes its seed from Keras' global seed."""
    keras.utils.set_random_seed(3)
    a = tx.pruning.RandomPruner(seed=None, verbose=False).seed
    keras.utils.set_random_seed(3)
    b = tx.pruning.RandomPruner(seed=None, verbose=False).seed
    keras.utils.set_random_seed(4)
    c = tx.pruning.RandomPruner(seed=None, verbose=False).seed
    assert a == b != c
    assert tx.pruning.RandomPruner(seed=9, verbose=False).seed == 9


@pytest.mark.parametrize("bad", [-1, True, False, 1.0, 2.5, "3", [1], np.float32(2)])
def test_anything_but_a_non_negative_int_or_none_is_refused(bad):
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer or None"):
        _seeds.resolve(bad)


def test_the_message_names_the_argument_and_the_value():
    with pytest.raises(ValueError, match=r"^sampler_seed must be .*set_random_seed.*got -3\.$"):
        _seeds.resolve(-3, name="sampler_seed")


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
