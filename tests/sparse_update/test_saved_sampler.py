"""Strategies as objects that serialize: a loaded `.keras` file knows its strategy, budget and seed,
and the one default-loss rule that every gradient-based step uses."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tf_tradyx import _losses
from tf_tradyx.sparse_update import gradients, strategy_base

SP = tx.sparse_update


def _model(seed=0, softmax=False):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="fc")(x)
    out = keras.layers.Dense(3, name="head", activation="softmax" if softmax else None)(x)
    return keras.Model(inp, out)


def _ds(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3), np.float32)
    return tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, n))).batch(8)


@pytest.mark.parametrize("strategy", [
    SP.TraDy(["c1", "pw"]), SP.RandomChannels(["pw", "fc"], dynamic=False),
    SP.RandomChannels(None, dynamic=True), SP.DetRGN(layers=["pw"], batches=2, dynamic=False),
    SP.SU({"pw": 0.5, "fc": 0.25}, bias_layers=1), SP.SU("mbv2-w0.35/50kb"),
    SP.WholeVariables("bias"),
])
def test_every_strategy_round_trips_through_its_config(strategy):
    again = strategy_base.deserialize(strategy_base.serialize(strategy))
    assert type(again) is type(strategy)
    assert again.get_config() == strategy.get_config()
    assert (again.name, again.dynamic, again.mode) == (strategy.name, strategy.dynamic,
                                                       strategy.mode)


def test_a_loaded_model_resamples_like_the_original_with_no_arguments(tmp_path):
    sparse = SP.wrap(_model(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=7)
    path = str(tmp_path / "sparse.keras")
    sparse.save(path)
    loaded = SP.attach(keras.models.load_model(path))
    sampler = SP.sampler_of(loaded)
    assert (sampler.strategy.name, sampler.budget, sampler.seed) == ("tradi", 300, 7)
    assert sampler.layers == ["c1", "pw", "fc"]
    # The saved selection came back, and the next draws equal the original model's.
    for name, idx in SP.selection(sparse).items():
        np.testing.assert_array_equal(SP.selection(loaded)[name], idx)
    for epoch in range(3):
        a, b = SP.resample(sparse, epoch=epoch), SP.resample(loaded, epoch=epoch)
        assert {k: v.tolist() for k, v in a.items()} == {k: v.tolist() for k, v in b.items()}
    # Arguments given to attach win over the saved ones.
    assert SP.sampler_of(SP.attach(keras.models.load_model(path), seed=8)).seed == 8


def test_a_loaded_det_rgn_model_asks_for_its_data(tmp_path):
    ds = _ds()
    sparse = SP.wrap(_model(), budget=300, strategy=SP.DetRGN(data=ds, batches=2), seed=0)
    path = str(tmp_path / "det.keras")
    sparse.save(path)
    loaded = SP.attach(keras.models.load_model(path))
    with pytest.raises(ValueError, match="give it data"):
        SP.resample(loaded)
    loaded = SP.attach(keras.models.load_model(path), data=ds)
    assert {k: v.tolist() for k, v in SP.resample(loaded, epoch=0).items()} == \
        {k: v.tolist() for k, v in SP.resample(sparse, epoch=0).items()}


def test_a_model_without_wrappers_needs_a_strategy():
    with pytest.raises(ValueError, match="pass strategy="):
        SP.attach(_model())


def test_wrap_refuses_layers_given_twice_and_budget_is_checked_before_cloning():
    with pytest.raises(ValueError, match="one place only"):
        SP.wrap(_model(), budget=300, layers=["pw"], strategy=SP.TraDy(["c1"]))
    with pytest.raises(ValueError, match="cheapest"):
        SP.wrap(_model(), budget=3, strategy=SP.TraDy(["c1"]))


@pytest.mark.parametrize("softmax", [False, True])
def test_one_default_loss_rule_follows_the_output_activation(softmax):
    model = _model(softmax=softmax)
    x, y = next(iter(_ds()))
    out = model(x)
    expected = keras.losses.sparse_categorical_crossentropy(y, out, from_logits=not softmax)
    np.testing.assert_allclose(float(_losses.default_loss(model)(y, out)),
                               float(tf.reduce_mean(expected)), rtol=1e-6)
    one_hot = tf.one_hot(y, 3)
    np.testing.assert_allclose(float(_losses.default_loss(model)(one_hot, out)),
                               float(tf.reduce_mean(expected)), rtol=1e-5)
    model.compile(loss=keras.losses.MeanSquaredError())
    assert isinstance(_losses.default_loss(model), keras.losses.MeanSquaredError)


def test_ranking_on_a_softmax_model_differentiates_probability_cross_entropy():
    """The old sparse-update default (logits cross-entropy) gave other gradients on softmax nets."""
    model = _model(softmax=True)
    grads = gradients.full_kernel_gradients(model, _ds(), ["pw"], batches=1)["pw"]
    x, y = next(iter(_ds()))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x)))
    np.testing.assert_allclose(grads, tape.gradient(loss, model.get_layer("pw").kernel),
                               rtol=1e-5, atol=1e-7)


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.selections = []

    def on_epoch_begin(self, epoch, logs=None):  # runs after ChannelResampler (listed first)
        self.selections.append({k: v.tolist() for k, v in SP.selection(self.model).items()})


def _fit(model, epochs, callbacks):
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_ds(), epochs=epochs, verbose=0, shuffle=False,
              callbacks=[SP.ChannelResampler(), *callbacks])


def test_repeated_fit_calls_continue_the_draws_instead_of_replaying_them(tmp_path):
    once, split = _Record(), _Record()
    _fit(SP.wrap(_model(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=3), 4, [once])
    sparse = SP.wrap(_model(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=3)
    for _ in range(4):
        _fit(sparse, 1, [split])
    assert split.selections == once.selections
    assert len({str(s) for s in split.selections}) == 4
    assert SP.sampler_of(sparse).resamples == 5 and SP.draws(sparse) == 4
    # The stream position is saved with the model: a reloaded model draws the fifth selection.
    path = str(tmp_path / "m.keras")
    sparse.save(path)
    loaded = SP.attach(keras.models.load_model(path))
    assert SP.draws(loaded) == 4
    assert {k: v.tolist() for k, v in SP.resample(loaded).items()} == \
        {k: v.tolist() for k, v in SP.resample(sparse).items()}


def test_backup_and_restore_resumes_the_same_draws(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    whole, first, rest = _Record(), _Record(), _Record()
    strategy = SP.TraDy(["c1", "pw", "fc"])
    _fit(SP.wrap(_model(), budget=300, strategy=strategy, seed=5), 4, [whole])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(SP.wrap(_model(), budget=300, strategy=strategy, seed=5), 4,
             [first, backup, Interrupt()])
    # A new process would build the same wrapped model; BackupAndRestore restores its variables
    # (weights, selection, draw number) and continues at epoch 2.
    _fit(SP.wrap(_model(), budget=300, strategy=strategy, seed=5), 4, [rest, backup])
    assert len(first.selections) == 2 and len(rest.selections) == 2
    assert first.selections + rest.selections == whole.selections


def test_seed_none_follows_keras_global_seed_and_an_explicit_seed_wins():
    def draw(global_seed, seed=None):
        model, masked = _model(), tx.pruning.wrap(_model())  # (_model seeds with 0 itself)
        keras.utils.set_random_seed(global_seed)
        sparse = SP.wrap(model, budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=seed)
        keras.utils.set_random_seed(global_seed)
        tx.pruning.RandomPruner(seed=seed, verbose=False).prune(masked, 0.5)
        return (str({k: v.tolist() for k, v in SP.selection(sparse).items()}),
                np.concatenate([np.asarray(w.masks[0]).ravel()
                                for w in tx.pruning.masked_layers(masked)]).tobytes())

    assert draw(0) == draw(0)
    a, b = draw(0), draw(1)
    assert a[0] != b[0] and a[1] != b[1]
    assert draw(0, seed=4) == draw(1, seed=4)


@pytest.mark.parametrize("pruner", [tx.pruning.PXPruner, tx.pruning.SynFlowPruner,
                                    tx.pruning.SNIPPruner])
def test_every_path_through_a_zero_head_scores_zero_and_pruning_refuses(pruner):
    """The README's old recipe (a zero-initialized head) made every score 0, and pruning removed
    weights by position. Now the round is refused, the model left as it was."""
    model = _model()
    head = model.get_layer("head")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    masked = tx.pruning.wrap(model, skip=["head"])
    before = [np.asarray(v).copy() for v in masked.weights]
    x, y = next(iter(_ds()))
    with pytest.raises(ValueError, match="score exactly 0.*by position"):
        pruner(rounds=2, verbose=False).prune(masked, 0.5, (x.numpy(), y.numpy()))
    for a, b in zip(before, masked.weights):
        np.testing.assert_array_equal(a, np.asarray(b))


OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.05), "momentum": lambda: keras.optimizers.SGD(0.05, 0.9),
    "nesterov": lambda: keras.optimizers.SGD(0.05, 0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.01), "amsgrad": lambda: keras.optimizers.Adam(0.01, amsgrad=True),
    "adamw_no_decay": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.0),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01), "adagrad": lambda: keras.optimizers.Adagrad(0.05),
    "adadelta": lambda: keras.optimizers.Adadelta(1.0), "adamax": lambda: keras.optimizers.Adamax(0.01),
    "nadam": lambda: keras.optimizers.Nadam(0.01), "lion": lambda: keras.optimizers.Lion(0.001),
    "lamb": lambda: keras.optimizers.Lamb(0.01),
}
REFUSED = {
    "muon": lambda: keras.optimizers.Muon(0.01, weight_decay=0.0),
    "adafactor": lambda: keras.optimizers.Adafactor(0.01), "ftrl": lambda: keras.optimizers.Ftrl(0.05),
}


def _frozen_slices(sparse, before, selections):
    """Kernel slices of channels never selected in any epoch must be bit-identical."""
    for w in SP.sparse_layers(sparse):
        used = set().union(*[set(s.get(w.layer.name, [])) for s in selections])
        for c in set(range(w.in_channels)) - used:
            np.testing.assert_array_equal(np.asarray(w.kernel)[..., c, :], before[w.layer.name][..., c, :],
                                          err_msg=f"{w.layer.name} channel {c}")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_per_element_optimizer_leaves_unselected_channels_bit_identical(name):
    sparse = SP.wrap(_model(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=1)
    before = {w.layer.name: np.asarray(w.kernel).copy() for w in SP.sparse_layers(sparse)}
    record = _Record()
    sparse.compile(OPTIMIZERS[name](), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = sparse.fit(_ds(), epochs=3, verbose=0, shuffle=False,
                         callbacks=[SP.ChannelResampler(), record])
    assert np.all(np.isfinite(history.history["loss"]))
    _frozen_slices(sparse, before, record.selections)
    moved = sum(int(np.any(np.asarray(w.kernel) != before[w.layer.name]))
                for w in SP.sparse_layers(sparse))
    assert moved > 0  # the selected channels did train


def test_adagrad_slots_of_unselected_channels_go_back_to_the_initial_accumulator():
    sparse = SP.wrap(_model(), budget=300, strategy=SP.TraDy(["pw"]), seed=1)
    opt = keras.optimizers.Adagrad(0.05, initial_accumulator_value=0.25)
    sparse.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sparse.fit(_ds(), epochs=1, verbose=0, callbacks=[SP.ChannelResampler()])
    SP.resample(sparse, optimizer=opt)
    w = SP.sparse_layers(sparse)[0]
    slot = np.asarray(opt._accumulators[opt._get_variable_index(w.kernel)])
    off = sorted(set(range(w.in_channels)) - set(SP.selection(sparse).get("pw", [])))
    np.testing.assert_array_equal(slot[..., off, :], 0.25)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_optimizers_that_mix_channels_are_refused_by_name(name):
    sparse = SP.wrap(_model(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=1)
    sparse.compile(REFUSED[name](), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="cannot be used for sparse updates"):
        sparse.fit(_ds(), epochs=1, verbose=0, callbacks=[SP.ChannelResampler()])


@pytest.mark.parametrize("extra", [{"kernel_regularizer": "l2"}, {"kernel_constraint": "max_norm"}])
def test_kernel_regularizers_and_constraints_on_wrapped_layers_are_refused(extra):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="c1", **extra)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(keras.layers.Dense(4, name="fc")(x)))
    with pytest.raises(ValueError, match=r"move unselected channels.*c1\."):
        SP.wrap(model, budget=300, strategy=SP.TraDy(["c1"]))
    SP.wrap(model, budget=300, strategy=SP.TraDy(["fc"]))  # the other layers are fine


@pytest.mark.parametrize("make", [lambda: keras.optimizers.Muon(0.01, weight_decay=0.0),
                                  lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
                                  lambda: keras.optimizers.SGD(0.05, 0.9)])
def test_pruned_raw_kernels_stay_zero_under_any_optimizer_and_after_pruning_again(make):
    masked = tx.pruning.wrap(_model(), skip=["head"])
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    masked.compile(make(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masked.fit(_ds(), epochs=2, verbose=0)
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.7)
    masked.fit(_ds(), epochs=1, verbose=0)
    for w in tx.pruning.masked_layers(masked):
        kernel, mask = np.asarray(w.layer.kernel), np.asarray(w.masks[0])
        assert np.all(kernel[mask == 0] == 0), w.name
        assert np.any(kernel[mask == 1] != 0)
