"""The layer-kind registry: one answer per layer, the same for every part of tf_tradyx."""

import collections
import sys

import keras
import numpy as np
import pytest
from keras import layers

import tf_tradyx as tx
from tf_tradyx._graph import kinds, steps
from tf_tradyx.pruning import masking, path_ops
from tf_tradyx.sparse_update import costs, recompute


def test_no_layer_class_is_listed_under_two_kinds():
    listed = collections.Counter(cls for kind in kinds.KINDS for cls in kind.classes)
    assert [cls.__name__ for cls, n in listed.items() if n > 1] == []
    names = collections.Counter(kind.name for kind in kinds.KINDS)
    assert [n for n, c in names.items() if c > 1] == []


@pytest.mark.parametrize(
    "layer, expected",
    [
        (layers.Conv2D(2, 3), ("conv2d", "weighted", "conv")),
        (layers.DepthwiseConv2D(3), ("depthwise_conv2d", "weighted", "depthwise")),
        (layers.Dense(2), ("dense", "weighted", "dense")),
        (layers.Conv1D(2, 3), ("conv1d", "weighted", "conv1d")),
        (layers.DepthwiseConv1D(3), ("depthwise_conv1d", "weighted", "depthwise1d")),
        (layers.Conv3D(2, 3), ("conv3d", "weighted", None)),
        (layers.EinsumDense("abc,cd->abd", (4, 2)), ("einsum_dense", "weighted", "einsum")),
        (layers.Embedding(10, 4), ("embedding", None, None)),
        (layers.SeparableConv2D(2, 3), ("separable_conv", "weighted", None)),
        (layers.BatchNormalization(), ("batch_norm", "batch_norm", None)),
        (layers.LayerNormalization(), ("layer_norm", "layer_norm", None)),
        (layers.Rescaling(0.5), ("rescaling", "affine", None)),
        (layers.ReLU(), ("relu", "activation", None)),
        (layers.PReLU(), ("prelu", None, None)),
        (layers.Activation("swish"), ("activation", "activation", None)),
        (layers.MaxPooling2D(), ("max_pool", "max_pool", None)),
        (layers.Multiply(), ("multiply", "product", None)),
        (layers.Dropout(0.1), ("dropout", "identity", None)),
        (layers.SpatialDropout2D(0.1), ("dropout", "identity", None)),
        (layers.GaussianNoise(0.1), ("noise", "identity", None)),
        (layers.Add(), ("linear", "linear", None)),
        (layers.Flatten(), ("reshape", "linear", None)),
        (layers.LSTM(2), ("recurrent", None, None)),
        (layers.Bidirectional(layers.GRU(2)), ("recurrent", None, None)),
        (layers.SimpleRNNCell(2), ("recurrent_cell", None, None)),
        (layers.MultiHeadAttention(2, 4), ("multi_head_attention", "attention", None)),
        (layers.Lambda(lambda x: x), ("unknown", None, None)),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, layers.Layer) else "",
)
def test_kind_of_keras_layers(layer, expected):
    kind = kinds.kind_of(layer)
    assert (kind.name, kind.path, kind.selectable) == expected


def test_keras_ops_are_told_apart_from_layers_of_the_same_name():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(inputs)
    y = keras.ops.multiply(a, keras.ops.add(a, 1.0))
    y = keras.layers.Add(name="add_layer")([y, a])
    model = keras.Model(inputs, keras.ops.reshape(y, (-1, 2, 2)))
    found = {
        type(s.op).__name__ + ("/layer" if isinstance(s.op, layers.Layer) else "/op"): (
            kinds.kind_of(s.op).name
        )
        for s in steps.op_steps(steps.graph_steps(model))
    }
    assert found == {
        "Dense/layer": "dense",
        "Add/op": "ops_arithmetic",
        "Multiply/op": "ops_product",
        "Add/layer": "linear",
        "Reshape/op": "ops_linear",
    }


def test_a_mask_wrapper_has_its_layers_kind_and_a_tradi_wrapper_is_refused_by_name():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layers.Conv2D(2, 3, name="c")(inputs))
    masked = tx.pruning.wrap(model)
    assert kinds.kind_of(masked.get_layer("masked_c")).name == "conv2d"
    assert not masking.is_prunable(masked.get_layer("masked_c"))  # the wrapper itself is not
    wrapped = tx.sparse_update.wrap(
        model, strategy=tx.sparse_update.RandomChannels(), budget=10**6, classifier=None
    )
    wrapper = next(l for l in wrapped.layers if getattr(l, "_tradyx_sparse_update", False))
    kind, why = path_ops.kind_of(wrapper)
    assert kind is None and "TraDy wrapper" in why


def test_a_prunable_layer_is_known_by_its_protocol_and_a_subclassed_dense_stays_selectable():
    class Scaled(layers.Layer, tx.pruning.PrunableLayer):
        def build(self, shape):
            self.kernel = self.add_weight(shape=(shape[-1], 2))

        def get_prunable_weights(self):
            return [self.kernel]

    class MyDense(layers.Dense, tx.pruning.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel]

    assert kinds.kind_of(Scaled()).name == "prunable_layer"
    assert masking.is_prunable(Scaled())
    assert kinds.kind_of(MyDense(2)).name == "prunable_layer"
    assert kinds.selectable_kind(MyDense(2)) == "dense"
    assert kinds.prunable_kernel_names(MyDense(2)) == ("kernel",)


