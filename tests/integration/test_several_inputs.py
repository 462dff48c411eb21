"""Models with several inputs (token ids and a padding mask): ranking, TraDy fine-tuning under XLA,
the memory analysis and pruning with data take the inputs as Keras does (a dict keyed by input
names, or a list in the order of `model.inputs`)."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

import tf_tradyx as tx
from tf_tradyx._graph import walk
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate

sp = tx.sparse_update
T, V, D = 6, 20, 8


def _token_model():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((T,), dtype="int32", name="token_ids")
    mask = keras.Input((T,), dtype="int32", name="padding_mask")
    h = layers.Embedding(V, D, name="embed")(tokens)
    q, k, v = (layers.Dense(D, name=n)(h) for n in ("q", "k", "v"))
    keep = ops.cast(mask, "float32")
    scores = ops.matmul(q, ops.transpose(k, (0, 2, 1))) / np.sqrt(D)
    scores = scores + (1.0 - keep[:, None, :]) * -1e9
    h = ops.matmul(ops.softmax(scores), v)
    h = layers.Dense(D, activation="gelu", name="ffn")(h)
    pooled = ops.sum(h * keep[:, :, None], axis=1) / ops.sum(keep, axis=1, keepdims=True)
    return keras.Model([tokens, mask], layers.Dense(3, name="head")(pooled))


def _data(n=16):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, (n, T)).astype("int32")
    mask = (np.arange(T)[None, :] < rng.integers(2, T + 1, (n, 1))).astype("int32")
    return {"token_ids": tokens, "padding_mask": mask}, np.arange(n) % 3


def test_rank_layers_takes_dict_inputs_and_scores_the_first_step_gradient():
    model = _token_model()
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    ranking = sp.rank_layers(model, ds, epochs=1, verbose=0)
    assert set(ranking.scores) == {"q", "k", "v", "ffn"}
    # One batch: RGN(l) = sum_c ||dL/dW_l[c, :]|| / units(l), from the gradient before the step.
    table = sp.cost_table(model)
    with tf.GradientTape() as tape:
        logits = model([x["token_ids"], x["padding_mask"]], training=True)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    grads = tape.gradient(loss, [model.get_layer(n).kernel for n in ("q", "ffn")])
    for name, g in zip(("q", "ffn"), grads):
        expected = np.linalg.norm(np.asarray(g), axis=1).sum() / table[name].units_per_channel
        # float32 gradients summed over 16 examples x 6 tokens: relative error well under 1e-4.
        assert ranking.scores[name] == pytest.approx(expected, rel=1e-4)
    # The same data as a list in the order of model.inputs ranks the same.
    listed = sp.rank_layers(model, ([x["token_ids"], x["padding_mask"]], y), epochs=1, verbose=0)
    for name in ranking.scores:
        assert listed.scores[name] == pytest.approx(ranking.scores[name], rel=1e-5)


def test_tradi_fine_tunes_a_two_input_model_under_xla_inside_its_budget():
    model = _token_model()
    table = sp.cost_table(model)
    budget = table.full_units // 4
    wrapped = sp.wrap(model, strategy="static_full_random", budget=budget, seed=0)
    wrapped.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x, y = _data()
    wrappers = walk.layers_of_type(wrapped, ChannelSparseUpdate)
    before = {w.layer.name: np.asarray(w.layer.kernel) for w in wrappers}
    wrapped.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0)
    for w in wrappers:
        frozen = np.setdiff1d(np.arange(w.in_channels), w.get_channels())
        after = np.asarray(w.layer.kernel)
        np.testing.assert_array_equal(after[frozen], before[w.layer.name][frozen])
    assert sp.efficiency(wrapped).units <= budget
    # The backward pass of a TraDy step keeps less than full fine-tuning's on the same model.
    tradi = sp.memory.retained_bytes(wrapped, batch_size=4)["activation"]
    full = sp.memory.retained_bytes(_token_model(), batch_size=4)["activation"]
    assert 0 < tradi < full


def test_snip_prunes_a_two_input_model_with_dict_data_and_masks_hold_through_fit():
    masked = tx.pruning.wrap(_token_model())
    x, y = _data()
    tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.5, (x, y))
    masks = {l.name: [np.asarray(m) for m in l.masks] for l in tx.pruning.masked_layers(masked)}
    assert (
        masks
        and 0.3 < np.mean(np.concatenate([m.ravel() for ms in masks.values() for m in ms])) < 0.7
    )
    masked.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    masked.fit(x, y, epochs=1, verbose=0)
    for layer in tx.pruning.masked_layers(masked):
        for kernel, mask in zip(layer.kernels, layer.masks):
            assert np.all(np.asarray(kernel)[np.asarray(mask) == 0] == 0.0)


def test_inputs_given_by_the_wrong_names_are_refused_by_name():
    model = _token_model()
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices(({"token_ids": x["token_ids"]}, y)).batch(8)
    with pytest.raises(ValueError, match="missing \\['padding_mask'\\]"):
        sp.rank_layers(model, ds, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="'padding_mask' of shape"):
        sp.rank_layers(model, ([x["token_ids"], x["padding_mask"][:, :3]], y), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="one input and one output"):
        tx.pruning.PXPruner(verbose=False).prune(tx.pruning.wrap(model), 0.5, (x, y))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
