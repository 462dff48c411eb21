"""Recomputed frozen segments: the same gradients as the plain path, a fraction of the retained
bytes on non-ReLU networks, random layers never run twice, and the setting survives a `.keras` file."""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx

sp = tx.sparse_update
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _block(x, name):
    """An inverted-residual block with swish and squeeze-excite, and a residual add."""
    h = keras.layers.Conv2D(32, 1, activation="swish", name=f"{name}_expand")(x)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(h)
    h = keras.layers.Activation("gelu", name=f"{name}_gelu")(h)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    se = keras.layers.Conv2D(8, 1, activation="relu", name=f"{name}_se1")(se)
    se = keras.layers.Conv2D(32, 1, activation="sigmoid", name=f"{name}_se2")(se)
    h = keras.layers.Multiply()([h, se])
    h = keras.layers.Conv2D(8, 1, name=f"{name}_project")(h)
    h = keras.layers.LayerNormalization(name=f"{name}_ln")(h)
    return keras.layers.Add()([x, h])


def _model(dropout=0.0):
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((16, 16, 8))
    inner = keras.Model(inner_in, _block(_block(inner_in, "b1"), "b2"), name="backbone")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="hard_swish", name="stem")(inputs)
    x = inner(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = _block(x, "b3")
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


LAYERS = ["b1_expand", "b1_project", "b2_expand", "b2_dw", "b3_expand", "b3_project"]
X = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
Y = np.array([0, 1, 2, 3])


def _wrap(model, recompute):
    budget = sp.cost_table(model).full_units // 10
    return sp.wrap(model, budget=budget, layers=LAYERS, strategy="tradi", recompute=recompute)


def _grads(model):
    with tf.GradientTape() as tape:
        loss = LOSS(Y, model(X, training=True))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def _retained(model):
    kept = sp.memory.retained_bytes(model, batch_size=2, loss=LOSS)
    return kept["activation"] + kept["mask"]


def test_gradients_equal_the_plain_path_and_retained_bytes_drop():
    model = _model()
    plain, segmented = _wrap(model, False), _wrap(model, True)
    assert sp.recompute.installed(plain) is None and sp.recompute.installed(segmented)
    np.testing.assert_allclose(segmented(X).numpy(), plain(X).numpy(), rtol=1e-6, atol=1e-6)
    for a, b in zip(_grads(segmented), _grads(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    full, without, with_ = _retained(model), _retained(plain), _retained(segmented)
    assert with_ < 0.5 * without and with_ <= 0.10 * full, (full, without, with_)


def test_auto_turns_it_on_only_where_float_maps_would_be_kept():
    assert sp.recompute.installed(_wrap(_model(), "auto"))
    relu = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, name="c0"),
            keras.layers.MaxPooling2D(2),  # keeps float maps, but only matters after c0 trains
            keras.layers.Conv2D(8, 1, name="c1"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(8, 1, name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="fc"),
        ]
    )
    # A ReLU network past its earliest wrapped layer: bit masks already; cuts would cost more.
    wrapped = sp.wrap(relu, budget=10**6, layers=["c1", "c2"], strategy="tradi")
    assert sp.recompute.installed(wrapped) is None
    wrapped = sp.wrap(relu, budget=10**6, layers=["c0", "c2"], strategy="tradi")
    assert sp.recompute.installed(wrapped) is not None
    with pytest.raises(ValueError, match="recompute must be"):
        sp.wrap(relu, budget=10**6, layers=["c1"], strategy="tradi", recompute="yes")


def test_random_layers_run_once_and_are_never_recomputed():
    model = _wrap(_model(dropout=0.5), True)
    forward = sp.recompute.installed(model)
    for segment in forward.segments:
        ops = [s.op for s in segment.steps if hasattr(s, "op")]
        if any(isinstance(op, keras.layers.Dropout) for op in ops):
            assert not segment.recompute and len(segment.steps) == 1
    # Each segment of at most MAX_STEPS steps; together they are the whole graph, once.
    steps = [s for seg in forward.segments for s in seg.steps]
    assert len(steps) == len(forward.steps)
    assert max(len(seg.steps) for seg in forward.segments) <= sp.recompute.MAX_STEPS


def test_it_trains_under_xla_like_the_graph_path_and_survives_a_keras_file(tmp_path):
    runs = []
    for jit in (False, True):
        model = _wrap(_model(), True)
        model.compile(keras.optimizers.SGD(0.05), LOSS, jit_compile=jit)
        history = model.fit(X, Y, batch_size=2, epochs=2, verbose=0, shuffle=False)
        runs.append((history.history["loss"], [np.asarray(v) for v in model.trainable_weights]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-4)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = sp.attach(keras.models.load_model(path))
    assert sp.recompute.installed(loaded) is not None
    np.testing.assert_allclose(loaded(X).numpy(), model(X).numpy(), rtol=1e-5, atol=1e-6)
    plain = sp.strip(loaded)
    assert sp.recompute.installed(plain) is None


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
