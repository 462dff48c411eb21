"""The baselines against direct computations: SNIP, SynFlow, GraSP's Hessian-gradient product,
magnitude, random, and SynFlow's per-layer densities against the Synaptic-Flow implementation."""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import TESTDATA, pruning_cnn, pruning_data
from tf_tradyx.pruning.pruner import Session


def _scores(pruner, masked, data=None):
    return pruner.score(masked, data)


def test_snip_equals_direct_gradient_times_weight():
    model = pruning_cnn()
    masked = tx.pruning.wrap(model)
    x, y = pruning_data()
    got = _scores(tx.pruning.SNIPPruner(verbose=False), masked, (x, y))
    variables = [v for w in tx.pruning.masked_layers(masked) for v in w.kernels]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(
                y, masked(x, training=False), from_logits=True
            )
        )
    grads = tape.gradient(loss, variables)
    raw = [np.abs(np.asarray(v) * g.numpy()) for v, g in zip(variables, grads)]
    total = sum(r.sum() for r in raw)
    for (name, s), r in zip(got.items(), raw):
        np.testing.assert_allclose(s, r / total, rtol=1e-4, atol=1e-12, err_msg=name)
    assert abs(sum(s.sum() for s in got.values()) - 1) < 1e-6


def test_snip_reads_softmax_outputs_as_probabilities():
    model = pruning_cnn(softmax=True)
    masked = tx.pruning.wrap(model)
    x, y = pruning_data()
    got = _scores(tx.pruning.SNIPPruner(verbose=False), masked, (x, y))
    variables = [v for w in tx.pruning.masked_layers(masked) for v in w.kernels]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, masked(x)))
    raw = [
        np.abs(np.asarray(v) * g.numpy()) for v, g in zip(variables, tape.gradient(loss, variables))
    ]
    np.testing.assert_allclose(got["c1/kernel"], raw[0] / sum(r.sum() for r in raw), rtol=1e-4)


def test_synflow_equals_direct_computation_on_an_absolute_copy():
    model = pruning_cnn()
    masked = tx.pruning.wrap(model)
    tx.pruning.RandomPruner(verbose=False).prune(masked, 0.3)
    got = _scores(tx.pruning.SynFlowPruner(verbose=False), masked)
    # Direct: a float64 copy with every parameter (and BN statistic) made positive and every
    # activation linear (SynFlow scores the linearised network).
    plain = tx.pruning.strip(masked)

    def linearised(layer):
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
            return keras.layers.Activation("linear", dtype="float64", name=layer.name)
        config = {**layer.get_config(), "dtype": "float64"}
        if "activation" in config:
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    keras.config.set_floatx("float64")
    try:
        copy = keras.models.clone_model(plain, clone_function=linearised)
    finally:
        keras.config.set_floatx("float32")
    for a, b in zip(plain.layers, copy.layers):
        b.set_weights([np.abs(w).astype(np.float64) for w in a.get_weights()])
    kernels = {
        f"{l.name}/{n}": getattr(l, n)
        for l in copy.layers
        for n in ("kernel", "depthwise_kernel", "pointwise_kernel")
        if hasattr(l, n) and not (n == "kernel" and hasattr(l, "depthwise_kernel"))
    }
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(copy(tf.ones((1, 8, 8, 3), tf.float64), training=False))
    grads = tape.gradient(total, list(kernels.values()))
    for (name, var), g in zip(kernels.items(), grads):
        expected = np.abs(np.asarray(var) * g.numpy())
        np.testing.assert_allclose(got[name], expected, rtol=1e-9, atol=1e-300, err_msg=name)


def test_grasp_hessian_gradient_product_matches_finite_differences():
    model = pruning_cnn(dtype="float64")  # Finite differences need float64 to resolve H g.
    keras.config.set_floatx("float64")
    try:
        masked = tx.pruning.wrap(model)
    finally:
        keras.config.set_floatx("float32")
    x, y = pruning_data()
    x = x.astype(np.float64)
    pruner = tx.pruning.GraSPPruner(verbose=False)
    session = Session(pruner, masked, (x, y))
    hg = pruner.hessian_gradient_product(session)
    variables = [e.variable for e in session.entries]

    def grad_at(shift):
        originals = [np.asarray(v).copy() for v in variables]
        for v, s in zip(variables, shift):
            v.assign(np.asarray(v) + s)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    y, masked(x, training=False) / 200.0, from_logits=True
                )
            )
        grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]
        for v, o in zip(variables, originals):
            v.assign(o)
        return grads

    g = grad_at([np.zeros(v.shape) for v in variables])
    norm = np.sqrt(sum((a**2).sum() for a in g))
    eps = 1e-6 / norm  # Small enough not to cross ReLU kinks, float64 resolves it.
    plus = grad_at([eps * a for a in g])
    minus = grad_at([-eps * a for a in g])
    fd = [(p - m) / (2 * eps) for p, m in zip(plus, minus)]
    flat_fd = np.concatenate([f.ravel() for f in fd])
    flat_hg = np.concatenate([h.ravel() for h in hg])
    cos = flat_fd @ flat_hg / np.linalg.norm(flat_fd) / np.linalg.norm(flat_hg)
    assert cos > 0.995, cos  # FD noise: ReLU and max-pool kinks; a wrong H g gives < 0.5.
    np.testing.assert_allclose(np.linalg.norm(flat_hg), np.linalg.norm(flat_fd), rtol=0.03)
    scores = pruner.score(masked, (x, y))
    assert any((s < 0).any() for s in scores.values())  # GraSP scores are signed.


def test_magnitude_and_random():
    masked = tx.pruning.wrap(pruning_cnn())
    mags = _scores(tx.pruning.MagnitudePruner(verbose=False), masked)
    w = tx.pruning.masked_layers(masked)[0]
    np.testing.assert_array_equal(mags["c1/kernel"], np.abs(np.asarray(w.kernels[0])))
    r1 = _scores(tx.pruning.RandomPruner(seed=5, verbose=False), masked)
    r2 = _scores(tx.pruning.RandomPruner(seed=5, verbose=False), masked)
    r3 = _scores(tx.pruning.RandomPruner(seed=6, verbose=False), masked)
    np.testing.assert_array_equal(r1["fc/kernel"], r2["fc/kernel"])
    assert not np.array_equal(r1["fc/kernel"], r3["fc/kernel"])
    report = tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    kept = np.concatenate(
        [
            np.asarray(w.kernels[i]).ravel()[np.asarray(w.masks[i]).ravel() > 0]
            for w in tx.pruning.masked_layers(masked)
            for i in range(len(w.kernels))
        ]
    )
    all_w = np.concatenate([s.ravel() for s in mags.values()])
    assert np.abs(kept).min() >= np.sort(all_w)[len(all_w) - report.kept - 1]


@pytest.mark.slow
def test_synflow_profile_matches_synaptic_flow_on_resnet20():
    """Per-layer densities vs the Synaptic-Flow implementation's (tests/testdata, 5 seeds)."""
    path = os.path.join(TESTDATA, "synaptic_flow_synflow_resnet20.json")
    with open(path) as f:
        reference = json.load(f)["profiles"]
    for sparsity in ("0.8926", "0.982"):
        keras.utils.set_random_seed(0)
        masked = tx.pruning.wrap(tx.models.resnet20())
        report = tx.pruning.SynFlowPruner(rounds=100, verbose=False).prune(masked, float(sparsity))
        ours = np.array([r["density"] for r in report.rows])
        theirs = np.array(reference[sparsity]["mean"])
        assert np.max(np.abs(ours - theirs)) < 0.05, (sparsity, np.round(ours - theirs, 3))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
