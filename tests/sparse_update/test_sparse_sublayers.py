"""TraDy inside custom layers: the projections of a MultiHeadAttention node and the declared Dense
layers of a user block are costed by hand, get exact gradients on their selected channels (with
and without block recomputation, dropout included), keep unselected channels bit-identical
through an XLA fit, and survive save, load, attach and strip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tf_tradyx.sparse_update import memory
from tf_tradyx.sparse_update.sparse_sublayers import SparseSublayers
from tf_tradyx.sparse_update.wrapper import wrappers_of

sp = tx.sparse_update
T, D = 5, 6


@keras.saving.register_keras_serializable(package="tests")
class Block(keras.layers.Layer, sp.SparseUpdatableLayer):
    """LayerNorm -> Dense(gelu) -> Dropout -> Dense, residual: a transformer's feed-forward half."""

    def __init__(self, rate=0.0, twice=False, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.twice = rate, twice
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.up = keras.layers.Dense(8, activation="gelu", name="up")
        self.drop = keras.layers.Dropout(rate, seed=3, name="drop")
        self.down = keras.layers.Dense(D, name="down")

    def call(self, x):
        h = self.up(self.norm(x))
        if self.twice:  # a shared sublayer: called twice per call
            h = h + self.up(x)
        return x + self.down(self.drop(h))

    def get_sparse_update_sublayers(self):
        return [self.up, self.down]

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "twice": self.twice}


def _model(rate=0.0, twice=False, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((T, D))
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")(inputs, inputs)
    x = Block(rate, twice, name="block")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, T, D)).astype("float32"), np.arange(n) % 3


SELECTION = {
    "mha/query": [0, 4],
    "mha/value": [5],
    "mha/attention_output": [1, 2, 3],
    "block/up": [2],
    "block/down": [0, 7],
}


def test_sublayer_rows_are_named_by_path_and_costed_by_hand():
    table = sp.cost_table(_model())
    assert table.names == [
        "mha/query",
        "mha/key",
        "mha/value",
        "mha/attention_output",
        "block/up",
        "block/down",
    ]
    # EinsumDense "abc,cde->abde": a channel is one of D=6 inputs, reaching 2 heads x 3 = 6
    # outputs at each of T=5 positions: 6 weights + 5 activations.
    assert table["mha/query"].in_channels == D and table["mha/query"].units_per_channel == 6 + T
    # "abcd,cde->abe" contracts heads and key_dim: 6 channels reaching D=6 outputs.
    assert table["mha/attention_output"].in_channels == 6
    assert table["mha/attention_output"].units_per_channel == D + T
    assert table["block/up"].units_per_channel == 8 + T  # Dense(8) on T tokens
    assert table["block/down"].in_channels == 8 and table["block/down"].units_per_channel == D + T


def test_a_sublayer_called_twice_per_call_is_not_selectable():
    assert "block/up" not in sp.cost_table(_model(twice=True))
    assert "block/down" in sp.cost_table(_model(twice=True))


