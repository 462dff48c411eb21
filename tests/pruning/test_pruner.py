"""The pruning loop: exact density every round for every method, scope and min_density, emptied
layers, bad input restored, scoring that modifies nothing, and the one-call prune_at_init."""

import gc
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import pruning_cnn, pruning_data, tiny_cnn, tiny_data

SP = tx.sparse_update


@pytest.mark.parametrize(
    "method",
    ["px", "synflow", "itersnip", "snip", "grasp", "ntk_sap", "prospr", "magnitude", "random"],
)
def test_every_method_hits_the_exact_density_on_a_model_with_bn_pool_and_skip(method):
    masked = tx.pruning.wrap(pruning_cnn())
    x, y = pruning_data()
    pruner = tx.pruning.get_pruner(method, rounds=4, verbose=False)
    report = pruner.prune(masked, 0.8, (x, y))
    total = report.total
    expected = [round(d * total) for d in tx.pruning.ExponentialSchedule().densities(0.2, 4)]
    assert [h["kept"] for h in report.meta["history"]] == expected
    out = masked(x)
    assert np.all(np.isfinite(out))


def test_local_scope_min_density_and_pruner_skip():
    masked = tx.pruning.wrap(pruning_cnn())
    x, y = pruning_data()
    report = tx.pruning.SynFlowPruner(rounds=3, scope="local", verbose=False).prune(masked, 0.75)
    for row in report.rows:
        assert row["kept"] == pytest.approx(0.25 * row["weights"], abs=3)
    masked = tx.pruning.wrap(pruning_cnn())
    report = tx.pruning.PXPruner(rounds=10, min_density=0.03, verbose=False).prune(
        masked, 0.95, (x, y)
    )
    assert all(r["density"] >= 0.03 - 1e-9 for r in report.rows)
    assert report.kept == round(0.05 * report.total)
    masked = tx.pruning.wrap(pruning_cnn())
    report = tx.pruning.PXPruner(rounds=2, skip=["fc"], verbose=False).prune(masked, 0.9, (x, y))
    fc = [r for r in report.rows if r["name"] == "fc/kernel"][0]
    assert fc["density"] == 1.0


def test_an_emptied_layer_is_reported_and_warned_about_and_min_density_prevents_it():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="d1"),
            keras.layers.Dense(4, name="d2"),
            keras.layers.Dense(2, name="d3"),
        ]
    )
    d2 = model.get_layer("d2")
    d2.set_weights([np.full((4, 4), 1e-3, np.float32), np.zeros(4, np.float32)])
    masked = tx.pruning.wrap(model)
    # 36 weights, 18 kept by magnitude: all of them fit in d1 (12) and d3 (8), so d2 empties.
    with pytest.warns(
        UserWarning,
        match=r"1 layer\(s\) kept no weight: d2/kernel\. The network is cut.*min_density",
    ):
        report = tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    assert report.collapsed == ["d2/kernel"] and report.connected == 0.0
    assert report.as_dict()["totals"]["collapsed"] == ["d2/kernel"]
    assert report.as_dict()["totals"]["connected"] == 0.0
    assert "kept no weight: d2/kernel. The network is cut" in str(report)
    masked = tx.pruning.wrap(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = tx.pruning.MagnitudePruner(min_density=0.1, verbose=False).prune(masked, 0.5)
    assert report.collapsed == [] and "collapsed" not in str(report)
    kept = [r["kept"] for r in report.rows]
    assert sum(kept) == 18 and kept[1] == 2  # ceil(0.1 * 16) forced into d2, the rest by magnitude


def _residual_model():
    """d1 -> (d2 branch + shortcut) -> d3, and a second output head fed only by the branch."""
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, name="d1")(inputs)
    branch = keras.layers.Dense(4, name="d2", kernel_initializer=keras.initializers.Constant(1e-3))(
        h
    )
    h = keras.layers.Add()([h, branch])
    return keras.Model(inputs, keras.layers.Dense(2, name="d3")(h))


