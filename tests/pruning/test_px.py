"""PX correctness: brute-force path enumeration, conservation, numerics on real networks, Conv1D."""

import itertools
import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests import path_reference as ref

RNG = np.random.default_rng(7)


def _set_masks(masked, masks):
    for w in tx.pruning.masked_layers(masked):
        if w.layer.name in masks:
            w.masks[0].assign(masks[w.layer.name].astype(np.float32))
            w.apply_masks()


def _random_mask(shape, density=0.7):
    return (RNG.random(shape) < density).astype(np.float64)


def _mlp_case():
    sizes = [3, 6, 5, 2]
    inputs = keras.Input((3,))
    h = keras.layers.Dense(6, activation="relu", name="d1")(inputs)
    h = keras.layers.Dense(5, name="d2")(h)
    h = keras.layers.ReLU(name="relu2")(h)
    out = keras.layers.Dense(2, name="d3")(h)
    model = keras.Model(inputs, out)
    net = ref.UnitNet()
    net.add_tensor("x", 3)
    params, names = {}, ["d1", "d2", "d3"]
    prev = "x"
    for i, name in enumerate(names):
        ref.dense(net, prev, name, sizes[i], sizes[i + 1], name)
        net.bias[name] = (name, list(range(sizes[i + 1])))
        if name != "d3":
            net.relu.add(name)
        w = RNG.normal(size=(sizes[i], sizes[i + 1]))
        b = RNG.normal(scale=0.3, size=sizes[i + 1])
        params[name], params[(name, "b")] = w, b
        model.get_layer(name).set_weights([w.astype(np.float32), b.astype(np.float32)])
        prev = name
    x = RNG.normal(size=(20, 3))
    return model, net, params, x, x


def _cnn_case():
    h, w = 4, 4
    inputs = keras.Input((h, w, 2))
    c1 = keras.layers.Conv2D(3, 3, padding="same", name="conv1")(inputs)
    b = keras.layers.BatchNormalization(name="bn")(c1)
    r = keras.layers.ReLU(name="relu1")(b)
    c2 = keras.layers.Conv2D(2, 3, padding="same", use_bias=False, name="conv2")(r)
    a = keras.layers.Add(name="add")([c2, inputs])
    r2 = keras.layers.ReLU(name="relu2")(a)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(r2)
    out = keras.layers.Dense(3, name="fc")(g)
    model = keras.Model(inputs, out)

    params = {
        "conv1": RNG.normal(size=(3, 3, 2, 3)),
        ("conv1", "b"): RNG.normal(scale=0.3, size=3),
        "conv2": RNG.normal(size=(3, 3, 3, 2)),
        "fc": RNG.normal(size=(2, 3)),
        ("fc", "b"): RNG.normal(scale=0.3, size=3),
        ("bn", "bn"): (
            RNG.uniform(0.5, 1.5, 3),
            RNG.normal(scale=0.2, size=3),
            RNG.normal(scale=0.2, size=3),
            RNG.uniform(0.5, 2.0, 3),
            1e-3,
        ),
    }
    model.get_layer("conv1").set_weights([params["conv1"], params[("conv1", "b")]])
    model.get_layer("conv2").set_weights([params["conv2"]])
    model.get_layer("fc").set_weights([params["fc"], params[("fc", "b")]])
    g_, b_, m_, v_, _ = params[("bn", "bn")]
    model.get_layer("bn").set_weights([g_, b_, m_, v_])

    net = ref.UnitNet()
    net.add_tensor("x", h * w * 2)
    ref.conv_same(net, "x", "c1", h, w, 2, 3, 3, "conv1")
    net.bias["c1"] = ("conv1", [u % 3 for u in range(h * w * 3)])
    ref.channelwise(net, "c1", "bn", h * w * 3, 3, lambda ch: ("bn", "bn", ch))
    net.relu.add("bn")
    ref.conv_same(net, "bn", "c2", h, w, 3, 2, 3, "conv2")
    net.add_tensor("add", h * w * 2)
    for u in range(h * w * 2):
        net.connect("c2", u, "add", u, ("c", 1.0))
        net.connect("x", u, "add", u, ("c", 1.0))
    net.relu.add("add")
    ref.global_avg(net, "add", "gap", h * w, 2)
    ref.dense(net, "gap", "fc", 2, 3, "fc")
    net.bias["fc"] = ("fc", [0, 1, 2])
    x = RNG.normal(size=(3, h, w, 2))
    return model, net, params, x.reshape(3, -1), x


