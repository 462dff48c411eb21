"""Masks on the kernels inside layers: MultiHeadAttention's projections, recurrent kernels, a
user's block holding weighted sublayers; exact zeros through fit, save and load, strip, and a
layer whose config does not re-create it left unmasked with a warning."""

import re
import sys

import keras
import numpy as np
import pytest
from keras import layers

import tf_tradyx as tx

T, D = 4, 6
RNG = np.random.default_rng(3)


class Block(layers.Layer):
    """A user's block: a list of Dense sublayers and a LayerNormalization."""

    def __init__(self, width=5, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.mlp = [layers.Dense(width, activation="relu", name="up"), layers.Dense(D, name="down")]
        self.norm = layers.LayerNormalization(name="norm")

    def build(self, input_shape):  # what loading a saved model calls
        self.mlp[0].build(input_shape)
        self.mlp[1].build((*input_shape[:-1], self.width))
        self.norm.build(input_shape)

    def call(self, x):
        return self.norm(x + self.mlp[1](self.mlp[0](x)))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


class Unrecreatable(Block):
    """A block whose config does not re-create it (a library bug, e.g. KerasHub 0.32's ViT
    patching layer): an argument the constructor does not take."""

    def __init__(self, name=None):
        super().__init__(5, name=name)

    def get_config(self):
        return {**super().get_config(), "derived": 1}


def _model(block=Block):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((T, D))
    h = layers.MultiHeadAttention(2, 3, name="mha")(inputs, inputs)
    h = layers.MultiHeadAttention(1, 2, name="mha_kw")(query=h, value=h, key=inputs)
    h = block(name="block")(h)
    h = layers.LSTM(5, return_sequences=True, name="lstm")(h)
    h = layers.Bidirectional(layers.GRU(3, return_sequences=True), name="bi")(h)
    h = layers.Conv1D(4, 2, name="conv")(h)
    h = layers.SimpleRNN(3, name="rnn")(h)
    return keras.Model(inputs, layers.Dense(2, name="head")(h))


def _x(n=8):
    return RNG.normal(size=(n, T, D)).astype("float32")


def _random_masks(masked, density=0.6):
    rng = np.random.default_rng(1)
    for w in tx.pruning.masked_layers(masked):
        for mask in w.masks:
            mask.assign((rng.random(mask.shape) < density).astype("float32"))
        w.apply_masks()


def test_the_kernels_inside_layers_are_masked_by_name():
    masked = tx.pruning.wrap(_model())
    # Keras numbers layers it names itself ("forward_gru_1") by how many were made before in the
    # process: the numbers are dropped.
    names = [
        re.sub(r"_\d+(?=/)", "", n)
        for w in tx.pruning.masked_layers(masked)
        for n in w.kernel_names
    ]
    projections = ("query", "key", "value", "attention_output")
    assert names == [
        *(f"mha/{p}/kernel" for p in projections),
        *(f"mha_kw/{p}/kernel" for p in projections),
        "block/up/kernel",
        "block/down/kernel",
        "lstm/lstm_cell/kernel",
        "lstm/lstm_cell/recurrent_kernel",
        "bi/forward_gru/gru_cell/kernel",
        "bi/forward_gru/gru_cell/recurrent_kernel",
        "bi/backward_gru/gru_cell/kernel",
        "bi/backward_gru/gru_cell/recurrent_kernel",
        "conv/kernel",
        "rnn/simple_rnn_cell/kernel",
        "rnn/simple_rnn_cell/recurrent_kernel",
        "head/kernel",
    ]
    # Every kernel is masked; biases and LayerNormalization's parameters are not.
    report = tx.pruning.report(masked, connectivity=False)
    kernels = sum(int(np.prod(v.shape)) for v in masked.trainable_weights if "kernel" in v.name)
    assert report.total == kernels and report.coverage > 0.8


def test_masked_sublayer_kernels_compute_like_the_model_with_zeroed_kernels():
    """Independent computation: the original model with kernel * mask written into its own
    variables must give the masked model's output (float32 on both sides, the same operations)."""
    model = _model()
    masked = tx.pruning.wrap(model)
    x = _x()
    np.testing.assert_array_equal(masked(x), model(x))  # all-ones masks: the same model
    _random_masks(masked)
    source = {}  # id(masked model's variable): the original model's same variable
    for original, cloned in zip(model.layers, masked.layers):
        inner = getattr(cloned, "layer", cloned)
        source.update({id(c): o for o, c in zip(original.weights, inner.weights)})
    for w in tx.pruning.masked_layers(masked):
        for kernel, mask in zip(w.kernels, w.masks):
            target = source[id(kernel)]
            assert target.shape == kernel.shape
            target.assign(np.asarray(target) * np.asarray(mask))
    np.testing.assert_allclose(masked(x), model(x), rtol=1e-6, atol=1e-6)


def test_pruned_sublayer_kernels_stay_exactly_zero_through_fit_save_load_and_strip(tmp_path):
    masked = tx.pruning.wrap(_model())
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.6)
    for w in tx.pruning.masked_layers(masked):  # raw nonzeros where pruned: only masks protect
        for kernel in w.kernels:
            kernel.assign(np.asarray(kernel) + 0.1)
    masked.compile(keras.optimizers.Adam(0.05), "mse")
    x, y = _x(), RNG.normal(size=(8, 2)).astype("float32")
    before = masked(x).numpy()
    masked.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert not np.allclose(masked(x), before)
    for w in tx.pruning.masked_layers(masked):
        for name, kernel, mask in zip(w.kernel_names, w.kernels, w.masks):
            kernel, mask = np.asarray(kernel), np.asarray(mask)
            assert 0 < mask.mean() < 1, name
            assert np.all(kernel[mask == 0] == 0), name
    path = str(tmp_path / "masked.keras")
    masked.save(path)
    loaded = keras.models.load_model(path, custom_objects={"Block": Block})
    np.testing.assert_array_equal(loaded(x), masked(x))
    plain = tx.pruning.strip(masked)
    assert not tx.pruning.masked_layers(plain)
    np.testing.assert_allclose(plain(x), masked(x), rtol=1e-6, atol=1e-6)


def test_a_layer_its_config_cannot_recreate_is_left_unmasked_with_a_warning():
    model = _model(Unrecreatable)
    with pytest.warns(UserWarning, match="'block' .* cannot be re-created from its config"):
        masked = tx.pruning.wrap(model)
    names = [w.layer.name for w in tx.pruning.masked_layers(masked)]
    assert "block" not in names and "mha" in names and "head" in names
    x = _x()
    np.testing.assert_array_equal(masked(x), model(x))
    report = tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    assert report.density == pytest.approx(0.5, abs=0.01)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