def test_an_emptied_residual_branch_is_reported_as_not_cutting_the_network():
    """Emptying a branch that has a shortcut leaves every output joined to the input: the report
    says so instead of claiming a cut; a mask that cuts part of the outputs is reported as such."""
    keras.utils.set_random_seed(0)
    masked = tx.pruning.wrap(_residual_model())
    with pytest.warns(UserWarning, match="d2/kernel. Every output is still joined to the input"):
        report = tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    assert report.collapsed == ["d2/kernel"] and report.connected == 1.0
    # Cut one of the two outputs by hand: no kept weight reaches output unit 1.
    head = masked.get_layer("masked_d3")
    head.masks[0].assign(np.array([[1, 0]] * 4, np.float32))
    assert tx.pruning.report(masked).connected == 0.5
    head.masks[0].assign(np.zeros((4, 2), np.float32))
    assert tx.pruning.report(masked).connected == 0.0


def test_connected_is_computed_on_demand_from_the_masks_at_report_time():
    """`connected` costs a pass of the network, so a report computes it only when read; what it
    reads are the masks as they were when the report was made, not as they are later."""
    keras.utils.set_random_seed(0)
    masked = tx.pruning.wrap(_residual_model())
    head = masked.get_layer("masked_d3")
    before = tx.pruning.report(masked)
    head.masks[0].assign(np.zeros((4, 2), np.float32))  # cuts the network after the report
    assert before.connected == 1.0
    after = tx.pruning.report(masked)
    head.masks[0].assign(np.ones((4, 2), np.float32))
    assert after.connected == 0.0 and after.as_dict()["totals"]["connected"] == 0.0
    assert tx.pruning.report(masked, connectivity=False).connected is None
    unread = tx.pruning.report(masked)
    del masked, head
    gc.collect()
    assert unread.connected is None  # a report does not keep its model alive to compute it


def test_bad_input_is_rejected_and_model_unchanged():
    masked = tx.pruning.wrap(pruning_cnn())
    x, y = pruning_data()
    snapshot = [np.asarray(v).copy() for v in masked.weights]
    for bad in (1.0, -0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="sparsity"):
            tx.pruning.PXPruner(verbose=False).prune(masked, bad, (x, y))
    with pytest.raises(ValueError, match="does not fit the model input"):
        tx.pruning.PXPruner(verbose=False).prune(masked, 0.5, (np.zeros((4, 9, 9, 3)), np.zeros(4)))
    with pytest.raises(ValueError, match="needs labels"):
        tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.5, x)
    with pytest.raises(ValueError, match="pass data="):
        tx.pruning.PXPruner(verbose=False).prune(masked, 0.5)
    with pytest.raises(ValueError, match="rounds"):
        tx.pruning.PXPruner(rounds=0)
    with pytest.raises(ValueError, match="Unknown pruning method"):
        tx.pruning.get_pruner("obd")
    # Non-finite inputs are refused up front, naming the data.
    x_bad = x.copy()
    x_bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="holds NaN or Inf"):
        tx.pruning.PXPruner(rounds=3, verbose=False).prune(masked, 0.5, (x_bad, y))

    # Non-finite scores mid-way (round 2 of 3): every mask and weight is restored.
    class FailsInRoundTwo(tx.pruning.MagnitudePruner):
        def _scores(self, session):
            scores = super()._scores(session)
            return [s * np.nan for s in scores] if session.round == 2 else scores

    with pytest.raises(FloatingPointError, match="non-finite"):
        FailsInRoundTwo(rounds=3, verbose=False).prune(masked, 0.5, (x, y))
    for v, s in zip(masked.weights, snapshot):
        np.testing.assert_array_equal(np.asarray(v), s)


def test_prune_at_init_one_call():
    model = pruning_cnn()
    x, y = pruning_data()
    masked = tx.pruning.prune_at_init(
        model, method="px", sparsity=0.9, data=(x, y), rounds=5, verbose=False
    )
    assert masked.pruning_report.density == pytest.approx(0.1, abs=1 / masked.pruning_report.total)
    assert masked.pruning_report.meta["method"] == "px"


