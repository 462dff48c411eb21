"""tf_tradyx._summaries, what the TensorBoard callbacks share: the tensorboard extra is checked when
a callback is made, the writer opens only when first written to and closes at the end of fit, and
every summary is stamped with the optimizer's step, which keeps counting across fits."""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.testing_utils import LOSS, tensorboard_events, tiny_cnn, tiny_data
from tf_tradyx import _summaries

BATCHES_PER_EPOCH = 4  # tiny_data(): 32 examples in batches of 8


class LossSummaries(_summaries.SummaryCallback):
    """Writes the epoch's loss, as SummaryCallback subclasses write: in a hook, at the optimizer
    step; `silent_epochs` writes nothing (the writer must then never open)."""

    def __init__(self, log_dir, silent_epochs=()):
        super().__init__(log_dir)
        self.silent_epochs = silent_epochs
        self.writers_seen = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch in self.silent_epochs:
            return
        with self.writer().as_default(step=_summaries.optimizer_step(self.model)):
            tf.summary.scalar("epoch_loss_seen", logs["loss"])
        self.writers_seen.append(self._writer)


def _compiled_tiny_cnn():
    model = tiny_cnn()
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    return model


def test_optimizer_step_is_zero_before_training_and_counts_batches_after():
    assert _summaries.optimizer_step(object()) == 0  # no optimizer attribute at all
    assert _summaries.optimizer_step(tiny_cnn()) == 0  # not compiled: optimizer is None
    model = _compiled_tiny_cnn()
    assert _summaries.optimizer_step(model) == 0
    model.fit(tiny_data(), epochs=2, verbose=0, shuffle=False)
    step = _summaries.optimizer_step(model)
    assert step == 2 * BATCHES_PER_EPOCH and type(step) is int
    model.fit(tiny_data(), epochs=1, verbose=0, shuffle=False)  # a second fit goes on counting
    assert _summaries.optimizer_step(model) == 3 * BATCHES_PER_EPOCH


def test_a_summary_callback_needs_the_tensorboard_extra(monkeypatch):
    monkeypatch.setattr(_summaries, "tensorboard", None)
    with pytest.raises(ImportError, match=r"^SelectionSummaries writes TensorBoard summaries: pip"):
        _summaries.require_tensorboard("SelectionSummaries")
    with pytest.raises(ImportError, match=r"LossSummaries writes .*tf_tradyx\[tensorboard\]"):
        LossSummaries("unused")


def test_summaries_are_written_at_the_optimizer_step_and_read_back_by_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    log_dir = str(tmp_path / "run")
    callback = LossSummaries(log_dir)
    assert not os.path.exists(log_dir)  # nothing opened before the first summary
    model = _compiled_tiny_cnn()
    history = model.fit(tiny_data(), epochs=3, verbose=0, shuffle=False, callbacks=[callback])
    events, plugins = tensorboard_events(log_dir)
    assert list(events) == ["epoch_loss_seen"] and plugins["epoch_loss_seen"] == "scalars"
    steps, values = zip(*events["epoch_loss_seen"])
    assert list(steps) == [BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH, 3 * BATCHES_PER_EPOCH]
    np.testing.assert_allclose(values, history.history["loss"], rtol=1e-6)
    # One writer for the whole fit, closed and dropped at its end.
    assert len(set(map(id, callback.writers_seen))) == 1 and callback._writer is None
    assert len(os.listdir(log_dir)) == 1
    # A second fit opens a fresh writer into the same run; the steps go on from the first fit's.
    model.fit(tiny_data(), epochs=1, verbose=0, shuffle=False, callbacks=[callback])
    events, _ = tensorboard_events(log_dir)
    assert [s for s, _ in events["epoch_loss_seen"]] == [4, 8, 12, 16]
    assert callback._writer is None


def test_the_writer_opens_only_when_a_summary_is_written(tmp_path):
    pytest.importorskip("tensorboard")
    log_dir = str(tmp_path / "never")
    callback = LossSummaries(log_dir, silent_epochs=(0, 1))
    _compiled_tiny_cnn().fit(tiny_data(), epochs=2, verbose=0, shuffle=False, callbacks=[callback])
    assert not os.path.exists(log_dir) and callback._writer is None
    callback.on_train_end()  # closing without a writer is a no-op


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
