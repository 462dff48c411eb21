"""Velocity and output-neuron updates: the kernel gradient against the dense gradient masked to the
selected neurons (graph and XLA), the velocity rule against a hand computation, the weight-only
budget and the memory it hides (hand-counted), unselected neurons bit-identical through a resampled
fit, saving, and bad input."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import LOSS, Recorder, data, small_cnn

SP = tx.sparse_update


def _dense_grads(model, x, y):
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=False))  # wrap freezes BN: inference mode
    kernels = [model.get_layer(n).kernel for n in ("c1", "dw", "pw", "fc")]
    return [g.numpy() for g in tape.gradient(loss, kernels)]


@pytest.mark.parametrize("jit", [False, True])
def test_output_neuron_gradients_equal_the_dense_gradient_masked_to_the_selection(jit):
    model = small_cnn()
    x, y, _ = data(16)
    dense = _dense_grads(model, x, y)
    sparse = SP.wrap(model, strategy=SP.Velocity(data=x), budget=10**6, compact_activations=False)
    chosen = {"c1": [1, 6], "dw": [0, 3, 7], "pw": [2], "fc": []}  # fc: no neuron at all
    SP.set_selection(sparse, chosen)
    kernels = [w.kernel for w in SP.sparse_layers(sparse)]

    def grads():
        with tf.GradientTape() as tape:
            loss = LOSS(y, sparse(x, training=True))
        return tape.gradient(loss, kernels)

    got = (tf.function(grads, jit_compile=True) if jit else tf.function(grads))()
    for w, g, d in zip(SP.sparse_layers(sparse), got, dense):
        keep = np.zeros(d.shape[-1] if w.selects_outputs else d.shape[-2])
        keep[chosen[w.layer.name]] = 1
        shape = [1] * d.ndim
        shape[w.selection_axis] = len(keep)
        # float32 sums over the batch in another order (gathered vs full): ~1e-6 relative
        np.testing.assert_allclose(g.numpy(), d * keep.reshape(shape), rtol=2e-5, atol=1e-6)
        assert np.all(g.numpy()[..., keep == 0] == 0) if w.selects_outputs else True


class _Stub:
    """Outputs fed to Velocity in place of a model: {layer: (images, positions, neurons)}."""

    def __init__(self, outputs):
        self.queue = list(outputs)


def _context(costs, layers, budget):
    return SP.SelectionContext(
        model=None, costs=costs, layers=layers, budget=budget, rng=np.random.default_rng(0)
    )


def test_the_velocity_rule_against_a_hand_computation(monkeypatch):
    costs = SP.cost_table(small_cnn())
    v = SP.Velocity(data=np.zeros((2, 12, 12, 3)), momentum=0.5)
    rng = np.random.default_rng(3)
    first = {n: rng.normal(size=(2, 4, costs[n].neurons)) for n in ("pw", "fc")}
    second = {n: o + rng.normal(scale=0.1, size=o.shape) for n, o in first.items()}
    third = {n: o + rng.normal(scale=0.3, size=o.shape) for n, o in second.items()}
    feed = iter([first, first, second, third])
    monkeypatch.setattr(v, "outputs", lambda model, layers: next(feed))
    budget = 3 * costs["pw"].neuron_weight_units
    context = _context(costs, ["pw", "fc"], budget)
    start = v.select(context)  # random neurons until the weight budget
    assert sum(costs[n].neuron_weight_units * len(c) for n, c in start.items()) <= budget
    assert v.select(context) == start  # nothing moved: the selection stays

    def cos(a, b):
        return np.mean(
            np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)), 0
        )

    d1 = {n: 1 - cos(second[n], first[n]) for n in first}
    v1 = {n: d1[n] for n in first}  # delta = d - 0, v = delta - 0 + mu * 0
    got = v.select(context)
    d2 = {n: 1 - cos(third[n], second[n]) for n in first}
    v2 = {n: (d2[n] - d1[n]) - d1[n] + 0.5 * v1[n] for n in first}
    for velocity, chosen in ((v1, got), (v2, v.select(context))):
        score = {n: np.abs(velocity[n]) / costs[n].neuron_weight_units for n in first}
        order = sorted(
            ((score[n][i], n, i) for n in first for i in range(len(score[n]))), reverse=True
        )
        expected, left = {}, budget
        for _, n, i in order:
            if costs[n].neuron_weight_units <= left:
                left -= costs[n].neuron_weight_units
                expected.setdefault(n, []).append(i)
        assert {n: sorted(c.tolist()) for n, c in chosen.items()} == {
            n: sorted(c) for n, c in expected.items()
        }


def test_a_resampled_fit_keeps_the_weight_budget_and_unselected_neurons_bit_identical():
    model = small_cnn()
    x, y, ds = data(48)
    budget = 200
    sparse = SP.wrap(model, strategy="velocity", data=x[:10], budget=budget, seed=1)
    sparse.compile(keras.optimizers.SGD(0.1), LOSS)
    rec = Recorder()
    sparse.fit(ds, epochs=3, verbose=0, callbacks=[SP.ChannelResampler(), rec])
    costs = SP.sampler_of(sparse).costs
    assert rec.selections[1] != rec.selections[0]  # the velocity replaced the random start
    for epoch, chosen in enumerate(rec.selections):
        assert sum(costs[n].neuron_weight_units * len(c) for n, c in chosen.items()) <= budget
        for w in SP.sparse_layers(sparse):
            before = rec.before[epoch][w.kernel.path]
            after = rec.after[epoch][w.kernel.path]
            keep = np.zeros(before.shape[w.selection_axis], bool)
            keep[chosen.get(w.layer.name, [])] = True
            frozen = np.take(after, np.where(~keep)[0], axis=w.selection_axis)
            np.testing.assert_array_equal(
                frozen, np.take(before, np.where(~keep)[0], axis=w.selection_axis)
            )


def test_efficiency_charges_the_whole_input_map_of_every_layer_with_a_selected_neuron():
    model = small_cnn()
    x, _, _ = data(10)
    sparse = SP.wrap(model, strategy=SP.Velocity(data=x), budget=10**6)
    SP.set_selection(sparse, {"c1": [0, 1], "dw": [4], "fc": [2]})
    e = SP.efficiency(sparse)
    # c1: 3x3x3 weights per neuron, input 12x12x3; dw (3x3, multiplier 1): 9 weights, and output 4
    # is input channel 4, whose 14x14 padded map... the map before the padding layer, 12x12;
    # fc: 6 inputs per neuron, input 6 values. pw: nothing selected, nothing kept.
    weights = 2 * 27 + 9 + 6
    maps = 12 * 12 * 3 + 12 * 12 * 1 + 6
    assert e.budgeted_units == weights
    assert e.units == weights + maps
    assert e.budget_used == weights / 10**6


def test_saved_and_reloaded_with_its_axis(tmp_path):
    model = small_cnn()
    x, y, ds = data(16)
    sparse = SP.wrap(model, strategy=SP.Velocity(data=x, images=4), budget=150)
    sparse.compile(keras.optimizers.SGD(0.1), LOSS)
    path = os.path.join(tmp_path, "m.keras")
    sparse.save(path)
    loaded = keras.models.load_model(path)
    assert all(w.channel_axis == "output" for w in SP.sparse_layers(loaded))
    assert SP.selection(loaded).keys() == SP.selection(sparse).keys()
    SP.attach(loaded, strategy=SP.Velocity(data=x, images=4))
    loaded.compile(keras.optimizers.SGD(0.1), LOSS)
    loaded.fit(ds, epochs=1, verbose=0, callbacks=[SP.ChannelResampler()])


def test_bad_input():
    model = small_cnn()
    with pytest.raises(ValueError, match="pass data="):
        SP.wrap(model, strategy="velocity", budget=100)
    with pytest.raises(ValueError, match="images must be"):
        SP.Velocity(data=np.zeros((1, 12, 12, 3)), images=0)
    with pytest.raises(ValueError, match="momentum must be"):
        SP.Velocity(data=np.zeros((1, 12, 12, 3)), momentum=1.0)
    with pytest.raises(ValueError, match="cannot pay for any output neuron"):
        SP.wrap(model, strategy=SP.Velocity(data=np.zeros((2, 12, 12, 3))), budget=3)
    with pytest.raises(ValueError, match="depth multiplier 1"):
        SP.ChannelSparseUpdate(
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2), channel_axis="output"
        )
    with pytest.raises(ValueError, match="grouped conv"):
        SP.ChannelSparseUpdate(keras.layers.Conv2D(4, 1, groups=2), channel_axis="output")
    with pytest.raises(ValueError, match="channel_axis"):
        SP.ChannelSparseUpdate(keras.layers.Dense(2), channel_axis="both")
    sparse = SP.wrap(model, strategy=SP.Velocity(data=np.zeros((2, 12, 12, 3))), budget=100)
    with pytest.raises(ValueError, match=r"pw: output neuron indices must lie in \[0, 6\)"):
        SP.set_selection(sparse, {"pw": [6]})


def test_attach_refuses_the_other_axis_and_a_reused_velocity_starts_afresh():
    model = small_cnn()
    x, _, _ = data(10)
    tradi = SP.wrap(model, strategy=SP.TraDy(["c1", "pw", "fc"]), budget=500)
    with pytest.raises(ValueError, match="selects output channels, but the model was wrapped"):
        SP.attach(tradi, strategy=SP.Velocity(data=x))
    shared = SP.Velocity(data=x)
    first = SP.wrap(model, strategy=shared, budget=150, seed=3)
    first.compile(keras.optimizers.SGD(0.5), LOSS)
    first.fit(x, np.zeros(10, int), epochs=2, verbose=0, callbacks=[SP.ChannelResampler()])
    again = SP.wrap(model, strategy=shared, budget=150, seed=3)
    fresh = SP.wrap(model, strategy=SP.Velocity(data=x), budget=150, seed=3)
    assert {k: v.tolist() for k, v in SP.selection(again).items()} == {
        k: v.tolist() for k, v in SP.selection(fresh).items()
    }


def test_grouped_convs_and_depth_multipliers_are_left_frozen_unless_named():
    """An output neuron of a grouped conv reads only its group, and a depthwise conv with a
    multiplier has outputs that are not its input channels: Velocity wraps every other layer, and
    naming one of them is refused with the reason, the model unchanged."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, groups=4, padding="same", name="grouped")(inp)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(x)
    x = keras.layers.Conv2D(6, 1, name="pw", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(x))
    costs = SP.cost_table(model)
    selects = [
        tx.sparse_update.velocity.selects_neurons(costs[n]) for n in ("grouped", "dw2", "pw")
    ]
    assert selects == [False, False, True]
    x_data = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype(np.float32)
    sparse = SP.wrap(model, strategy=SP.Velocity(data=x_data), budget=10**4)
    assert [w.layer.name for w in SP.sparse_layers(sparse)] == ["pw"]
    with pytest.raises(ValueError, match="grouped conv is not supported"):
        SP.wrap(model, strategy=SP.Velocity(data=x_data, layers=["grouped", "pw"]), budget=10**4)
    assert not SP.sparse_layers(model)
