"""wrap / attach / strip: a refused wrap call leaves the model untouched."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, small_cnn, tiny_cnn

SP = tx.sparse_update
SU = tx.sparse_update


def test_bad_wrap_calls_leave_model_untouched():
    model = small_cnn()
    before = [w.copy() for w in model.get_weights()]
    cases = [
        (dict(budget=400, layers=["nope"]), KeyError),
        (dict(budget=400, layers=["head"]), KeyError),  # the classifier is not selectable
        (dict(budget=400), ValueError),  # tradi needs layers
        (dict(budget=400, layers=CANDIDATES, strategy="magic"), ValueError),
        (dict(budget=400, strategy="dynamic_full_random", layers=["c1"]), ValueError),
        (dict(budget=400, strategy="dynamic_det_rgn"), ValueError),  # no data
        (dict(strategy="su"), ValueError),
        (dict(strategy="su", scheme={"pw": 1.5}), ValueError),
        (dict(budget=400, layers=["c1", "c1"]), ValueError),
        (dict(budget=400, layers=SU.LayerRanking({"c1": 1.0})), TypeError),
        (dict(budget=400, layers=CANDIDATES, seed="x"), ValueError),
    ]
    for kwargs, error in cases:
        with pytest.raises(error):
            SU.wrap(model, **kwargs)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(l.trainable for l in model.layers)


def test_wrap_refuses_layers_given_twice_and_budget_is_checked_before_cloning():
    with pytest.raises(ValueError, match="one place only"):
        SP.wrap(tiny_cnn(), budget=300, layers=["pw"], strategy=SP.TraDy(["c1"]))
    with pytest.raises(ValueError, match="cheapest"):
        SP.wrap(tiny_cnn(), budget=3, strategy=SP.TraDy(["c1"]))


@pytest.mark.parametrize("extra", [{"kernel_regularizer": "l2"}, {"kernel_constraint": "max_norm"}])
def test_kernel_regularizers_and_constraints_on_wrapped_layers_are_refused(extra):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="c1", **extra)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(
        inp, keras.layers.Dense(3, name="head")(keras.layers.Dense(4, name="fc")(x))
    )
    with pytest.raises(ValueError, match=r"move unselected channels.*c1\."):
        SP.wrap(model, budget=300, strategy=SP.TraDy(["c1"]))
    SP.wrap(model, budget=300, strategy=SP.TraDy(["fc"]))  # the other layers are fine


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
