"""What users pass as data, read the way model.fit reads it, with errors that say what is wrong."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import tiny_cnn, tiny_data


def _lambda_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    x = keras.layers.Conv2D(4, 3, name="c1")(x)
    x = keras.layers.Conv2D(4, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(x))


def test_datasets_of_dicts_work_like_datasets_of_tensors():
    plain, dicts = tiny_data(), tiny_data().map(lambda x, y: ({"image": x}, y))
    a = tx.pruning.SNIPPruner(verbose=False).score(tx.pruning.wrap(tiny_cnn()), plain)
    b = tx.pruning.SNIPPruner(verbose=False).score(tx.pruning.wrap(tiny_cnn()), dicts)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    r1 = tx.sparse_update.rank_layers(tiny_cnn(), plain, epochs=1, verbose=0)
    r2 = tx.sparse_update.rank_layers(tiny_cnn(), dicts, epochs=1, verbose=0)
    assert r1.scores == r2.scores


def test_a_model_with_a_lambda_layer_wraps_strips_and_keeps_its_function():
    model = _lambda_model()
    x = next(iter(tiny_data()))[0]
    masked = tx.pruning.wrap(model)
    np.testing.assert_allclose(np.asarray(masked(x)), np.asarray(model(x)), rtol=1e-6)
    sparse = tx.sparse_update.wrap(model, budget=300, strategy=tx.sparse_update.TraDy(["c1"]))
    np.testing.assert_allclose(np.asarray(sparse(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    plain = tx.sparse_update.strip(sparse)
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    tx.sparse_update.rank_layers(model, tiny_data(), epochs=1, verbose=0)


def test_two_input_models_unbatched_and_non_finite_data_get_clear_errors():
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(keras.layers.Concatenate()([a, b]))
    two = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    data = (np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, int))
    # One array for two inputs: the error says how to give both (a dict by name, or a list).
    with pytest.raises(ValueError, match="has 2 inputs.*dict keyed by these names or a list"):
        tx.pruning.SNIPPruner(verbose=False).prune(tx.pruning.wrap(two), 0.5, data)
    with pytest.raises(ValueError, match="one example, not a batch.*ds.batch"):
        tx.sparse_update.rank_layers(tiny_cnn(), tiny_data().unbatch(), epochs=1, verbose=0)
    nan = tiny_data().map(lambda x, y: (x * np.nan, y))
    with pytest.raises(ValueError, match="holds NaN or Inf"):
        tx.sparse_update.rank_layers(tiny_cnn(), nan, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="holds NaN or Inf"):
        tx.pruning.SNIPPruner(verbose=False).prune(tx.pruning.wrap(tiny_cnn()), 0.5, nan)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
