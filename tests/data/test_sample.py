"""The bundled CIFAR-10 sample: balanced, deterministic, real photos."""

import sys

import numpy as np
import pytest

import tf_tradyx as tx


def test_bundled_sample_is_balanced_and_deterministic():
    train = tx.data.cifar10_sample("train")
    test = tx.data.cifar10_sample("test")
    assert train.num_examples == 1000 and test.num_examples == 200
    assert train.class_names[0] == "airplane" and train.class_names[-1] == "truck"
    labels = np.array([y for _, y in train.as_numpy_iterator()])
    np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
    first = next(iter(train))[0].numpy()
    again = next(iter(tx.data.cifar10_sample("train")))[0].numpy()
    np.testing.assert_array_equal(first, again)
    assert first.std() > 10  # A real photo, not a constant image.
    with pytest.raises(ValueError, match="splits"):
        tx.data.cifar10_sample("validation")


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
