"""NTK-SAP and ProsPr against independent references: a numpy network differentiated by central
finite differences in float64 (NTK-SAP's output-change objective over the pruner's own draws;
ProsPr's loss after SGD steps with hand-written backpropagation), BatchNormalization with the clean
network's batch statistics set by hand, the limit where ProsPr is SNIP, and bad arguments."""

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import pruning_cnn, pruning_data


def _mlp(seed=0, inputs=5, hidden=4, classes=3):
    """Dense-ReLU-Dense in float64 with nonzero biases (they enter both references)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((inputs,), dtype="float64"),
            keras.layers.Dense(hidden, activation="relu", dtype="float64", name="d1"),
            keras.layers.Dense(classes, dtype="float64", name="d2"),
        ]
    )
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(0, 0.3, bias.shape)])
    return model


def _forward(x, w1, b1, w2, b2):
    z1 = x @ w1 + b1
    return z1, np.maximum(z1, 0), np.maximum(z1, 0) @ w2 + b2


def _central_difference(objective, masks, h=1e-6):
    grads = []
    for i, m in enumerate(masks):
        g = np.zeros_like(m)
        for j in np.ndindex(m.shape):
            up = [k.copy() for k in masks]
            down = [k.copy() for k in masks]
            up[i][j] += h
            down[i][j] -= h
            g[j] = (objective(up) - objective(down)) / (2 * h)
        grads.append(g)
    return grads


def test_ntk_sap_scores_equal_finite_differences_of_the_output_change():
    masked = tx.pruning.wrap(_mlp())
    pruner = tx.pruning.NTKSAPPruner(samples=3, epsilon=0.05, batch_size=6, seed=4, verbose=False)
    tx.pruning.RandomPruner(seed=1, verbose=False).prune(masked, 0.3)  # some masks already 0
    masks = [np.asarray(m) for w in tx.pruning.masked_layers(masked) for m in w.masks]
    b1, b2 = (np.asarray(masked.get_layer(n).layer.bias) for n in ("masked_d1", "masked_d2"))
    draws = pruner.draws(masked, round_number=0)
    assert len(draws) == 3

    def change(m):
        total = 0.0
        for d in draws:
            (k1, k2), (n1, n2) = d.kernels, d.perturbations
            clean = _forward(d.inputs, m[0] * k1, b1, m[1] * k2, b2)[2]
            noisy = (m[0] * (k1 + 0.05 * n1), b1, m[1] * (k2 + 0.05 * n2), b2)
            perturbed = _forward(d.inputs, *noisy)[2]
            total += np.sum((clean - perturbed) ** 2)
        return total

    expected = [np.abs(g) for g in _central_difference(change, masks)]
    got = list(pruner.score(masked).values())  # score() scores round 0
    for g, e in zip(got, expected):
        # float64 throughout; the objective is a polynomial of degree 4 in m between ReLU kinks,
        # so the central difference errs by O(h^2) ~ 1e-12 relative to the largest score.
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-9 * max(x.max() for x in expected))
    # The model's own weights were not touched by the draws.
    assert not np.allclose(
        np.asarray(masked.get_layer("masked_d1").layer.kernel), draws[0].kernels[0]
    )


def test_ntk_sap_draws_are_seeded_by_round_and_follow_each_layers_initializer():
    masked = tx.pruning.wrap(_mlp())
    pruner = tx.pruning.NTKSAPPruner(samples=2, batch_size=4, seed=3, verbose=False)
    a, b = pruner.draws(masked, 0), pruner.draws(masked, 0)
    np.testing.assert_array_equal(a[1].kernels[0], b[1].kernels[0])
    assert not np.array_equal(a[0].kernels[0], a[1].kernels[0])  # samples differ
    assert not np.array_equal(a[0].inputs, pruner.draws(masked, 1)[0].inputs)  # rounds differ
    # Dense's default initializer is Glorot uniform: bounded by sqrt(6 / (fan_in + fan_out)).
    big = tx.pruning.NTKSAPPruner(samples=40, batch_size=1, seed=0).draws(masked, 0)
    kernels = np.concatenate([d.kernels[0].ravel() for d in big])
    limit = np.sqrt(6 / (5 + 4))
    assert kernels.max() <= limit and kernels.min() >= -limit
    assert kernels.std() == pytest.approx(limit / np.sqrt(3), rel=0.1)


def test_ntk_sap_normalizes_both_networks_with_the_clean_batch_statistics():
    """conv -> BN (-> ...): the reference sets the BN layer's moving statistics by hand to the
    clean network's batch statistics on the draw's inputs, then differentiates the output change
    by central differences of the masks, running the masked model itself (float64)."""
    masked = tx.pruning.wrap(pruning_cnn(dtype="float64"))
    pruner = tx.pruning.NTKSAPPruner(samples=1, epsilon=0.01, batch_size=5, seed=2, verbose=False)
    draw = pruner.draws(masked, 0)[0]
    got = pruner.score(masked)
    entries = pruner.entries(masked)
    bn = masked.get_layer("bn1")
    for e, k in zip(entries, draw.kernels):
        e.variable.assign(k)
    bn.gamma.assign(np.ones(bn.gamma.shape))
    bn.beta.assign(np.zeros(bn.beta.shape))
    pre = np.asarray(masked.get_layer("masked_c1")(draw.inputs))
    bn.moving_mean.assign(pre.mean(axis=(0, 1, 2)))  # constants: not recomputed as m moves
    bn.moving_variance.assign(pre.var(axis=(0, 1, 2)))
    noisy = [k + 0.01 * d for k, d in zip(draw.kernels, draw.perturbations)]

    def change(entry, index, shift):
        mask = np.ones(entry.mask.shape)
        mask[index] += shift
        entry.mask.assign(mask)
        outs = []
        for kernels in (draw.kernels, noisy):
            for e, k in zip(entries, kernels):
                e.variable.assign(k)
            outs.append(np.asarray(masked(draw.inputs, training=False)))
        entry.mask.assign(np.ones(entry.mask.shape))
        return np.sum((outs[0] - outs[1]) ** 2)

    rng = np.random.default_rng(0)
    for e in entries:
        top = got[e.name].max()
        for flat in rng.choice(e.size, 3, replace=False):
            index = np.unravel_index(flat, e.mask.shape)
            h = 1e-4  # J is smooth in m here; O(h^2) truncation ~1e-8 relative
            fd = (change(e, index, h) - change(e, index, -h)) / (2 * h)
            assert got[e.name][index] == pytest.approx(abs(fd), rel=1e-5, abs=1e-7 * top), (
                e.name,
                index,
            )


def _prospr_reference(model, x, y, steps, lr, momentum):
    w1, b1 = (np.asarray(v) for v in model.get_layer("masked_d1").layer.weights)
    w2, b2 = (np.asarray(v) for v in model.get_layer("masked_d2").layer.weights)
    onehot = np.eye(w2.shape[1])[y]

    def loss_and_grads(p):
        z1, h, z2 = _forward(x, *p)
        z2 = z2 - z2.max(axis=1, keepdims=True)
        probs = np.exp(z2) / np.exp(z2).sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
        dz2 = (probs - onehot) / len(y)
        dz1 = (dz2 @ p[2].T) * (z1 > 0)
        return loss, [x.T @ dz1, dz1.sum(0), h.T @ dz2, dz2.sum(0)]

    def loss_after_steps(m):
        params = [m[0] * w1, b1, m[1] * w2, b2]
        velocity = [np.zeros_like(p) for p in params]
        for _ in range(steps):
            _, grads = loss_and_grads(params)
            velocity = [momentum * v + g for v, g in zip(velocity, grads)]
            params = [p - lr * v for p, v in zip(params, velocity)]
        return loss_and_grads(params)[0]

    return [
        np.abs(g)
        for g in _central_difference(loss_after_steps, [np.ones_like(w1), np.ones_like(w2)])
    ]


@pytest.mark.parametrize("steps,lr,momentum", [(3, 0.1, 0.0), (2, 0.5, 0.9)])
def test_prospr_scores_equal_finite_differences_through_the_sgd_steps(steps, lr, momentum):
    masked = tx.pruning.wrap(_mlp(seed=5))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.integers(0, 3, 12)
    pruner = tx.pruning.ProsPrPruner(
        inner_steps=steps, inner_lr=lr, inner_momentum=momentum, verbose=False
    )
    got = list(pruner.score(masked, (x, y)).values())
    expected = _prospr_reference(masked, x, y, steps, lr, momentum)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-9 * max(s.max() for s in expected))


def test_prospr_with_a_vanishing_step_is_snip_unnormalized():
    """One step of learning rate ~0: the loss after it is the loss at theta * m, so the meta-gradient
    is theta * dL/dtheta, SNIP's score before its normalization (no BN here, so no mode matters)."""
    masked = tx.pruning.wrap(_mlp(seed=2))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 5)), rng.integers(0, 3, 10)
    prospr = tx.pruning.ProsPrPruner(inner_steps=1, inner_lr=1e-12, verbose=False).score(
        masked, (x, y)
    )
    snip = tx.pruning.SNIPPruner(verbose=False).score(masked, (x, y))
    total = sum(s.sum() for s in prospr.values())
    for name in snip:
        np.testing.assert_allclose(prospr[name] / total, snip[name], rtol=1e-7, atol=1e-15)


