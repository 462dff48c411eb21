"""Preprocessing: balanced subsets, CIFAR augmentation, normalizations, batching."""

import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx


def test_balanced_subset_takes_first_n_per_class_in_order():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0])
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    sub = list(tx.data.balanced_subset(ds, per_class=2, num_classes=3).as_numpy_iterator())
    assert [int(x.ravel()[0]) for x, _ in sub] == [0, 1, 2, 3, 4, 6]
    assert [int(y) for _, y in sub] == [0, 1, 0, 2, 1, 2]
    with pytest.raises(ValueError, match="fewer than 5"):
        tx.data.balanced_subset(ds, per_class=5)
    with pytest.raises(ValueError, match="no examples"):
        tx.data.balanced_subset(ds, per_class=1, num_classes=4)
    with pytest.raises(ValueError, match="per_class"):
        tx.data.balanced_subset(ds, per_class=0)


def test_cifar_augment_is_a_shifted_crop_or_flip():
    image = tf.reshape(tf.range(32 * 32 * 3) % 251, (32, 32, 3))
    image = tf.cast(image, tf.uint8)
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    seen_flip = seen_shift = False
    for s in range(20):
        out = tx.data.cifar_augment(image, seed=tf.constant([s, 7])).numpy()
        assert out.shape == (32, 32, 3)
        matches = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (False, True)
            if np.array_equal(
                out, (lambda c: c[:, ::-1] if f else c)(padded[dy : dy + 32, dx : dx + 32])
            )
        ]
        assert matches, "output is not a crop (optionally flipped) of the padded image"
        seen_flip |= any(f for _, _, f in matches) and not any(not f for _, _, f in matches)
        seen_shift |= all((dy, dx) != (4, 4) for dy, dx, _ in matches)
    assert seen_flip and seen_shift


def test_normalizations():
    img = tf.constant([[[0, 127, 255]]], tf.uint8)
    np.testing.assert_allclose(
        tx.data.scale_to_symmetric(img).numpy(), [[[-1, 127 / 127.5 - 1, 1]]], rtol=1e-6
    )
    cifar = tx.data.normalization("resnet20")(img).numpy()
    expected = (np.array([0, 127, 255]) / 255 - np.array(tx.data.CIFAR10_MEAN)) / np.array(
        tx.data.CIFAR10_STD
    )
    np.testing.assert_allclose(cifar[0, 0], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="No normalization"):
        tx.data.normalization("alexnet")
    resized = tx.data.resize(tf.zeros((32, 32, 3), tf.uint8), 128)
    assert resized.shape == (128, 128, 3)


def test_prepare_batches_and_preprocesses():
    ds = tx.data.cifar10_sample("test")
    batches = list(
        tx.data.prepare(
            ds, 64, preprocess=tx.data.scale_to_symmetric, augment=tx.data.cifar_augment
        )
    )
    assert [b[0].shape[0] for b in batches] == [64, 64, 64, 8]
    assert batches[0][0].dtype == tf.float32
    assert float(tf.reduce_min(batches[0][0])) >= -1 and float(tf.reduce_max(batches[0][0])) <= 1
    with pytest.raises(ValueError, match="batch_size"):
        tx.data.prepare(ds, 0)


def test_balanced_subset_without_class_count_warns_or_names_the_missing_classes():
    x = np.zeros((30, 2, 2, 3), np.float32)
    sorted_labels = np.repeat([0, 1, 2], 10)
    ds = tf.data.Dataset.from_tensor_slices((x, sorted_labels))
    with pytest.warns(UserWarning, match="found 2"):
        tx.data.balanced_subset(ds.take(20), per_class=5)
    gap = tf.data.Dataset.from_tensor_slices((x[:20], np.repeat([0, 2], 10)))
    with pytest.raises(ValueError, match=r"Classes \[1\] have no examples"):
        tx.data.balanced_subset(gap, per_class=5)
    with pytest.raises(ValueError, match=r"Classes \[2\] have no examples"):
        tx.data.balanced_subset(ds.take(20), per_class=5, num_classes=3)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
