"""KerasHub models (tiny configurations, random weights; KerasHub is a test dependency and the
`hub` extra): a Functional model around a backbone is walked into (its graph is Keras'), costed,
ranked, fine-tuned under XLA with its dict inputs, and pruned with an honest coverage figure."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tf_tradyx._graph import walk
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate

keras_hub = pytest.importorskip("keras_hub")
sp = tx.sparse_update
T = 8
NAMES = ("token_ids", "segment_ids", "padding_mask")


def _bert_classifier():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=T,
    )
    inputs = {n: keras.Input((T,), dtype="int32", name=n) for n in NAMES}
    pooled = backbone(inputs)["pooled_output"]
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(pooled))


def _data(n=16):
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(0, 50, (n, T)).astype("int32"),
        "segment_ids": np.zeros((n, T), "int32"),
        "padding_mask": (np.arange(T)[None] < rng.integers(2, T + 1, (n, 1))).astype("int32"),
    }
    return x, np.arange(n) % 2


def test_a_bert_backbone_is_walked_costed_ranked_and_fine_tuned_under_xla():
    model = _bert_classifier()
    table = sp.cost_table(model)
    # The backbone's graph is walked: its pooler is a layer called once (not "called 0 times"),
    # and the block's projections and feed-forward layers are rows named by their path.
    assert table.names[-1] == "pooled_dense"
    assert "transformer_layer_0/self_attention_layer/query" in table
    assert table["pooled_dense"].units_per_channel == 8 + 1  # 8 outputs, one (CLS) position
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    ranking = sp.rank_layers(model, ds, epochs=1, verbose=0)
    assert set(ranking.scores) == set(table.names) and ranking.scores["pooled_dense"] > 0
    wrapped = sp.wrap(model, layers=["pooled_dense"], budget=40, seed=0)
    wrapped.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    (w,) = walk.layers_of_type(wrapped, ChannelSparseUpdate)
    before = np.asarray(w.layer.kernel)
    wrapped.fit(ds, epochs=2, verbose=0)
    frozen = np.setdiff1d(np.arange(w.in_channels), w.get_channels())
    np.testing.assert_array_equal(np.asarray(w.layer.kernel)[frozen], before[frozen])
    assert not np.array_equal(np.asarray(w.layer.kernel), before)
    assert sp.efficiency(wrapped).units <= 40


def test_pruning_a_bert_model_masks_the_kernels_inside_its_transformer_layers():
    masked = tx.pruning.wrap(_bert_classifier())
    names = [n for w in tx.pruning.masked_layers(masked) for n in w.kernel_names]
    assert "transformer_layer_0/self_attention_layer/query/kernel" in names
    assert "transformer_layer_0/feedforward_output_dense/kernel" in names
    x, y = _data()
    report = tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.5, (x, y))
    assert report.density == pytest.approx(0.5, abs=0.02)
    # Token, segment and attention kernels, the feed-forward and pooler: all but the position
    # embedding, biases and LayerNormalization parameters (about 15% of this tiny model).
    assert report.coverage > 0.8 and report.model_sparsity > 0.4
    assert report.coverage_message() is None


def test_a_vit_model_is_masked_inside_its_blocks_without_rebuilding_them_from_their_configs():
    """KerasHub 0.32's ViT patching layer does not round-trip its config; the backbone is rebuilt
    whole from its own arguments and its new layers are masked as they are, the patch embedding
    and every attention and MLP kernel of the encoder included."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(backbone(inputs)[:, 0]))
    masked = tx.pruning.wrap(model)
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(masked(x), model(x), rtol=1e-6, atol=1e-6)
    report = tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.5, (x, np.arange(8) % 2))
    assert report.coverage > 0.9 and report.coverage_message() is None
    assert "vit_encoder/transformer_block_2/mlp/dense_2/kernel" in [r["name"] for r in report.rows]
    plain = tx.pruning.strip(masked)
    np.testing.assert_allclose(plain(x), masked(x), rtol=1e-6, atol=1e-6)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