def test_both_prune_a_bn_network_and_the_masks_hold_through_fit():
    x, y = pruning_data()
    for pruner in (
        tx.pruning.NTKSAPPruner(rounds=3, samples=2, batch_size=8, verbose=False),
        tx.pruning.ProsPrPruner(verbose=False),
    ):
        masked = tx.pruning.wrap(pruning_cnn())
        report = pruner.prune(masked, 0.7, (x, y))
        assert report.kept == round(0.3 * report.total)
        assert report.meta["method"] == pruner.name
        masked.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        masked.fit(x, y, epochs=2, batch_size=8, verbose=0)
        for w in tx.pruning.masked_layers(masked):
            for k, m in zip(w.kernels, w.masks):
                assert np.all(np.asarray(k)[np.asarray(m) == 0] == 0)


def test_by_name_and_bad_arguments():
    assert isinstance(tx.pruning.get_pruner("ntk_sap"), tx.pruning.NTKSAPPruner)
    assert isinstance(tx.pruning.get_pruner("prospr"), tx.pruning.ProsPrPruner)
    assert tx.pruning.get_pruner("ntk_sap").rounds == 20
    assert tx.pruning.get_pruner("prospr").rounds == 1
    for kwargs, match in [
        ({"samples": 0}, "samples"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"batch_size": 2.5}, "batch_size"),
    ]:
        with pytest.raises(ValueError, match=match):
            tx.pruning.NTKSAPPruner(**kwargs)
    for kwargs, match in [
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"inner_momentum": 1.0}, "inner_momentum"),
    ]:
        with pytest.raises(ValueError, match=match):
            tx.pruning.ProsPrPruner(**kwargs)
    any_size = tx.pruning.wrap(
        keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    )
    before = [np.asarray(v).copy() for v in any_size.weights]
    with pytest.raises(ValueError, match="fully defined input shape"):
        tx.pruning.NTKSAPPruner(verbose=False).prune(any_size, 0.5)
    for v, b in zip(any_size.weights, before):
        np.testing.assert_array_equal(np.asarray(v), b)


