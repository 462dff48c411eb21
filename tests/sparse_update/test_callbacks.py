"""ChannelResampler and EfficiencyLogger in fit: a new selection each epoch without retracing,
alongside Keras' own callbacks and checkpoints."""

import json
import sys

import keras
import pytest

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, Recorder, data, small_cnn, tiny_cnn, tiny_data

SP = tx.sparse_update

SU = tx.sparse_update


def test_resamples_each_epoch_without_retracing_and_with_keras_callbacks(tmp_path):
    sparse = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES, strategy="tradi", seed=0)
    sparse.compile(keras.optimizers.SGD(0.05), LOSS, metrics=["accuracy"])
    _, _, ds = data()
    rec = Recorder()
    path = str(tmp_path / "ep{epoch}.keras")
    history = sparse.fit(
        ds,
        epochs=5,
        verbose=0,
        validation_data=ds.take(1),
        callbacks=[
            SU.ChannelResampler(),
            rec,
            SU.EfficiencyLogger(),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
            keras.callbacks.ModelCheckpoint(path),
        ],
    )
    assert len(rec.selections) == 5
    distinct = {json.dumps(s, sort_keys=True) for s in rec.selections}
    assert len(distinct) >= 4
    assert rec.traces[0] == rec.traces[-1]  # no retrace after the first epoch
    assert "val_loss" in history.history
    assert len(history.history["sparse_update/units"]) == 5
    assert all(u <= 400 for u in history.history["sparse_update/units"])
    # A checkpoint holds the selection of its epoch and round-trips through .keras.
    loaded = keras.models.load_model(path.format(epoch=3))
    got = {k: v.tolist() for k, v in SU.selection(loaded).items()}
    assert got == rec.selections[2]
    x, _, _ = data(4)
    for w in SU.sparse_layers(loaded):
        w.check_selection()
    # Same seed -> same stream of selections.
    again = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES, strategy="tradi", seed=0)
    again.compile(keras.optimizers.SGD(0.05), LOSS)
    rec2 = Recorder()
    again.fit(ds, epochs=5, verbose=0, callbacks=[SU.ChannelResampler(), rec2])
    assert rec.selections == rec2.selections


def test_efficiency_callbacks_refuse_a_plain_model_and_pruning_strip_asks_for_order():
    model = tiny_cnn()
    model.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    with pytest.raises(ValueError, match="EfficiencyLogger reports on a model made by"):
        model.fit(tiny_data(), epochs=1, verbose=0, callbacks=[SP.EfficiencyLogger()])
    masked = tx.pruning.wrap(tiny_cnn(), skip=["head"])
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    sparse = SP.wrap(masked, budget=300, strategy=SP.TraDy(["pw"]))
    with pytest.raises(ValueError, match="strip those first"):
        tx.pruning.strip(sparse)
    plain = tx.pruning.strip(SP.strip(sparse))
    assert not SP.sparse_layers(plain) and not tx.pruning.masked_layers(plain)


def test_efficiency_logger_logs_a_short_line_by_default_and_everything_on_request():
    sparse = SP.wrap(tiny_cnn(), budget=300, strategy=SP.TraDy(["c1", "pw", "fc"]), seed=0)
    sparse.compile(keras.optimizers.SGD(0.01), LOSS)
    short = sparse.fit(tiny_data(), epochs=1, verbose=0, callbacks=[SP.EfficiencyLogger()])
    keys = {k for k in short.history if k.startswith("sparse_update/")}
    assert keys == {
        "sparse_update/units",
        "sparse_update/budget_used",
        "sparse_update/layers_updated",
    }
    full = sparse.fit(tiny_data(), epochs=1, verbose=0, callbacks=[SP.EfficiencyLogger("all")])
    assert "sparse_update/full_units" in full.history and len(full.history) > len(short.history) + 5
    with pytest.raises(ValueError, match="Unknown efficiency keys"):
        SP.EfficiencyLogger(["unitz"])


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
