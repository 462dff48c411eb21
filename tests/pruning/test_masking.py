"""Masks: wrap/strip, Sequential and nested models, pruned weights exactly zero through fit, save and
load, and a user's own PrunableLayer."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import (
    LOSS,
    pruning_cnn,
    pruning_data,
    tiny_cnn,
    tiny_data,
)
from tf_tradyx import _keras_compat


def test_wrap_masks_every_prunable_kernel_and_keeps_outputs():
    model = pruning_cnn()
    masked = tx.pruning.wrap(model)
    names = [n for w in tx.pruning.masked_layers(masked) for n in w.kernel_names]
    assert names == [
        "c1/kernel",
        "dw/kernel",
        "pw/kernel",
        "sep/depthwise_kernel",
        "sep/pointwise_kernel",
        "fc/kernel",
    ]
    x, _ = pruning_data()
    np.testing.assert_allclose(masked(x), model(x), rtol=1e-6, atol=1e-6)
    assert not any(isinstance(l, tx.pruning.MaskedLayer) for l in model.layers)  # Untouched.


def test_wrap_skip_and_errors():
    model = pruning_cnn()
    masked = tx.pruning.wrap(model, skip=["fc", keras.layers.DepthwiseConv2D])
    names = [w.layer.name for w in tx.pruning.masked_layers(masked)]
    assert names == ["c1", "pw", "sep"]
    with pytest.raises(ValueError, match="not in the model"):
        tx.pruning.wrap(model, skip=["nope"])
    with pytest.raises(ValueError, match="already has masks"):
        tx.pruning.wrap(masked)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="subclassed"):
        tx.pruning.wrap(sub)
    with pytest.raises(ValueError, match="no masks"):
        tx.pruning.PXPruner().prune(model, 0.5, pruning_data())


def test_sequential_and_nested_models():
    seq = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)]
    )
    masked = tx.pruning.wrap(seq)
    assert isinstance(masked, keras.Sequential)
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    report = tx.pruning.PXPruner(rounds=5, verbose=False).prune(masked, 0.5, (x, np.zeros(10)))
    assert report.kept == round(0.5 * (6 * 5 + 5 * 3))
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="relu", name="inner_d")], name="inner"
    )
    inputs = keras.Input((6,))
    nested = keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))
    masked = tx.pruning.wrap(nested)
    names = [w.layer.name for w in tx.pruning.masked_layers(masked)]
    assert names == ["inner_d", "head"]
    np.testing.assert_allclose(masked(x), nested(x), rtol=1e-6)
    tx.pruning.SynFlowPruner(rounds=3, verbose=False).prune(masked, 0.6)
    assert tx.pruning.report(masked).kept == round(0.4 * (24 + 8))


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
    ],
)
def test_pruned_weights_stay_exactly_zero_through_fit(optimizer):
    masked = tx.pruning.wrap(pruning_cnn())
    x, y = pruning_data(32)
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.7)
    before = {
        n: np.asarray(m)
        for w in tx.pruning.masked_layers(masked)
        for n, m in zip(w.kernel_names, w.masks)
    }
    masked.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masked.fit(x, y, epochs=3, batch_size=8, verbose=0)
    changed = 0
    for w in tx.pruning.masked_layers(masked):
        for name, var, mask in zip(w.kernel_names, w.kernels, w.masks):
            np.testing.assert_array_equal(np.asarray(mask), before[name])
            values = np.asarray(var)
            assert np.all(values[before[name] == 0] == 0), name
            changed += np.count_nonzero(values[before[name] == 1])
    assert changed > 0


def test_save_load_and_strip(tmp_path):
    masked = tx.pruning.wrap(pruning_cnn())
    x, _ = pruning_data()
    tx.pruning.RandomPruner(verbose=False, seed=3).prune(masked, 0.6)
    path = str(tmp_path / "masked.keras")
    masked.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), masked(x), rtol=1e-6, atol=1e-6)
    for a, b in zip(tx.pruning.masked_layers(loaded), tx.pruning.masked_layers(masked)):
        for ma, mb in zip(a.masks, b.masks):
            np.testing.assert_array_equal(np.asarray(ma), np.asarray(mb))
    plain = tx.pruning.strip(loaded)
    assert not any(isinstance(l, tx.pruning.MaskedLayer) for l in plain.layers)
    assert "MaskedLayer" not in str(plain.to_json())
    np.testing.assert_allclose(plain(x), masked(x), rtol=1e-6, atol=1e-6)
    kernel = np.asarray(plain.get_layer("c1").kernel)
    np.testing.assert_array_equal(
        kernel == 0, np.asarray(tx.pruning.masked_layers(masked)[0].masks[0]) == 0
    )


@keras.saving.register_keras_serializable(package="tf_tradyx_tests")
class ScaledDense(keras.layers.Layer, tx.pruning.PrunableLayer):
    """A user's own layer: y = relu(2 * x @ W) with a declared prunable kernel."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.relu

    def build(self, input_shape):
        self.w = self.add_weight(
            name="w", shape=(input_shape[-1], self.units), initializer="glorot_normal"
        )

    def call(self, x):
        return self.activation(self.linear_call(x, [self.w]))

    def linear_call(self, x, kernels):
        return 2.0 * keras.ops.matmul(x, kernels[0])

    def get_prunable_weights(self):
        return [self.w]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_users_prunable_layer_is_masked_and_scored():
    inputs = keras.Input((6,))
    h = ScaledDense(5, name="mine")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    masked = tx.pruning.wrap(model)
    names = [n for w in tx.pruning.masked_layers(masked) for n in w.kernel_names]
    assert names == ["mine/w", "out/kernel"]
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    scores = tx.pruning.PXPruner(verbose=False).score(masked, (x, np.zeros(10)))
    # By hand for this 2-layer net; the factor 2 inside the user's linear map is not a weight, so
    # it stays unsquared in both auxiliary networks (like average pooling):
    #   z1_k = sum_n sum_j gate_nj * 2 * sum_i x_ni^2,   S(w2_jk) = z1_k * (2 sum_i w1_ij^2) * w2_jk^2.
    w1 = np.asarray(masked.get_layer("masked_mine").layer.w, np.float64)
    w2 = np.asarray(masked.get_layer("masked_out").layer.kernel, np.float64)
    gate = (2 * x.astype(np.float64) @ w1 > 0).astype(float)
    z1 = np.einsum(
        "ni,ij,nj->j", x.astype(np.float64) ** 2, 2 * np.ones_like(w1), gate
    ) @ np.ones_like(w2)
    expected_w2 = (2 * w1**2).sum(0)[:, None] * w2**2 * z1[None, :]
    np.testing.assert_allclose(scores["out/kernel"], expected_w2, rtol=1e-6)
    tx.pruning.PXPruner(rounds=3, verbose=False).prune(masked, 0.5, (x, np.zeros(10)))
    mine = masked.get_layer("masked_mine")
    assert np.all(np.asarray(mine.layer.w)[np.asarray(mine.masks[0]) == 0] == 0)
    assert "ScaledDense" in type(tx.pruning.strip(masked).get_layer("mine")).__name__


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.Muon(0.01, weight_decay=0.0),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
        lambda: keras.optimizers.SGD(0.05, 0.9),
    ],
)
def test_pruned_raw_kernels_stay_zero_under_any_optimizer_and_after_pruning_again(make):
    masked = tx.pruning.wrap(tiny_cnn(), skip=["head"])
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    masked.compile(make(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masked.fit(tiny_data(), epochs=2, verbose=0)
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.7)
    masked.fit(tiny_data(), epochs=1, verbose=0)
    for w in tx.pruning.masked_layers(masked):
        kernel, mask = np.asarray(w.layer.kernel), np.asarray(w.masks[0])
        assert np.all(kernel[mask == 0] == 0), w.name
        assert np.any(kernel[mask == 1] != 0)


EMA_OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(0.01, use_ema=True),
    "sgd_overwrite": lambda: keras.optimizers.SGD(
        0.05, 0.9, use_ema=True, ema_overwrite_frequency=3
    ),
    "muon": lambda: keras.optimizers.Muon(0.01, weight_decay=0.0, use_ema=True),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1, use_ema=True),
}


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", sorted(EMA_OPTIMIZERS))
def test_pruned_raw_kernels_and_their_ema_are_exact_zeros_after_fit(name, jit):
    """Keras writes the EMA average into the weights after the constraint (every
    `ema_overwrite_frequency` steps, and at the end of fit): the average is masked too."""
    masked = tx.pruning.wrap(tiny_cnn(), skip=["head"])
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    for w in tx.pruning.masked_layers(masked):  # e.g. weights loaded after pruning: raw nonzeros
        w.layer.kernel.assign(np.asarray(w.layer.kernel) + 0.1)
    optimizer = EMA_OPTIMIZERS[name]()
    masked.compile(optimizer, LOSS, jit_compile=jit)
    masked.fit(tiny_data(), epochs=2, verbose=0)
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.7)  # masks change mid-training
    masked.fit(tiny_data(), epochs=1, verbose=0)
    for w in tx.pruning.masked_layers(masked):
        kernel, mask = np.asarray(w.layer.kernel), np.asarray(w.masks[0])
        average = np.asarray(_keras_compat.optimizer_average(optimizer, w.layer.kernel))
        assert np.all(kernel[mask == 0] == 0), w.name
        assert np.all(average[mask == 0] == 0), w.name
        assert np.any(kernel[mask == 1] != 0)


def test_an_optimizer_that_turns_pruned_kernels_nan_fails_loudly():
    """Adafactor divides 0 by 0 on fully pruned rows; training must not go on with NaN weights."""
    masked = tx.pruning.wrap(tiny_cnn(), skip=["head"])
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    masked.compile(keras.optimizers.Adafactor(0.01), LOSS, jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pruned kernel became NaN"):
        masked.fit(tiny_data(), epochs=1, verbose=0)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