def test_frozen_batch_norm_is_refused_and_initializers_follow_each_layer():
    model = pruning_cnn()
    model.get_layer("bn1").trainable = False
    masked = tx.pruning.wrap(model)
    before = [np.asarray(v).copy() for v in masked.weights]
    with pytest.raises(ValueError, match=r"\['bn1'\] are frozen"):
        tx.pruning.NTKSAPPruner(rounds=2, samples=1, batch_size=4, verbose=False).prune(masked, 0.5)
    for v, b in zip(masked.weights, before):
        np.testing.assert_array_equal(np.asarray(v), b)
    # A depthwise conv draws from depthwise_initializer; one without randomness is used as is.
    net = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras.layers.DepthwiseConv2D(3, depthwise_initializer="ones", name="dw"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, kernel_initializer="zeros", name="d"),
        ]
    )
    draw = tx.pruning.NTKSAPPruner(samples=1, batch_size=2).draws(tx.pruning.wrap(net), 0)[0]
    np.testing.assert_array_equal(draw.kernels[0], np.ones((3, 3, 2, 1)))
    np.testing.assert_array_equal(draw.kernels[1], np.zeros((18, 2)))


def test_prospr_averages_a_loss_given_by_name():
    """Keras' "sparse_categorical_crossentropy" is per example: summed, every SGD step would be
    batch-size times too long. By name it must score as the mean-reducing loss object does."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 5)), rng.integers(0, 3, 16)
    by_name = tx.pruning.ProsPrPruner(loss="sparse_categorical_crossentropy", verbose=False)
    by_object = tx.pruning.ProsPrPruner(
        loss=keras.losses.SparseCategoricalCrossentropy(), verbose=False
    )
    keras.utils.set_random_seed(3)
    masked_softmax = tx.pruning.wrap(
        keras.Sequential(
            [
                keras.Input((5,), dtype="float64"),
                keras.layers.Dense(4, activation="relu", dtype="float64"),
                keras.layers.Dense(3, activation="softmax", dtype="float64"),
            ]
        )
    )
    a = by_name.score(masked_softmax, (x, y))
    b = by_object.score(masked_softmax, (x, y))
    for name in a:  # (the two clip probabilities a little differently: ~1e-7 relative; a summed
        # loss would take 16-times longer steps and change the scores entirely)
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-9 * b[name].max())