@pytest.mark.parametrize("recompute", [False, True])
def test_selected_channels_get_the_dense_gradient_and_the_rest_exactly_zero(recompute):
    model = _model(rate=0.5)
    x, y = _data()
    wrapped = sp.wrap(model, budget=10_000, layers=list(SELECTION), seed=0, recompute=recompute)
    assert (sp.recompute.installed(wrapped) is not None) == recompute
    sp.set_selection(wrapped, SELECTION)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernels = {w.selection_name: w.layer.kernel for w in wrappers_of(wrapped)}

    @tf.function
    def sparse_grads():
        with tf.GradientTape() as tape:
            value = loss(y, wrapped(x, training=True))
        return tape.gradient(value, [kernels[n] for n in SELECTION])

    plain = sp.cost_table(model).layers

    def dense_grads():
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return tape.gradient(value, [plain[n].kernel for n in SELECTION])

    # Same dropout mask in both models: their Dropout layers start from the same seed, and the
    # recomputed block draws its seed once, outside the recomputation.
    for name, g, ref in zip(SELECTION, sparse_grads(), dense_grads()):
        rows = sp.cost_table(model)[name].in_channels
        g, ref = np.asarray(g).reshape(rows, -1), np.asarray(ref).reshape(rows, -1)
        chosen = SELECTION[name]
        others = np.setdiff1d(np.arange(rows), chosen)
        assert np.all(g[others] == 0), name
        # The same float32 sums in another order: round-off of a few ulps of the largest term.
        np.testing.assert_allclose(g[chosen], ref[chosen], rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_recomputing_the_block_keeps_less_and_names_every_wrapper_apart():
    model = _model(rate=0.1)
    table = sp.cost_table(model)
    with_recompute = sp.wrap(
        model, budget=table.full_units // 10, layers=table.names, recompute=True
    )
    without = sp.wrap(model, budget=table.full_units // 10, layers=table.names, recompute=False)
    kept = memory.retained_bytes(with_recompute, batch_size=4)["activation"]
    assert kept < memory.retained_bytes(without, batch_size=4)["activation"]
    names = [w.name for w in wrappers_of(with_recompute)]
    assert len(set(names)) == len(names) == len(table)


def test_unselected_channels_stay_bit_identical_through_an_xla_fit_and_only_wrappers_train():
    model = _model(rate=0.1)
    x, y = _data(16)
    table = sp.cost_table(model)
    wrapped = sp.wrap(model, budget=table.full_units // 5, layers=table.names, seed=1)
    trainable = {id(v) for v in wrapped.trainable_variables}
    wrappers = wrappers_of(wrapped)
    assert trainable == {id(w.layer.kernel) for w in wrappers} | {
        id(v) for v in wrapped.get_layer("head").weights
    }  # LayerNorm, biases and everything else frozen
    before = {w.selection_name: np.asarray(w.layer.kernel) for w in wrappers}
    frozen_before = [np.asarray(v) for v in wrapped.non_trainable_variables]
    wrapped.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    wrapped.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[sp.ChannelResampler()])
    moved = 0
    for w in wrappers:
        rows = w.in_channels
        k = np.asarray(w.layer.kernel).reshape(rows, -1)
        k0 = before[w.selection_name].reshape(rows, -1)
        frozen = np.setdiff1d(np.arange(rows), w.get_channels())
        np.testing.assert_array_equal(k[frozen], k0[frozen])
        moved += int(np.any(k != k0))
    assert moved > 0
    assert sp.efficiency(wrapped).units <= table.full_units // 5
    for v, v0 in zip(wrapped.non_trainable_variables, frozen_before):
        if not any(k in v.path for k in ("channel", "draws", "epoch", "seed_generator")):
            np.testing.assert_array_equal(np.asarray(v), v0)


def test_save_load_attach_and_strip_keep_the_selection_and_the_function(tmp_path):
    model = _model()
    x, _ = _data(4)
    table = sp.cost_table(model)
    wrapped = sp.wrap(model, budget=table.full_units // 4, layers=table.names, seed=2)
    chosen = sp.selection(wrapped)
    path = str(tmp_path / "sparse.keras")
    wrapped.save(path)
    loaded = sp.attach(keras.models.load_model(path))
    assert {type(l).__name__ for l in loaded.layers} >= {"SparseSublayers"}
    assert {k: list(v) for k, v in sp.selection(loaded).items()} == {
        k: list(v) for k, v in chosen.items()
    }
    assert sp.sampler_of(loaded).budget == table.full_units // 4
    np.testing.assert_array_equal(loaded(x), wrapped(x))
    plain = sp.strip(loaded)
    assert not wrappers_of(plain)
    assert isinstance(plain.get_layer("mha"), keras.layers.MultiHeadAttention)
    assert isinstance(plain.get_layer("block").up, keras.layers.Dense)
    # The wrappers compute the same maps through their canonical views: float32 round-off.
    np.testing.assert_allclose(plain(x), wrapped(x), rtol=1e-5, atol=1e-6)
    # The stripped weights line up with the original model's, variable for variable.
    assert [tuple(v.shape) for v in plain.weights] == [tuple(v.shape) for v in model.weights]


def test_sparse_sublayers_refuses_a_model_a_missing_path_and_mismatched_configs():
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")
    x = np.ones((1, T, D), "float32")
    mha(x, x)
    with pytest.raises(ValueError, match="not a model or wrapper"):
        SparseSublayers(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), [["x"]])
    with pytest.raises(ValueError, match="stopped at '_nothing'"):
        SparseSublayers(mha, [["_nothing"]])(x, x)
    with pytest.raises(ValueError, match="2 wrapper configs for 1 paths"):
        SparseSublayers(mha, [["_query_dense"]], wrappers=[{}, {}])
    with pytest.raises(ValueError, match="got no sublayer path"):
        SparseSublayers(mha, [])