def _branch_case():
    """Two Dense branches (LeakyReLU layer, fused ReLU) concatenated, dropout, softmax output."""
    inputs = keras.Input((3,))
    a = keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(
        keras.layers.Dense(3, name="da")(inputs)
    )
    b = keras.layers.Dense(2, activation="relu", name="db")(inputs)
    h = keras.layers.Dropout(0.5)(keras.layers.Concatenate()([a, b]))
    out = keras.layers.Dense(3, activation="softmax", name="do")(h)
    model = keras.Model(inputs, out)
    net = ref.UnitNet()
    net.add_tensor("x", 3)
    params = {}
    for name, n_in, n_out in (("da", 3, 3), ("db", 3, 2), ("do", 5, 3)):
        params[name] = RNG.normal(size=(n_in, n_out))
        params[(name, "b")] = RNG.normal(scale=0.3, size=n_out)
        model.get_layer(name).set_weights([params[name], params[(name, "b")]])
    ref.dense(net, "x", "da", 3, 3, "da")
    net.bias["da"] = ("da", [0, 1, 2])
    net.leaky["da"] = 0.1
    ref.dense(net, "x", "db", 3, 2, "db")
    net.bias["db"] = ("db", [0, 1])
    net.relu.add("db")
    net.add_tensor("cat", 5)
    for u in range(3):
        net.connect("da", u, "cat", u, ("c", 1.0))
    for u in range(2):
        net.connect("db", u, "cat", 3 + u, ("c", 1.0))
    ref.dense(net, "cat", "do", 5, 3, "do")  # Softmax ignored: paths end at the logits.
    x = RNG.normal(size=(12, 3))
    return model, net, params, x, x


def _pool_case():
    """Rescaling input, 1x1 conv with ReLU, 2x2 average pooling, Flatten, Dense."""
    inputs = keras.Input((4, 4, 1))
    r = keras.layers.Rescaling(0.5, offset=0.1, name="rescale")(inputs)
    c = keras.layers.Conv2D(2, 1, activation="relu", name="c")(r)
    p = keras.layers.AveragePooling2D(2, name="avg")(c)
    out = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(p))
    model = keras.Model(inputs, out)
    params = {
        "c": RNG.normal(size=(1, 1, 1, 2)),
        ("c", "b"): RNG.normal(scale=0.3, size=2),
        "fc": RNG.normal(size=(8, 2)),
        ("fc", "b"): RNG.normal(scale=0.3, size=2),
    }
    model.get_layer("c").set_weights([params["c"], params[("c", "b")]])
    model.get_layer("fc").set_weights([params["fc"], params[("fc", "b")]])
    net = ref.UnitNet()
    net.add_tensor("x", 16)
    net.add_tensor("r", 16)
    for u in range(16):
        net.connect("x", u, "r", u, ("a", 0.5, 0.1))
    net.add_tensor("c", 32)
    for u, co in itertools.product(range(16), range(2)):
        net.connect("r", u, "c", u * 2 + co, ("w", "c", (0, 0, 0, co)))
    net.bias["c"] = ("c", [u % 2 for u in range(32)])
    net.relu.add("c")
    net.add_tensor("avg", 8)
    for i, j, ch in itertools.product(range(2), range(2), range(2)):
        for di, dj in itertools.product(range(2), range(2)):
            src = ((2 * i + di) * 4 + (2 * j + dj)) * 2 + ch
            net.connect("c", src, "avg", (i * 2 + j) * 2 + ch, ("c", 0.25))
    ref.dense(net, "avg", "fc", 8, 2, "fc")
    net.bias["fc"] = ("fc", [0, 1])
    x = RNG.normal(size=(6, 4, 4, 1))
    return model, net, params, x.reshape(6, -1), x


