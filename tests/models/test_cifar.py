"""The CIFAR networks of the pruning literature: ResNet-20 and VGG-16-BN layouts and initialization."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx


def _kernels(model):
    return [
        l
        for l in model.layers
        if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D))
    ]


def test_resnet20_has_22_prunable_kernels_with_270896_weights():
    model = tx.models.resnet20(10)
    kernels = _kernels(model)
    assert len(kernels) == 22
    assert sum(int(np.prod(l.kernel.shape)) for l in kernels) == 270896
    shortcuts = [l for l in kernels if l.name.endswith("shortcut_conv")]
    assert [tuple(l.kernel.shape) for l in shortcuts] == [(1, 1, 16, 32), (1, 1, 32, 64)]
    assert all(not l.use_bias for l in kernels if isinstance(l, keras.layers.Conv2D))
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 10)


def test_vgg16_bn_layout_and_initialization():
    model = tx.models.vgg16_bn(100)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [l.filters for l in convs] == [p for p in tx.models.cifar.VGG16_PLAN if p != "M"]
    expected = (
        3 * 64 * 9
        + 64 * 64 * 9
        + 64 * 128 * 9
        + 128 * 128 * 9
        + 128 * 256 * 9
        + 2 * 256 * 256 * 9
        + 256 * 512 * 9
        + 5 * 512 * 512 * 9
        + 512 * 100
    )
    assert sum(int(np.prod(l.kernel.shape)) for l in _kernels(model)) == expected
    assert len([l for l in model.layers if isinstance(l, keras.layers.MaxPooling2D)]) == 4
    # He-normal, fan-in: std sqrt(2 / (9 * 512)) on a 512->512 conv; BN gamma 1, beta 0.
    w = convs[-1].kernel.numpy()
    assert abs(w.std() - np.sqrt(2 / (9 * 512))) < 0.02 * np.sqrt(2 / (9 * 512))
    assert np.abs(w).max() > 2.5 * w.std()  # Untruncated, as PyTorch's kaiming_normal_.
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    np.testing.assert_array_equal(bn.gamma.numpy(), 1)
    np.testing.assert_array_equal(bn.beta.numpy(), 0)
    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 100)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
