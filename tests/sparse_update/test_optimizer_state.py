"""Optimizer state at a resample: unselected channels stay bit-identical through fit with SGD,
momentum and Adam; decoupled weight decay on the wrapped kernels is refused."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import (
    CANDIDATES,
    LOSS,
    Recorder,
    SelectionRecord,
    data,
    small_cnn,
    tiny_cnn,
    tiny_data,
)

SP = tx.sparse_update
SU = tx.sparse_update


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.SGD(0.1),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
    ],
    ids=["sgd", "momentum", "adam"],
)
def test_only_selected_channels_and_head_change(make_optimizer):
    sparse = SU.wrap(small_cnn(), budget=330, layers=CANDIDATES, strategy="tradi", seed=3)
    sparse.compile(make_optimizer(), LOSS)
    _, _, ds = data()
    rec = Recorder()
    sparse.fit(ds, epochs=4, verbose=0, callbacks=[SU.ChannelResampler(), rec])
    wrappers = {w.kernel.path: w for w in SU.sparse_layers(sparse)}
    for epoch, (sel, before, after) in enumerate(zip(rec.selections, rec.before, rec.after)):
        for path, old in before.items():
            new = after[path]
            if path in wrappers:
                w = wrappers[path]
                chosen = np.asarray(sel.get(w.layer.name, []), int)
                rest = np.setdiff1d(np.arange(w.in_channels), chosen)
                assert np.array_equal(np.take(new, rest, -2), np.take(old, rest, -2)), (
                    f"epoch {epoch}: unselected channels of {path} moved"
                )
                if len(chosen):
                    trained = np.take(new, chosen, -2)
                    assert not np.array_equal(trained, np.take(old, chosen, -2)), path
            elif path.startswith("head/"):
                assert not np.array_equal(new, old), path
            elif path.endswith("/epoch_in_progress"):
                # The resume marker: the epoch being trained while it runs, -1 between epochs.
                assert int(new) == -1 and int(old) in (epoch, -1), path
            else:  # frozen: BN (incl. moving statistics), biases, selection variables
                assert np.array_equal(new, old), f"epoch {epoch}: {path} changed"


def test_weight_decay_is_refused_unless_excluded():
    sparse = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES)
    _, _, ds = data()
    sparse.compile(keras.optimizers.SGD(0.1, weight_decay=1e-4), LOSS)
    with pytest.raises(ValueError, match="weight decay"):
        sparse.fit(ds, epochs=1, verbose=0, callbacks=[SU.ChannelResampler()])
    opt = keras.optimizers.SGD(0.1, weight_decay=1e-4)
    opt.exclude_from_weight_decay(var_list=SU.sparse_kernels(sparse))
    sparse.compile(opt, LOSS)
    sparse.fit(ds, epochs=1, verbose=0, callbacks=[SU.ChannelResampler()])


OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.05),
    "momentum": lambda: keras.optimizers.SGD(0.05, 0.9),
    "nesterov": lambda: keras.optimizers.SGD(0.05, 0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "amsgrad": lambda: keras.optimizers.Adam(0.01, amsgrad=True),
    "adamw_no_decay": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.0),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01),
    "adagrad": lambda: keras.optimizers.Adagrad(0.05),
    "adadelta": lambda: keras.optimizers.Adadelta(1.0),
    "adamax": lambda: keras.optimizers.Adamax(0.01),
    "nadam": lambda: keras.optimizers.Nadam(0.01),
    "lion": lambda: keras.optimizers.Lion(0.001),
    "lamb": lambda: keras.optimizers.Lamb(0.01),
}


REFUSED = {
    "muon": lambda: keras.optimizers.Muon(0.01, weight_decay=0.0),
    "adafactor": lambda: keras.optimizers.Adafactor(0.01),
    "ftrl": lambda: keras.optimizers.Ftrl(0.05),
}


def _frozen_slices(sparse, before, selections):
    """Kernel slices of channels never selected in any epoch must be bit-identical."""
    for w in SP.sparse_layers(sparse):
        used = set().union(*[set(s.get(w.layer.name, [])) for s in selections])
        for c in set(range(w.in_channels)) - used:
            np.testing.assert_array_equal(
                np.asarray(w.kernel)[..., c, :],
                before[w.layer.name][..., c, :],
                err_msg=f"{w.layer.name} channel {c}",
            )


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_per_element_optimizer_leaves_unselected_channels_bit_identical(name):
    sparse = SP.wrap(tiny_cnn(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=1)
    before = {w.layer.name: np.asarray(w.kernel).copy() for w in SP.sparse_layers(sparse)}
    record = SelectionRecord()
    sparse.compile(OPTIMIZERS[name](), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = sparse.fit(
        tiny_data(), epochs=3, verbose=0, shuffle=False, callbacks=[SP.ChannelResampler(), record]
    )
    assert np.all(np.isfinite(history.history["loss"]))
    _frozen_slices(sparse, before, record.selections)
    moved = sum(
        int(np.any(np.asarray(w.kernel) != before[w.layer.name])) for w in SP.sparse_layers(sparse)
    )
    assert moved > 0  # the selected channels did train


def test_adagrad_slots_of_unselected_channels_go_back_to_the_initial_accumulator():
    sparse = SP.wrap(tiny_cnn(), budget=300, strategy=SP.TraDy(["pw"]), seed=1)
    opt = keras.optimizers.Adagrad(0.05, initial_accumulator_value=0.25)
    sparse.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sparse.fit(tiny_data(), epochs=1, verbose=0, callbacks=[SP.ChannelResampler()])
    SP.resample(sparse, optimizer=opt)
    w = SP.sparse_layers(sparse)[0]
    slot = np.asarray(opt._accumulators[opt._get_variable_index(w.kernel)])
    off = sorted(set(range(w.in_channels)) - set(SP.selection(sparse).get("pw", [])))
    np.testing.assert_array_equal(slot[..., off, :], 0.25)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_optimizers_that_mix_channels_are_refused_by_name(name):
    sparse = SP.wrap(tiny_cnn(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=1)
    sparse.compile(REFUSED[name](), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="cannot be used for sparse updates"):
        sparse.fit(tiny_data(), epochs=1, verbose=0, callbacks=[SP.ChannelResampler()])


# Every strategy, static ones included, whose users add no ChannelResampler (issue 33, item 8).
IMAGES = np.random.default_rng(0).random((4, 8, 8, 3), np.float32)
STRATEGIES = {
    "static_topk": lambda: (SP.RandomChannels(["c1", "pw", "fc"], dynamic=False), 300),
    "static_full": lambda: (SP.RandomChannels(None, dynamic=False), 300),
    "su": lambda: (SP.SU({"pw": 0.5, "fc": 0.5}), None),
    "static_det_rgn": lambda: (SP.DetRGN(tiny_data(), batches=1, dynamic=False), 300),
    "tradi_no_resampler": lambda: (SP.TraDy(["c1", "pw", "fc"]), 300),
    "velocity": lambda: (SP.Velocity(data=IMAGES, images=4), 100),
}
# Optimizer features that move a weight without a gradient.
MOVERS = {
    "weight_decay": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
    "sgd_weight_decay": lambda: keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.1),
    "ema": lambda: keras.optimizers.SGD(0.1, use_ema=True),
    "ema_overwrite": lambda: keras.optimizers.Adam(0.01, use_ema=True, ema_overwrite_frequency=1),
    "muon": lambda: keras.optimizers.Muon(0.01, weight_decay=0.0),
}


def _sparse(strategy):
    made, budget = STRATEGIES[strategy]()
    return SP.wrap(tiny_cnn(), budget=budget, strategy=made, seed=2)


def _all_weights(model):
    return [np.asarray(v).copy() for v in model.variables]


@pytest.mark.parametrize("mover", sorted(MOVERS))
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_optimizers_that_move_frozen_channels_are_refused_on_every_path(strategy, mover):
    """No callback needed: fit refuses before the first step, whatever the strategy."""
    sparse = _sparse(strategy)
    sparse.compile(MOVERS[mover](), LOSS)
    before = _all_weights(sparse)
    with pytest.raises(ValueError, match="cannot be used for sparse updates|weight decay|EMA"):
        sparse.fit(tiny_data(), epochs=1, verbose=0)
    for a, b in zip(_all_weights(sparse), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", ["train_on_batch", "jit_compile", "run_eagerly", "attach"])
def test_every_training_path_refuses_an_optimizer_that_moves_frozen_channels(path, tmp_path):
    sparse = _sparse("static_topk")
    before = _all_weights(sparse)
    x, y = IMAGES, np.arange(4) % 3
    with pytest.raises(ValueError, match="EMA"):
        if path == "train_on_batch":
            sparse.compile(keras.optimizers.SGD(0.1, use_ema=True), LOSS)
            sparse.train_on_batch(x, y)
        elif path == "attach":  # a compiled model loaded from a file
            sparse.compile(keras.optimizers.SGD(0.1, use_ema=True), LOSS)
            sparse.save(str(tmp_path / "m.keras"))
            SP.attach(keras.models.load_model(str(tmp_path / "m.keras")))
        else:
            sparse.compile(
                keras.optimizers.SGD(0.1, use_ema=True),
                LOSS,
                jit_compile=path == "jit_compile",
                run_eagerly=path == "run_eagerly",
            )
            sparse.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(_all_weights(sparse), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_static_selections_stay_bit_identical_under_momentum_without_a_resampler(strategy, jit):
    sparse = _sparse(strategy)
    chosen = SP.selection(sparse)
    before = {w.layer.name: np.asarray(w.kernel).copy() for w in SP.sparse_layers(sparse)}
    sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), LOSS, jit_compile=jit)
    sparse.fit(tiny_data(), epochs=2, verbose=0)
    if not SP.sampler_of(sparse).strategy.dynamic:  # the selection of wrap, kept
        assert {k: v.tolist() for k, v in SP.selection(sparse).items()} == {
            k: v.tolist() for k, v in chosen.items()
        }
    for w in SP.sparse_layers(sparse):
        keep = np.zeros(w.in_channels, bool)
        keep[chosen.get(w.layer.name, [])] = True
        old, new = before[w.layer.name], np.asarray(w.kernel)
        np.testing.assert_array_equal(
            np.compress(~keep, new, w.selection_axis), np.compress(~keep, old, w.selection_axis)
        )


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
