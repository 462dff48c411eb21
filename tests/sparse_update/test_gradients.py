"""Full kernel gradients (layer ranking, Det RGN) against a plain tape."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.testing_utils import tiny_cnn, tiny_data
from tf_tradyx.sparse_update import gradients


def test_ranking_on_a_softmax_model_differentiates_probability_cross_entropy():
    """The old sparse-update default (logits cross-entropy) gave other gradients on softmax nets."""
    model = tiny_cnn(softmax=True)
    grads = gradients.full_kernel_gradients(model, tiny_data(), ["pw"], batches=1)["pw"]
    x, y = next(iter(tiny_data()))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x)))
    np.testing.assert_allclose(
        grads, tape.gradient(loss, model.get_layer("pw").kernel), rtol=1e-5, atol=1e-7
    )


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
