"""Costs per input channel: the tinyML networks against the paper's numbers, budgets from sizes."""

import json
import os
import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import TESTDATA, tiny_cnn, tiny_data
from tf_tradyx.models import tinyml_nets as tinyml_lib

SP = tx.sparse_update
SU = tx.sparse_update


def test_parse_budget_and_bytes():
    assert SU.parse_budget(27946) == 27946
    assert SU.parse_budget("27946") == 27946
    assert SU.parse_budget("111784B") == 27946
    assert SU.parse_budget("1KiB") == 256
    assert SU.parse_budget("0.1MB") == 25000
    assert SU.units_from_bytes(111784) == 27946
    assert SU.units_from_bytes(100, bytes_per_element=1) == 100
    for bad in ("12 parsecs", "", "-3KB", float("nan"), 1.5):
        with pytest.raises(ValueError):
            SU.parse_budget(bad)
    with pytest.raises(ValueError):
        SU.units_from_bytes(-1)


def test_a_budget_beyond_any_model_is_a_budget_not_a_numpy_error(tmp_path):
    """10**30 units: more than full fine-tuning, which is allowed; it survives save and attach."""
    assert SU.parse_budget(10**30) == 10**30
    assert SU.parse_budget(np.int64(2**62)) == 2**62
    sparse = SU.wrap(tiny_cnn(), budget=10**30, strategy=SU.TraDy(["c1", "pw"]), seed=0)
    assert SU.efficiency(sparse).budget == 10**30
    sparse.save(str(tmp_path / "m.keras"))
    loaded = SU.attach(keras.models.load_model(str(tmp_path / "m.keras")))
    assert SU.sampler_of(loaded).budget == 10**30
    for bad in ("1e400", float("inf")):
        with pytest.raises(ValueError, match="budget"):
            SU.parse_budget(bad)


@pytest.mark.parametrize("name", ["mbv2-w0.35", "mcunet-in1", "proxyless-w0.3"])
def test_tinyml_costs_match_paper(name):
    with open(os.path.join(TESTDATA, "tinyml_nets_128px.json")) as f:
        ref = json.load(f)
    net = ref["networks"][tinyml_lib.NETWORKS[name]]
    costs = SU.cost_table(tx.models.tinyml(name, feature_mix=True))
    assert costs.full_units == ref["paper_full_finetune_units"][tinyml_lib.NETWORKS[name]]
    assert costs.total_weight_units == net["total_conv_weight_elements"]
    assert costs.total_activation_units == net["total_conv_input_activation_elements"]
    assert len(costs) == net["n_conv"]
    for row, spec in zip(costs, net["conv_layers"]):
        o, i, kh, kw = spec["weight_shape_oihw"]
        assert row.in_channels == spec["in_channels"], row.name
        assert row.in_hw == spec["in_hw"] ** 2, row.name
        assert row.out_hw == spec["out_hw"] ** 2, row.name
        assert row.weight_units * row.in_channels == o * i * kh * kw, row.name
        assert row.units_per_channel == o * i * kh * kw // row.in_channels + spec["in_hw"] ** 2
        assert (row.kind == "depthwise") == spec["depthwise"], row.name


@pytest.mark.parametrize(
    "after",
    [
        lambda: keras.layers.Rescaling(0.5, name="temp"),
        lambda: keras.layers.BatchNormalization(name="logit_bn"),
    ],
)
def test_the_head_is_found_behind_a_rescaling_or_batchnorm_and_trains(after):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, name="c1")(inp))
    model = keras.Model(inp, after()(keras.layers.Dense(3, name="head")(x)))
    assert SP.cost_table(model).classifier == "head"
    sparse = SP.wrap(model, strategy="classifier")
    assert sparse.get_layer("head").trainable
    before = np.asarray(sparse.get_layer("head").kernel).copy()
    sparse.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    sparse.fit(tiny_data(), epochs=1, verbose=0)
    assert np.any(np.asarray(sparse.get_layer("head").kernel) != before)


def test_a_reloaded_sequential_model_is_not_mistaken_for_shared_layers(tmp_path):
    """Keras rebuilds a Sequential model on load, so its layers keep the nodes of dropped graphs;
    only the calls in the model's own graph count."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5, name="fc"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    model.save(tmp_path / "plain.keras")
    loaded = keras.models.load_model(tmp_path / "plain.keras")
    assert SP.cost_table(loaded).names == ["c1", "fc"]
    sparse = SP.wrap(loaded, budget=100, strategy=SP.TraDy(["c1", "fc"]), seed=0)
    sparse.save(tmp_path / "sparse.keras")
    again = SP.attach(keras.models.load_model(tmp_path / "sparse.keras"))
    assert SP.sampler_of(again).layers == ["c1", "fc"]
    inp = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    twice = keras.Model(inp, keras.layers.Dense(2)(shared(shared(inp))))
    with pytest.raises(ValueError, match="'shared' is called 2 times"):
        SP.cost_table(twice)


def test_a_nested_functional_subclass_is_walked_like_a_nested_model():
    """KerasHub backbones are Functional subclasses that build their graph in __init__ and keep
    Keras' call: their layers are graph nodes, called once (not "called 0 times")."""

    class Backbone(keras.Model):
        def __init__(self, **kwargs):
            inputs = keras.Input((4,))
            outputs = keras.layers.Dense(6, name="inner_dense")(inputs)
            super().__init__(inputs, outputs, **kwargs)

    inputs = keras.Input((4,))
    h = Backbone(name="backbone")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
    table = SP.cost_table(model)
    assert [r.name for r in table] == ["inner_dense"]
    assert table["inner_dense"].units_per_channel == 6 + 1


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
