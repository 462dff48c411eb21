"""Layer ranking by RGN: one step by hand, a warning for class-sorted data, top-k, save, load, plot."""

import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import LOSS, data, small_cnn

SU = tx.sparse_update


def test_rgn_of_one_step_equals_hand_computation():
    model = small_cnn()
    x, y, _ = data(16)
    ranking = SU.rank_layers(
        model, (x, y), epochs=1, optimizer=keras.optimizers.SGD(0.0), verbose=0
    )
    costs = SU.cost_table(model)
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=False))  # the ranking run freezes BatchNormalization
    grads = tape.gradient(loss, [model.get_layer(n).kernel for n in costs.names])
    for name, g in zip(costs.names, grads):
        axes = (1,) if costs[name].kind == "dense" else (0, 1, 3)
        expected = (np.sqrt((g.numpy() ** 2).sum(axis=axes)) / costs[name].units_per_channel).sum()
        assert ranking.scores[name] == pytest.approx(expected, rel=0, abs=1e-6 * max(1, expected))
    np.testing.assert_array_equal(
        model.get_layer("c1").kernel.numpy(), small_cnn().get_layer("c1").kernel.numpy()
    )  # not modified


@pytest.mark.parametrize("labels", ["sparse", "one_hot"])
def test_class_sorted_data_warns_and_shuffled_data_does_not(labels):
    model = small_cnn()
    x, y, _ = data(64)
    order = np.argsort(y, kind="stable")
    y_sorted = y[order]
    if labels == "one_hot":
        y_sorted = keras.utils.to_categorical(y_sorted, 3)
    sorted_ds = tf.data.Dataset.from_tensor_slices((x[order], y_sorted)).batch(4)
    with pytest.warns(UserWarning, match="sorted by class"):
        SU.rank_layers(
            model,
            sorted_ds,
            epochs=1,
            loss=LOSS
            if labels == "sparse"
            else keras.losses.CategoricalCrossentropy(from_logits=True),
            verbose=0,
        )
    shuffled = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    assert len(np.unique(y[:8])) > 1  # the fixture's order mixes classes
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SU.rank_layers(model, shuffled, epochs=1, verbose=0)


def test_top_k_save_load_plot(tmp_path):
    ranking = SU.LayerRanking({"a": 1.0, "b": 60.0, "c": 30.0, "d": 9.0})
    assert ranking.ranked == ["b", "c", "d", "a"]
    assert ranking.top_k(coverage=0.90) == ["b", "c"]
    assert ranking.top_k(coverage=0.97) == ["b", "c", "d"]  # 99 % >= 97 %
    assert ranking.top_k(coverage=1.0) == ["a", "b", "c", "d"]
    assert ranking.top_k(k=1) == ["b"]
    path = str(tmp_path / "r.json")
    ranking.save(path)
    assert SU.LayerRanking.load(path).scores == ranking.scores
    assert SU.LayerRanking.load(path).spearman(ranking) == pytest.approx(1.0, rel=0, abs=5e-8)
    png = ranking.plot(path.replace(".json", ".png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="not a layer-ranking"):
        SU.LayerRanking.load(path)
    for bad in ({}, {"a": float("nan")}, {"a": -1.0}):
        with pytest.raises(ValueError):
            SU.LayerRanking(bad)
    with pytest.raises(ValueError):
        ranking.top_k(coverage=0.0)


@pytest.mark.parametrize(
    "content",
    [
        b'{"rgn": {"c1": "x"}}',
        b'{"rgn": {"c1": "1.5"}}',
        b'{"rgn": {"c1": [1, 2]}}',
        b'{"rgn": {"c1": {"a": 1}}}',
        b'{"rgn": {"c1": true}}',
        b'{"rgn": {"c1": null}}',
        b'{"rgn": {}}',
        b'{"rgn": {"c1": 1}, "info": [1, 2]}',
        b'{"rgn": {"c1": 1}, "info": "x"}',
        b'{"rgn": {"c1": 1}, "format": "someone.else/2"}',
        b"\xff\xfe{",
        b"[]",
    ],
)
def test_a_malformed_ranking_file_is_refused_by_name(tmp_path, content):
    path = tmp_path / "ranking.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="ranking.json"):
        SU.LayerRanking.load(str(path))


def test_a_ranking_path_that_is_a_folder_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        SU.LayerRanking.load(str(tmp_path))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
