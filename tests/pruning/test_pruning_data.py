"""Pruning data is streamed: read again every round, batch by batch, never held whole."""

import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import tiny_cnn

PD = tx.pruning.pruning_data


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 3), np.float32), rng.integers(0, 3, n)


def _passes(reads):
    """The batch indices read, split into passes (each pass starts again at 0)."""
    out = []
    for i in reads:
        if i == 0:
            out.append([])
        out[-1].append(i)
    return out


def _counting_dataset(x, y, batch, reads):
    """A dataset whose generator counts the batches it yields (every pass re-runs it)."""

    def gen():
        for i in range(0, len(x), batch):
            reads.append(i // batch)
            yield x[i : i + batch], y[i : i + batch]

    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32), tf.TensorSpec((None,), tf.int64))
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


@pytest.mark.parametrize("method", ["px", "itersnip"])
def test_streamed_batches_score_like_the_whole_set_in_one_batch(method):
    """PX's data term and SNIP's gradient are sums over images: batches of 8 read one at a time
    must give the scores of all 40 images in one batch (float32 sums, reordered: ~1e-6)."""
    x, y = _images()
    whole = tx.pruning.get_pruner(method, verbose=False).score(tx.pruning.wrap(tiny_cnn()), (x, y))
    reads = []
    streamed = tx.pruning.get_pruner(method, verbose=False).score(
        tx.pruning.wrap(tiny_cnn()), _counting_dataset(x, y, 8, reads)
    )
    # The first batch is checked up front (tf.data may read a little ahead), then one full pass.
    check, *rounds = _passes(reads)
    assert check[0] == 0 and rounds == [[0, 1, 2, 3, 4]]
    for name in whole:
        np.testing.assert_allclose(streamed[name], whole[name], rtol=1e-5, atol=1e-12)


def test_every_round_reads_the_data_again():
    x, y = _images()
    reads = []
    masked = tx.pruning.wrap(tiny_cnn())
    tx.pruning.PXPruner(rounds=3, verbose=False).prune(
        masked, 0.5, _counting_dataset(x, y, 16, reads)
    )
    assert _passes(reads)[1:] == [[0, 1, 2]] * 3


def test_arrays_are_sliced_into_batches_as_they_are_read(monkeypatch):
    monkeypatch.setattr(PD, "BATCH_SIZE", 16)
    x, y = _images(40)
    data = PD.PruningData(tiny_cnn(), (x, y), needs_data=True, needs_labels=True)
    sizes = [int(b[0].shape[0]) for b in data]
    assert sizes == [16, 16, 8] and sizes == [int(b[0].shape[0]) for b in data]  # re-readable
    np.testing.assert_array_equal(data.first[0].numpy(), x[:16])


def test_unbatched_datasets_are_batched_and_labels_are_required_when_needed():
    x, y = _images(10)
    examples = tf.data.Dataset.from_tensor_slices((x, y))
    data = PD.PruningData(tiny_cnn(), examples, needs_data=True, needs_labels=True)
    assert [int(b[0].shape[0]) for b in data] == [10]
    with pytest.raises(ValueError, match="needs labels"):
        PD.PruningData(tiny_cnn(), x, needs_data=True, needs_labels=True)
    with pytest.raises(ValueError, match="scores with data"):
        PD.PruningData(tiny_cnn(), None, needs_data=True, needs_labels=False)
    assert not PD.PruningData(tiny_cnn(), None, needs_data=False, needs_labels=False)
    with pytest.raises(ValueError, match="empty"):
        PD.PruningData(tiny_cnn(), examples.take(0), needs_data=True, needs_labels=True)


def test_a_bad_batch_late_in_the_data_stops_pruning_and_the_model_is_restored():
    x, y = _images()
    x[30, 0, 0, 0] = np.nan  # in the fourth batch of 8: past the check of the first
    masked = tx.pruning.wrap(tiny_cnn())
    before = [np.asarray(v).copy() for v in masked.weights]
    with pytest.raises(ValueError, match="NaN or Inf"):
        tx.pruning.PXPruner(rounds=2, verbose=False).prune(
            masked, 0.5, tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        )
    for a, b in zip(before, masked.weights):
        np.testing.assert_array_equal(a, np.asarray(b))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
