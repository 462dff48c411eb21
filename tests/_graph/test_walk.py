"""Walking a model's layers: nested models expanded in graph order, wrappers seen through, what
activation ends a model, and which models can be cloned layer by layer."""

import sys

import keras
import numpy as np
import pytest
from keras import layers

import tf_tradyx as tx
from tf_tradyx._graph import walk


def _nested():
    inner_in = keras.Input((4,))
    inner = keras.Model(
        inner_in, layers.Dense(3, name="i2")(layers.Dense(3, name="i1")(inner_in)), name="inner"
    )
    inputs = keras.Input((4,))
    h = layers.Dense(4, name="first")(inputs)
    return keras.Model(inputs, layers.Dense(2, name="last")(inner(h)))


def test_flatten_layers_expands_nested_models_in_graph_order():
    names = [l.name for l in walk.flatten_layers(_nested())]
    assert [n for n in names if not n.startswith("input")] == ["first", "i1", "i2", "last"]
    assert [l.name for l in walk.layers_of_type(_nested(), layers.Dense)] == [
        "first",
        "i1",
        "i2",
        "last",
    ]


def test_layer_pairs_match_a_clone_layer_by_layer():
    model = _nested()
    clone = keras.models.clone_model(model)
    pairs = [
        (a.name, b.name)
        for a, b in walk.layer_pairs(model, clone)
        if not isinstance(a, layers.InputLayer)
    ]
    assert [a for a, _ in pairs] == [b for _, b in pairs]
    assert ("i1", "i1") in pairs  # inside the nested model


def test_subclassed_models_and_non_models_are_refused_with_a_way_out():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="Functional or Sequential"):
        walk.check_cloneable(Sub())
    with pytest.raises(TypeError, match="keras.Model"):
        walk.check_cloneable(layers.Dense(2))
    walk.check_cloneable(_nested())  # no error


def test_fresh_copy_has_the_same_config_and_a_lambda_keeps_its_function():
    dense = layers.Dense(3, activation="relu", name="d")
    copy = walk.fresh_copy(dense)
    assert copy is not dense and not copy.built
    assert copy.get_config() == dense.get_config()

    def double(t):
        return 2 * t

    lam = layers.Lambda(double, name="twice")
    assert walk.fresh_copy(lam).function is double


def test_inner_sees_through_tradyx_wrappers_only():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="d")(inputs))
    masked = tx.pruning.wrap(model)
    wrapper = masked.get_layer("masked_d")
    assert walk.inner(wrapper).name == "d"
    plain = layers.Dense(2)
    assert walk.inner(plain) is plain
    assert walk.inner(layers.Bidirectional(layers.LSTM(2))).__class__ is layers.Bidirectional


@pytest.mark.parametrize(
    "tail, expected",
    [
        (lambda h: layers.Dense(3, activation="softmax")(h), "softmax"),
        (lambda h: layers.Softmax()(layers.Dense(3)(h)), "softmax"),
        (lambda h: layers.Flatten()(layers.Dense(3, activation="sigmoid")(h)), "sigmoid"),
        (lambda h: layers.Dropout(0.1)(layers.Dense(3, activation="softmax")(h)), "softmax"),
        (lambda h: layers.Dense(3)(h), "linear"),
        # A weighted layer after the activation ends the walk: its output is logits again.
        (lambda h: layers.Dense(3)(layers.Dense(3, activation="softmax")(h)), "linear"),
    ],
)
def test_output_activation_walks_back_through_weightless_layers(tail, expected):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, tail(inputs))
    assert walk.output_activation(model) == expected


def test_output_activation_of_several_outputs_is_linear():
    inputs = keras.Input((4,))
    model = keras.Model(
        inputs, [layers.Dense(2, activation="softmax")(inputs), layers.Dense(1)(inputs)]
    )
    assert walk.output_activation(model) == "linear"
    assert np.isfinite(model(np.ones((1, 4)))[0]).all()


class _Scale(layers.Layer):
    """A layer whose config does not round-trip (its required argument is left out)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return super().get_config()  # no "factor": from_config fails


class _Backbone(keras.Model):
    """A library-style backbone: built from its own arguments, which round-trip."""

    def __init__(self, factor=2.0, **kwargs):
        inputs = keras.Input((4,))
        h = _Scale(factor, name="scale")(inputs)
        super().__init__(inputs, layers.Dense(3, name="inner")(h), **kwargs)
        self.factor = factor

    def get_config(self):
        return {"factor": self.factor, "name": self.name}


def test_clone_rebuilds_a_nested_model_whole_unless_a_layer_inside_changes():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="head")(_Backbone(name="bb")(inputs)))
    with pytest.raises(TypeError):  # what rebuilding every layer from its config meets
        keras.models.clone_model(model, clone_function=walk.fresh_copy, recursive=True)
    replaced = []

    def clone_layer(layer):
        replaced.append(layer.name)
        return walk.fresh_copy(layer)

    clone = walk.clone(model, clone_layer, lambda layer: layer.name == "head")
    assert "scale" not in replaced and "head" in replaced  # the backbone was cloned whole
    for a, b in walk.layer_pairs(model, clone):
        b.set_weights(a.get_weights())
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(model(x)))
    # A change inside the backbone descends into it; the layer whose config does not round-trip
    # comes from a twin of the whole backbone (made from the backbone's own config).
    replaced.clear()
    clone = walk.clone(model, clone_layer, lambda layer: layer.name == "inner")
    assert "inner" in replaced
    scale = next(l for l in walk.flatten_layers(clone) if l.name == "scale")
    assert scale.factor == 2.0 and scale is not model.get_layer("bb").get_layer("scale")
    for a, b in walk.layer_pairs(model, clone):
        b.set_weights(a.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(model(x)))


def test_fresh_copy_drops_derived_attributes_a_config_reports_but_the_constructor_refuses():
    class Patches(layers.Layer):
        def __init__(self, size, **kwargs):
            super().__init__(**kwargs)
            self.size = size

        def get_config(self):  # reports a derived value, as KerasHub 0.32's ViT patching does
            return {**super().get_config(), "size": self.size, "count": self.size**2}

    copy = walk.fresh_copy(Patches(3, name="p"))
    assert copy.size == 3 and copy.name == "p"
    with pytest.raises(TypeError):  # a missing argument is not guessed
        walk.fresh_copy(_Scale(2.0))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
