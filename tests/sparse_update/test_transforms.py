"""wrap / attach / strip: a refused wrap call leaves the model untouched."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, small_cnn, tiny_cnn, tiny_data

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


IMAGES = np.random.default_rng(0).random((4, 8, 8, 3), np.float32)
ATTACH_STRATEGIES = {
    "static_topk": lambda: SP.RandomChannels(["c1", "pw", "fc"], dynamic=False),
    "static_full": lambda: SP.RandomChannels(None, dynamic=False),
    "static_det_rgn": lambda: SP.DetRGN(tiny_data(), batches=1, dynamic=False),
    "tradi": lambda: SP.TraDy(["c1", "pw", "fc"]),
    "velocity": lambda: SP.Velocity(data=IMAGES, images=4),
}


def _spent(model):
    e = SP.efficiency(model)
    return e.budgeted_units if e.budgeted_units is not None else e.units


@pytest.mark.parametrize("name", sorted(ATTACH_STRATEGIES))
def test_a_budget_given_to_attach_is_the_budget(name, tmp_path):
    """The selection after attach(loaded, budget=b) is the one wrap(model, budget=b) draws."""
    sparse = SP.wrap(tiny_cnn(), budget=400, strategy=ATTACH_STRATEGIES[name](), seed=4)
    assert _spent(sparse) > 150
    sparse.save(str(tmp_path / "m.keras"))
    data = {"static_det_rgn": {"data": tiny_data()}, "velocity": {"data": IMAGES}}.get(name, {})
    loaded = SP.attach(keras.models.load_model(str(tmp_path / "m.keras")), budget=150, **data)
    assert SP.sampler_of(loaded).budget == 150 and _spent(loaded) <= 150
    fresh = SP.wrap(tiny_cnn(), budget=150, strategy=ATTACH_STRATEGIES[name](), seed=4)
    assert {k: v.tolist() for k, v in SP.selection(loaded).items()} == {
        k: v.tolist() for k, v in SP.selection(fresh).items()
    }
    assert SP.draws(loaded) == SP.draws(sparse)  # the stream position is unchanged
    # No arguments: the file's selection, as saved (a resume).
    again = SP.attach(keras.models.load_model(str(tmp_path / "m.keras")), **data)
    assert {k: v.tolist() for k, v in SP.selection(again).items()} == {
        k: v.tolist() for k, v in SP.selection(sparse).items()
    }


def test_attach_refuses_a_budget_no_channel_fits_and_changes_nothing(tmp_path):
    sparse = SP.wrap(tiny_cnn(), budget=400, strategy=ATTACH_STRATEGIES["static_topk"](), seed=4)
    sparse.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    before = [np.asarray(v).copy() for v in loaded.variables]
    with pytest.raises(ValueError, match="budget"):
        SP.attach(loaded, budget=3)
    for a, b in zip(loaded.variables, before):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert SP.sampler_of(loaded, required=False) is None
    # Det RGN re-draws from gradients: without its data the refusal names it, nothing changed.
    det = SP.wrap(tiny_cnn(), budget=400, strategy=ATTACH_STRATEGIES["static_det_rgn"](), seed=4)
    det.save(str(tmp_path / "d.keras"))
    loaded = keras.models.load_model(str(tmp_path / "d.keras"))
    with pytest.raises(ValueError, match="give it data"):
        SP.attach(loaded, budget=150)
    assert SP.sampler_of(loaded, required=False) is None


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