def test_layers_holding_weighted_sublayers_are_maskable_through_them():
    class Block(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mlp = [layers.Dense(4, name="up"), layers.Dense(2, name="down")]
            self.attention = layers.MultiHeadAttention(1, 2, name="att")
            self.norm = layers.LayerNormalization(name="norm")

        def call(self, x):
            return self.mlp[1](self.mlp[0](self.norm(x + self.attention(x, x))))

    block = Block(name="block")
    block(np.zeros((1, 3, 2), "float32"))
    paths = [(names, type(s).__name__) for names, s in kinds.maskable_sublayer_paths(block)]
    assert paths == [
        (("up",), "Dense"),
        (("down",), "Dense"),
        (("att", "query"), "EinsumDense"),
        (("att", "key"), "EinsumDense"),
        (("att", "value"), "EinsumDense"),
        (("att", "attention_output"), "EinsumDense"),
    ]
    assert kinds.kind_of(block).name == "custom_with_weighted_sublayers"
    assert kinds.is_maskable(block) and masking.is_prunable(block)
    kind, why = path_ops.kind_of(block)
    assert kind is None and "custom layer" in why
    lstm = layers.LSTM(3)
    lstm(np.zeros((1, 4, 2), "float32"))
    assert [s.name for s in kinds.maskable_sublayers(lstm)] == [lstm.cell.name]
    assert kinds.maskable_sublayers(layers.Dense(2)) == []  # holds its kernel itself
    assert not kinds.is_maskable(layers.LayerNormalization())
    inputs = keras.Input((3,))
    assert kinds.maskable_sublayers(keras.Model(inputs, layers.Dense(2)(inputs))) == []


def test_selectable_convolutions_must_be_channels_last():
    assert kinds.selectable_kind(layers.Conv2D(2, 3, data_format="channels_first")) is None
    assert kinds.selectable_kind(layers.Conv2D(2, 3)) == "conv"
    assert costs.is_selectable(layers.DepthwiseConv2D(3))
    assert not costs.is_selectable(layers.SeparableConv2D(2, 3))


def test_what_runs_once_in_a_recomputed_forward():
    bn = layers.BatchNormalization()
    assert kinds.runs_once(bn)
    bn.trainable = False
    assert not kinds.runs_once(bn)  # frozen statistics: recomputing it is harmless
    assert kinds.runs_once(layers.Dropout(0.1))
    assert kinds.runs_once(layers.GaussianNoise(0.1))
    assert not kinds.runs_once(layers.Dense(2))


def test_recomputation_and_the_path_networks_agree_on_what_keeps_float_maps():
    # Products, LayerNormalization and max pooling keep floats; a plain ReLU keeps bits.
    assert recompute._keeps_float_maps(layers.Multiply(), wrapped=False)
    assert recompute._keeps_float_maps(layers.LayerNormalization(), wrapped=False)
    assert recompute._keeps_float_maps(layers.LeakyReLU(), wrapped=False)
    assert not recompute._keeps_float_maps(layers.ReLU(), wrapped=False)
    assert not recompute._keeps_float_maps(layers.Activation("relu"), wrapped=False)
    assert recompute._keeps_float_maps(layers.Activation("swish"), wrapped=False)
    assert recompute._keeps_float_maps(layers.Conv2D(2, 3, activation="relu"), wrapped=False)
    assert not recompute._keeps_float_maps(layers.Conv2D(2, 3, activation="relu"), wrapped=True)


def test_the_head_is_found_through_the_kinds_that_may_follow_it():
    inputs = keras.Input((8,))
    h = layers.Dense(4, name="body")(inputs)
    h = layers.Dense(3, name="head")(h)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Rescaling(0.5, name="temperature")(h)
    model = keras.Model(inputs, layers.Softmax(name="probs")(h))
    assert costs.find_classifier(model) == "head"


def test_the_support_message_is_read_from_the_registry():
    error = path_ops.unsupported(layers.LSTM(2), "why")
    text = str(error)
    for name in ("Conv2D", "SeparableConv2D", "Dense", "BatchNormalization", "MaxPooling2D"):
        assert name in text
    assert "silu" in text and "gelu" in text  # smooth activations, not only the ReLU family
    assert "PReLU" not in text.split("Supported:")[1]


def test_every_registered_layer_kind_with_a_path_treatment_scores_in_a_path_network():
    """A smoke check that the registry and the path networks agree: one model holding a layer of
    most path kinds scores with PX without an unsupported-layer error, and finite scores."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = layers.Rescaling(1 / 255.0)(inputs)
    h = layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = layers.BatchNormalization()(h)
    h = layers.MaxPooling2D()(h)
    g = layers.DepthwiseConv2D(3, padding="same")(h)
    g = layers.Activation("swish")(g)
    h = layers.Multiply()([h, g])
    h = layers.LayerNormalization()(h)
    h = layers.SeparableConv2D(4, 3, padding="same")(h)
    h = layers.Dropout(0.1)(h)
    h = layers.GlobalAveragePooling2D()(h)
    model = tx.pruning.wrap(keras.Model(inputs, layers.Dense(3)(h)))
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    scores = tx.pruning.PXPruner(verbose=False).score(model, x)
    assert len(scores) == 5
    assert all(np.isfinite(s).all() and (s >= 0).all() for s in scores.values())


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