@pytest.mark.parametrize("case", [_mlp_case, _cnn_case, _branch_case, _pool_case])
def test_px_scores_equal_brute_force_path_enumeration(case):
    model, net, params, x_flat, x = case()
    kernels = [
        n for n in ("d1", "d2", "d3", "conv1", "conv2", "fc", "da", "db", "do", "c") if n in params
    ]
    masks = {n: _random_mask(params[n].shape) for n in kernels}
    masked = tx.pruning.wrap(model)
    _set_masks(masked, masks)
    expected, z1 = ref.px_scores(net, x_flat, params, masks)
    got = tx.pruning.PXPruner(verbose=False).score(masked, (x.astype(np.float32), np.zeros(len(x))))
    assert z1.min() > 0
    for n in kernels:
        np.testing.assert_allclose(got[f"{n}/kernel"], expected[n], rtol=2e-5, atol=0, err_msg=n)
        assert np.all(got[f"{n}/kernel"][masks[n] == 0] == 0)  # Masked weights score 0.
        assert np.count_nonzero(got[f"{n}/kernel"]) > 0


def _chain(depth=4, width=12):
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for i in range(depth):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"c{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="fc")(x))


def test_chain_layer_scores_sum_to_the_same_value():
    masked = tx.pruning.wrap(_chain())
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    scores = tx.pruning.PXPruner(verbose=False).score(masked, (x, np.zeros(16)))
    sums = np.array([s.sum() for s in scores.values()])
    np.testing.assert_allclose(sums, sums[0], rtol=1e-9)
    # Still true with a mask: conservation holds for the masked network.
    w = tx.pruning.masked_layers(masked)[2]
    w.masks[0].assign(_random_mask(w.masks[0].shape, 0.3).astype(np.float32))
    sums = np.array(
        [
            s.sum()
            for s in tx.pruning.PXPruner(verbose=False).score(masked, (x, np.zeros(16))).values()
        ]
    )
    np.testing.assert_allclose(sums, sums[0], rtol=1e-9)


def test_no_layer_is_emptied_at_extreme_sparsity_and_density_is_exact():
    masked = tx.pruning.wrap(_chain(width=32))
    x = np.random.default_rng(1).normal(size=(10, 8, 8, 3)).astype(np.float32)
    total = sum(w.masks[0].shape.num_elements() for w in tx.pruning.masked_layers(masked))
    report = tx.pruning.PXPruner(rounds=100, verbose=False).prune(masked, 0.999, (x, np.zeros(10)))
    assert all(row["kept"] > 0 for row in report.rows), str(report)
    schedule = tx.pruning.ExponentialSchedule().densities(0.001, 100)
    assert [h["kept"] for h in report.meta["history"]] == [round(d * total) for d in schedule]
    assert report.kept == round(0.001 * total)


def test_masked_weights_never_revive_and_score_zero():
    masked = tx.pruning.wrap(_chain())
    x = np.random.default_rng(2).normal(size=(8, 8, 8, 3)).astype(np.float32)
    pruner = tx.pruning.PXPruner(rounds=3, verbose=False)
    pruner.prune(masked, 0.5, (x, np.zeros(8)))
    before = [np.asarray(w.masks[0]) for w in tx.pruning.masked_layers(masked)]
    scores = pruner.score(masked, (x, np.zeros(8)))
    for b, s in zip(before, scores.values()):
        assert np.all(s[b == 0] == 0)
    pruner.prune(masked, 0.8, (x, np.zeros(8)))
    for b, w in zip(before, tx.pruning.masked_layers(masked)):
        after = np.asarray(w.masks[0])
        assert np.all(after[b == 0] == 0)
        assert np.all(np.asarray(w.layer.kernel)[after == 0] == 0)


def _prune_batch(n_per_class=2):
    ds = tx.data.balanced_subset(tx.data.cifar10_sample("train"), n_per_class)
    norm = tx.data.normalization("resnet20")
    x, y = zip(*[(norm(a).numpy(), b) for a, b in ds.as_numpy_iterator()])
    return np.stack(x), np.array(y)


