"""The pruning report (table, dict, JSON, plot, connectivity, sign balance) and the sanity
transforms applied to a pruned model."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import pruning_cnn


def test_report_table_dict_plot_and_sanity_transforms(tmp_path):
    masked = tx.pruning.wrap(pruning_cnn())
    report = tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.9)
    d = report.as_dict()
    assert d["totals"]["kept"] == report.kept and d["method"] == "magnitude"
    assert "c1/kernel" in str(report) and "total" in str(report)
    report.to_json(tmp_path / "r.json")
    png = tx.pruning.plot_layer_density(report, str(tmp_path / "density.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Output-channel connectivity from a hand-made mask.
    w = tx.pruning.masked_layers(masked)[0]
    mask = np.zeros(w.masks[0].shape, np.float32)
    mask[0, 0, 0, :4] = 1
    w.masks[0].assign(mask)
    assert tx.pruning.report(masked).rows[0]["connected_outputs"] == 0.5
    kernel = np.asarray(w.kernels[0]).copy()
    kernel[0, 0, 0, :4] = [1.0, -2.0, 3.0, 4.0]
    kernel[1, 1, 1, :] = -1.0  # pruned weights do not count towards the sign balance
    w.kernels[0].assign(kernel)
    assert tx.pruning.report(masked).rows[0]["kept_positive"] == 0.75
    dw = tx.pruning.masked_layers(masked)[1]  # Depthwise (3, 3, 8, 1): 8 output channels.
    mask = np.zeros(dw.masks[0].shape, np.float32)
    mask[1, 1, :2, 0] = 1
    dw.masks[0].assign(mask)
    assert tx.pruning.report(masked).rows[1]["connected_outputs"] == 0.25
    # Sanity transforms keep per-layer counts and zero the pruned weights.
    before = [(r["name"], r["kept"]) for r in tx.pruning.report(masked).rows]
    old = np.asarray(tx.pruning.masked_layers(masked)[2].masks[0]).copy()
    tx.pruning.shuffle_masks(masked, seed=1)
    assert [(r["name"], r["kept"]) for r in tx.pruning.report(masked).rows] == before
    assert not np.array_equal(np.asarray(tx.pruning.masked_layers(masked)[2].masks[0]), old)
    old_values = np.asarray(tx.pruning.masked_layers(masked)[2].kernels[0]).copy()
    tx.pruning.reinitialize(masked, seed=2)
    for w in tx.pruning.masked_layers(masked):
        for var, m in zip(w.kernels, w.masks):
            assert np.all(np.asarray(var)[np.asarray(m) == 0] == 0)
    assert not np.array_equal(
        np.asarray(tx.pruning.masked_layers(masked)[2].kernels[0]), old_values
    )


def test_the_report_says_what_share_of_the_model_the_sparsity_covers_and_warns_when_small():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(100, 16)(inputs)  # 1,600 weights, left unmasked by skip=
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(h))  # 64 + 4 bias
    masked = tx.pruning.wrap(model, skip=[keras.layers.Embedding])
    x = np.random.default_rng(0).integers(0, 100, (8, 5)).astype("int32")
    with pytest.warns(UserWarning, match="hold only 3.8% of the model's 1,668 trainable weights"):
        report = tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    assert report.model_weights == 1600 + 64 + 4
    assert report.coverage == pytest.approx(64 / 1668)
    assert report.model_sparsity == pytest.approx(32 / 1668)
    assert "the model as a whole is 1.9% sparse" in str(report)
    assert report.as_dict()["totals"]["coverage"] == pytest.approx(64 / 1668)
    assert np.isfinite(masked(x)).all()


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