@pytest.mark.parametrize(
    "method", ["px", "synflow", "snip", "grasp", "ntk_sap", "prospr", "magnitude", "random"]
)
def test_scoring_leaves_weights_and_bn_statistics_untouched(method):
    masked = tx.pruning.wrap(pruning_cnn())
    x, y = pruning_data()
    before = [np.asarray(v).copy() for v in masked.weights]
    tx.pruning.get_pruner(method, verbose=False).score(masked, (x, y))
    for v, b in zip(masked.weights, before):
        np.testing.assert_array_equal(np.asarray(v), b, err_msg=v.path)


@pytest.mark.parametrize(
    "pruner", [tx.pruning.PXPruner, tx.pruning.SynFlowPruner, tx.pruning.SNIPPruner]
)
def test_every_path_through_a_zero_head_scores_zero_and_pruning_refuses(pruner):
    """The README's old recipe (a zero-initialized head) made every score 0, and pruning removed
    weights by position. Now the round is refused, the model left as it was."""
    model = tiny_cnn()
    head = model.get_layer("head")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    masked = tx.pruning.wrap(model, skip=["head"])
    before = [np.asarray(v).copy() for v in masked.weights]
    x, y = next(iter(tiny_data()))
    with pytest.raises(ValueError, match="score exactly 0.*by position"):
        pruner(rounds=2, verbose=False).prune(masked, 0.5, (x.numpy(), y.numpy()))
    for a, b in zip(before, masked.weights):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_a_round_whose_scores_are_mostly_zero_warns_and_ranks_the_rest():
    """Most weights of the network score 0 (a big layer of zeros) but enough do not: the round
    runs on those, and says loudly that most scores were zero."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(64, name="big", kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="small")(h))
    masked = tx.pruning.wrap(model)
    with pytest.warns(UserWarning, match="256 of the 448 remaining weights score exactly 0"):
        report = tx.pruning.MagnitudePruner(rounds=1, verbose=False).prune(masked, 0.6)
    small = masked.get_layer("masked_small").masks[0].numpy()
    assert report.kept == 179 and small.sum() == 179  # only nonzero-scored weights kept


def test_weights_that_only_meet_padding_score_zero_and_the_round_says_so():
    """A 3x3 conv on a 1x1 map: its eight outer taps only ever multiply padding, so every
    path-based score is exactly 0 there (DenseNet121 at 32 px has 524,288 such weights). They
    are a minority here: the round keeps every scored weight, warns, fills up by position."""
    inputs = keras.Input((1, 1, 4))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    masked = tx.pruning.wrap(keras.Model(inputs, keras.layers.Dense(40, name="fc")(h)))
    scores = tx.pruning.SynFlowPruner(verbose=False).score(masked)
    conv = scores["conv/kernel"]
    assert np.all(conv[1, 1] > 0) and np.count_nonzero(conv) == 32  # only the centre tap
    with pytest.warns(UserWarning, match="keeps 74 of them, chosen by position"):
        tx.pruning.SynFlowPruner(rounds=1, verbose=False).prune(masked, 0.3)
    mask = masked.get_layer("masked_conv").masks[0].numpy()
    assert np.all(mask[1, 1] == 1) and np.all(masked.get_layer("masked_fc").masks[0].numpy() == 1)


def test_infinite_or_oversized_data_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.setattr(tx.pruning.pruning_data, "MAX_PRUNING_BATCHES", 1_000)
    ds = tiny_data().repeat()
    with pytest.raises(ValueError, match="infinite dataset"):
        tx.pruning.SNIPPruner(verbose=False).prune(tx.pruning.wrap(tiny_cnn()), 0.5, ds)
    with pytest.raises(ValueError, match="infinite dataset"):
        SP.rank_layers(tiny_cnn(), ds, epochs=1, verbose=0)
    SP.rank_layers(tiny_cnn(), ds, epochs=1, steps_per_epoch=2, verbose=0)  # bounded: fine
    unknown = tiny_data().repeat().filter(lambda x, y: True)  # cardinality unknown, endless
    assert int(unknown.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    masked = tx.pruning.wrap(tiny_cnn())
    before = [np.asarray(v).copy() for v in masked.weights]
    with pytest.raises(Exception, match="more than 1,000 batches"):
        tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.5, unknown)
    for a, b in zip(before, masked.weights):
        np.testing.assert_array_equal(a, np.asarray(b))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
