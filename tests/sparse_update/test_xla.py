"""TraDy under XLA (`jit_compile=True`, Keras' default on GPUs): static channel slots.

XLA compiles a size read from a variable as a constant, so a run-time-sized channel gather would
compile the step again for every new draw. The wrappers instead gather a static number of slots
(`traced_capacity`); `ChannelResampler` draws the fit's selections ahead and reserves room for the
largest, so the step is traced once per `fit`, and a selection that outgrows its slots rebuilds the
train function. These tests hold the XLA path to the graph path, draw for draw.
"""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, Recorder, data, small_cnn

SU = tx.sparse_update


def _fit(jit, epochs=4, budget=260, callbacks=()):
    sparse = SU.wrap(small_cnn(), budget=budget, layers=CANDIDATES, seed=5)
    sparse.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS, jit_compile=jit)
    recorder = Recorder()
    _, _, ds = data()
    history = sparse.fit(
        ds,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=[SU.ChannelResampler(), recorder, *callbacks],
    )
    return sparse, recorder, history.history["loss"]


def test_resampled_fit_under_xla_matches_the_graph_path_and_compiles_once():
    graph, graph_rec, graph_loss = _fit(False)
    xla, xla_rec, xla_loss = _fit(True)
    # Same draws, and they differ in size from epoch to epoch (else the test proves nothing).
    assert xla_rec.selections == graph_rec.selections
    sizes = {tuple(len(s.get(n, [])) for n in CANDIDATES) for s in xla_rec.selections}
    assert len(sizes) > 1, sizes
    # One trace of the train step for the whole fit: room was reserved for every draw.
    assert xla_rec.traces[0] == xla_rec.traces[-1]
    for w in SU.sparse_layers(xla):
        most = max(len(s.get(w.layer.name, [])) for s in xla_rec.selections)
        assert w.traced_capacity == max(most, 1), w.layer.name
    # XLA reorders float32 sums (relative rounding ~1e-7 per op); over 16 momentum steps of this
    # 5-layer net that stays far below these tolerances, while a channel wrongly updated or
    # frozen moves weights at the 1e-2 level.
    np.testing.assert_allclose(xla_loss, graph_loss, rtol=1e-5)
    for a, b in zip(graph.weights, xla.weights):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    # Channels outside each epoch's draw did not move, under XLA too.
    for epoch, chosen in enumerate(xla_rec.selections):
        for w in SU.sparse_layers(xla):
            frozen = [c for c in range(w.in_channels) if c not in chosen.get(w.layer.name, [])]
            key = w.kernel.path
            np.testing.assert_array_equal(
                xla_rec.after[epoch][key][..., frozen, :],
                xla_rec.before[epoch][key][..., frozen, :],
            )


def _set_and_fit(sparse, selection):
    SU.set_selection(sparse, selection)
    x, y, _ = data(16)
    return float(sparse.train_on_batch(x, y))


def _grow(jit):
    sparse = SU.wrap(small_cnn(), budget=10**6, layers=CANDIDATES, seed=0)
    sparse.compile(keras.optimizers.SGD(0.1), LOSS, jit_compile=jit)
    losses = [_set_and_fit(sparse, SMALL), _set_and_fit(sparse, LARGE)]
    before = {w.layer.name: np.asarray(w.kernel).copy() for w in SU.sparse_layers(sparse)}
    losses.append(_set_and_fit(sparse, LARGE))
    return sparse, before, losses


SMALL = {"c1": [1], "pw": [0, 3]}
LARGE = {"c1": [0, 1, 2], "pw": [0, 1, 3, 5], "dw": [2]}


def test_a_selection_that_outgrows_the_traced_slots_rebuilds_the_step():
    """Without a resampler nothing is reserved: a larger selection after the first trace must
    retrace (else XLA would gather too few slots and miss channels)."""
    runs = {jit: _grow(jit) for jit in (False, True)}
    sparse, before, losses = runs[True]
    for w in SU.sparse_layers(sparse):  # the large selection trained exactly its channels
        name = w.layer.name
        moved = np.asarray(w.kernel) != before[name]
        rows = np.any(moved, axis=(0, 1, 3)) if moved.ndim == 4 else np.any(moved, axis=1)
        np.testing.assert_array_equal(np.flatnonzero(rows), LARGE.get(name, []), err_msg=name)
    capacity = {w.layer.name: w.traced_capacity for w in SU.sparse_layers(sparse)}
    assert capacity == {"c1": 3, "dw": 1, "pw": 4, "fc": 1}
    assert all(w.traced_capacity is None for w in SU.sparse_layers(runs[False][0]))
    np.testing.assert_allclose(losses, runs[False][2], rtol=1e-5)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