def _z1_float32_rtol(masked, image_shape):
    """A worst-case relative error of the scaled float32 data term, from an error analysis.

    Every term of z1 is nonnegative (unit weights times 0/1 masks and gates, inputs x^2), so there
    is no cancellation: an output that sums n float32 terms carries a relative error of at most
    (n - 1) u, u = 2^-24, in any summation order (oneDNN's order differs between CPUs), and the
    products by 0/1 are exact. Errors add along a path to first order; the sum over all layers
    bounds every path. Each weighted layer adds its fan-in plus a few roundings (renormalization,
    BatchNormalization, a residual add); pooling adds at most one rounding per pooled position
    (at most H * W); x^2 and the first rescale add two. The scores are a nonnegative float64 linear
    function of the summed z1, so their relative error is bounded by the same number (float64's own
    error is 2^-53 times similar counts: below 1e-12 here).
    """
    u = 2.0**-24
    terms = 2 + image_shape[0] * image_shape[1]
    for layer in tx.pruning.masked_layers(masked):
        shape = layer.layer.kernel.shape
        terms += shape.num_elements() // shape[-1] + 4
    return terms * u + 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("builder", [tx.models.resnet20, lambda: tx.models.vgg16_bn(100)])
def test_real_networks_scores_finite_nonzero_and_float64_ranking_holds(builder):
    keras.utils.set_random_seed(3)
    masked = tx.pruning.wrap(builder())
    data = _prune_batch(1)
    scores = tx.pruning.PXPruner(verbose=False).score(masked, data)
    flat = np.concatenate([s.ravel() for s in scores.values()])
    theta = np.concatenate(
        [np.asarray(w.layer.kernel).ravel() for w in tx.pruning.masked_layers(masked)]
    )
    assert np.all(np.isfinite(flat))
    # Every weight scores > 0 except one that is exactly 0 (VGG's initializer draws one at seed 3).
    np.testing.assert_array_equal(flat == 0, theta == 0)
    # The production data term (scaled float32) agrees with the all-float64 computation within the
    # bound of the error analysis (seen: 1e-7 on Intel, 5.7e-6 on AMD EPYC; the bound is ~1e-3).
    exact = tx.pruning.PXPruner(verbose=False, exact_data_term=True).score(masked, data)
    flat_exact = np.concatenate([s.ravel() for s in exact.values()])
    rtol = _z1_float32_rtol(masked, data[0].shape[1:3])
    np.testing.assert_allclose(flat, flat_exact, rtol=rtol)
    # The ranking is the property pruning uses: the top 1 % of the two computations may differ only
    # by weights whose exact scores lie within the measured error of the boundary (near-ties).
    k = len(flat) // 100
    nonzero = flat_exact > 0
    err = np.max(np.abs(flat[nonzero] - flat_exact[nonzero]) / flat_exact[nonzero])
    top = np.argsort(-flat, kind="stable")[:k]
    top_exact = np.argsort(-flat_exact, kind="stable")[:k]
    boundary = flat_exact[top_exact[-1]]
    swapped = np.setxor1d(top, top_exact)
    near = np.abs(flat_exact[swapped] - boundary) <= (2 * err / (1 - err) + 1e-12) * boundary
    assert np.all(near), (len(swapped), err)
    # The magnitudes are far outside float32's range: a float32 computation would overflow or
    # flush to zero and tie; the float64 path keeps every score distinct from zero.
    assert flat.max() > np.finfo(np.float32).max


def test_conv1d_models_are_pruned():
    inputs = keras.Input((16, 2))
    x = keras.layers.Conv1D(4, 3, padding="same", activation="relu", name="c")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    masked = tx.pruning.wrap(model)
    data = (np.random.default_rng(0).normal(size=(6, 16, 2)).astype(np.float32), np.zeros(6))
    report = tx.pruning.PXPruner(rounds=4, verbose=False).prune(masked, 0.75, data)
    assert report.kept == round(0.25 * (3 * 2 * 4 + 4 * 2))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
