"""tx.pruning.PruningSummaries: a keras.callbacks.TensorBoard that also writes each masked kernel's
sparsity and the total into the run's train/ directory, at the optimizer's step, when training
begins and after every epoch, as the masks are at that moment; and what it refuses."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import LOSS, tensorboard_events, tiny_cnn, tiny_data
from tf_tradyx import _summaries

BATCHES_PER_EPOCH = 4  # tiny_data(): 32 examples in batches of 8


def _pruned_tiny_cnn(sparsity=0.5):
    masked = tx.pruning.wrap(tiny_cnn(), skip=["head"])
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, sparsity)
    masked.compile(keras.optimizers.SGD(0.05), LOSS)
    return masked


def _sparsities(model):
    """{tag: sparsity} computed from the masks themselves, as the callback must write them."""
    kept, total, out = 0, 0, {}
    for wrapper in tx.pruning.masked_layers(model):
        for name, mask in zip(wrapper.kernel_names, wrapper.masks):
            m = np.asarray(mask)
            out[f"{name}/sparsity"] = 1.0 - m.mean()
            kept, total = kept + m.sum(), total + m.size
    out["sparsity/total"] = 1.0 - kept / total
    return out


class CollapsePwAfterFirstEpoch(keras.callbacks.Callback):
    """Prunes all of 'pw' at the end of epoch 0 (listed before PruningSummaries, so it sees it)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            for wrapper in tx.pruning.masked_layers(self.model):
                if wrapper.layer.name == "pw":
                    wrapper.masks[0].assign(tf.zeros_like(wrapper.masks[0]))


def test_sparsity_of_every_masked_kernel_and_the_total_at_the_optimizer_step(tmp_path):
    pytest.importorskip("tensorboard")
    model = _pruned_tiny_cnn()
    before = _sparsities(model)
    assert set(before) == {"c1/kernel/sparsity", "pw/kernel/sparsity", "fc/kernel/sparsity"} | {
        "sparsity/total"
    }
    callback = tx.pruning.PruningSummaries(str(tmp_path))
    model.fit(
        tiny_data(),
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[CollapsePwAfterFirstEpoch(), callback],
    )
    after = _sparsities(model)
    assert after["pw/kernel/sparsity"] == 1.0 and after["sparsity/total"] > before["sparsity/total"]
    events, plugins = tensorboard_events(str(tmp_path / "train"))
    written = {t: v for t, v in events.items() if t.endswith("/sparsity") or t == "sparsity/total"}
    assert set(written) == set(before)
    for tag, points in written.items():
        assert plugins[tag] == "scalars"
        # Train begin (step 0), then each epoch end: 4 optimizer steps per epoch.
        assert [s for s, _ in points] == [0, BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH], tag
        # The masks as they are at each write: before, then after 'pw' collapsed.
        expected = [before[tag], after[tag], after[tag]]
        np.testing.assert_allclose([v for _, v in points], expected, rtol=0, atol=1e-6)
    # It is Keras' TensorBoard too: the epoch losses land in the same train/ run.
    assert [s for s, _ in events["epoch_loss"]] == [0, 1]
    assert callback._sparsity_writer is None  # closed at the end of fit
    # A second fit writes at the optimizer step where it begins.
    model.fit(tiny_data(), epochs=1, verbose=0, shuffle=False, callbacks=[callback])
    events, _ = tensorboard_events(str(tmp_path / "train"))
    assert [s for s, _ in events["sparsity/total"]] == [0, 4, 8, 8, 12]


def test_a_model_without_masks_is_refused_when_training_begins(tmp_path):
    pytest.importorskip("tensorboard")
    model = tiny_cnn()
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    with pytest.raises(ValueError, match="PruningSummaries needs a model with tx.pruning masks"):
        model.fit(
            tiny_data(),
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[tx.pruning.PruningSummaries(str(tmp_path))],
        )


@pytest.mark.parametrize("update_freq", ["batch", 10])
def test_only_epoch_summaries(tmp_path, update_freq):
    pytest.importorskip("tensorboard")
    with pytest.raises(ValueError, match=r"once per epoch \(update_freq='epoch'\)"):
        tx.pruning.PruningSummaries(str(tmp_path), update_freq=update_freq)


def test_needs_the_tensorboard_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(_summaries, "tensorboard", None)
    with pytest.raises(ImportError, match=r"^PruningSummaries writes TensorBoard summaries"):
        tx.pruning.PruningSummaries(str(tmp_path))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
