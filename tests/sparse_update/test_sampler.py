"""The sampler: a loaded model resamples like the original, draws continue across fit calls
and restores, seed=None follows Keras' global seed."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import SelectionRecord, fit_with_resampler, tiny_cnn, tiny_data

SP = tx.sparse_update


def test_a_loaded_model_resamples_like_the_original_with_no_arguments(tmp_path):
    sparse = SP.wrap(tiny_cnn(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=7)
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
    ds = tiny_data()
    sparse = SP.wrap(tiny_cnn(), budget=300, strategy=SP.DetRGN(data=ds, batches=2), seed=0)
    path = str(tmp_path / "det.keras")
    sparse.save(path)
    loaded = SP.attach(keras.models.load_model(path))
    with pytest.raises(ValueError, match="give it data"):
        SP.resample(loaded)
    loaded = SP.attach(keras.models.load_model(path), data=ds)
    assert {k: v.tolist() for k, v in SP.resample(loaded, epoch=0).items()} == {
        k: v.tolist() for k, v in SP.resample(sparse, epoch=0).items()
    }


def test_a_model_without_wrappers_needs_a_strategy():
    with pytest.raises(ValueError, match="pass strategy="):
        SP.attach(tiny_cnn())


def test_repeated_fit_calls_continue_the_draws_instead_of_replaying_them(tmp_path):
    once, split = SelectionRecord(), SelectionRecord()
    fit_with_resampler(
        SP.wrap(tiny_cnn(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=3), 4, [once]
    )
    sparse = SP.wrap(tiny_cnn(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=3)
    for _ in range(4):
        fit_with_resampler(sparse, 1, [split])
    assert split.selections == once.selections
    assert len({str(s) for s in split.selections}) == 4
    assert SP.sampler_of(sparse).resamples == 5 and SP.draws(sparse) == 4
    # The stream position is saved with the model: a reloaded model draws the fifth selection.
    path = str(tmp_path / "m.keras")
    sparse.save(path)
    loaded = SP.attach(keras.models.load_model(path))
    assert SP.draws(loaded) == 4
    assert {k: v.tolist() for k, v in SP.resample(loaded).items()} == {
        k: v.tolist() for k, v in SP.resample(sparse).items()
    }


def test_backup_and_restore_resumes_the_same_draws(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    whole, first, rest = SelectionRecord(), SelectionRecord(), SelectionRecord()
    strategy = SP.TraDy(["c1", "pw", "fc"])
    fit_with_resampler(SP.wrap(tiny_cnn(), budget=300, strategy=strategy, seed=5), 4, [whole])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit_with_resampler(
            SP.wrap(tiny_cnn(), budget=300, strategy=strategy, seed=5),
            4,
            [first, backup, Interrupt()],
        )
    # A new process would build the same wrapped model; BackupAndRestore restores its variables
    # (weights, selection, draw number) and continues at epoch 2.
    fit_with_resampler(
        SP.wrap(tiny_cnn(), budget=300, strategy=strategy, seed=5), 4, [rest, backup]
    )
    assert len(first.selections) == 2 and len(rest.selections) == 2
    assert first.selections + rest.selections == whole.selections


@pytest.mark.parametrize("resampler_first", [True, False])
def test_a_mid_epoch_backup_and_restore_resume_trains_the_same_channels(tmp_path, resampler_first):
    """BackupAndRestore(save_freq=1) saves mid-epoch, after that epoch's draw; the resumed fit
    restarts the epoch, which must train the channels it was drawn, not the next draw's."""

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                raise RuntimeError("interrupted")

    def fit(model, record, others):
        """BackupAndRestore after the resampler, or before it (the record always after it)."""
        model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
        resampler = SP.ChannelResampler()
        order = [resampler, record, *others] if resampler_first else [*others, resampler, record]
        model.fit(tiny_data(), epochs=4, verbose=0, shuffle=False, callbacks=order)

    strategy = SP.TraDy(["c1", "pw", "fc"])
    whole, first, rest = SelectionRecord(), SelectionRecord(), SelectionRecord()
    uninterrupted = SP.wrap(tiny_cnn(), budget=300, strategy=strategy, seed=5)
    fit_with_resampler(uninterrupted, 4, [whole])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(
            SP.wrap(tiny_cnn(), budget=300, strategy=strategy, seed=5), first, [backup, Interrupt()]
        )
    resumed = SP.wrap(tiny_cnn(), budget=300, strategy=strategy, seed=5)
    fit(resumed, rest, [backup])
    assert first.selections == whole.selections[:2]
    assert rest.selections == whole.selections[1:]  # epoch 1 again, with its own channels
    assert SP.draws(resumed) == SP.draws(uninterrupted) == 4


def test_a_file_saved_without_the_epoch_marker_still_loads():
    """Files written before the wrappers kept the epoch in progress load, with no epoch marked."""
    sparse = SP.wrap(tiny_cnn(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=5)
    w = SP.sparse_layers(sparse)[0]
    store = {}
    w.save_own_variables(store)
    marker = max(store, key=int)
    chosen = w.get_channels()
    w.epoch_in_progress.assign(3)
    w.channel_indices.assign(np.zeros(w.in_channels, np.int32))
    w.load_own_variables({k: v for k, v in store.items() if k != marker})
    assert int(w.epoch_in_progress.numpy()) == -1
    np.testing.assert_array_equal(w.get_channels(), chosen)


def test_seed_none_follows_keras_global_seed_and_an_explicit_seed_wins():
    def draw(global_seed, seed=None):
        model, masked = tiny_cnn(), tx.pruning.wrap(tiny_cnn())  # (_model seeds with 0 itself)
        keras.utils.set_random_seed(global_seed)
        sparse = SP.wrap(model, budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=seed)
        keras.utils.set_random_seed(global_seed)
        tx.pruning.RandomPruner(seed=seed, verbose=False).prune(masked, 0.5)
        return (
            str({k: v.tolist() for k, v in SP.selection(sparse).items()}),
            np.concatenate(
                [np.asarray(w.masks[0]).ravel() for w in tx.pruning.masked_layers(masked)]
            ).tobytes(),
        )

    assert draw(0) == draw(0)
    a, b = draw(0), draw(1)
    assert a[0] != b[0] and a[1] != b[1]
    assert draw(0, seed=4) == draw(1, seed=4)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
