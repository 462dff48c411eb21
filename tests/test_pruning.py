"""Masks, wrap/strip, the baselines against direct computations, scope options, bad input."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

import tf_tradyx as tx
from tf_tradyx.pruning import mask_selection as ranking


def _small_cnn(seed=0, softmax=False, dtype="float32"):
    keras.utils.set_random_seed(seed)
    keras.config.set_floatx(dtype)
    try:
        return _build_small_cnn(seed, softmax)
    finally:
        keras.config.set_floatx("float32")


def _build_small_cnn(seed, softmax):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(x)
    y = keras.layers.Conv2D(8, 1, name="pw")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, activation="softmax" if softmax else None, name="fc")(x)
    model = keras.Model(inputs, out)
    # Non-trivial BN statistics, so inference-mode BN is not the identity.
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, .1, 8), rng.normal(0, .1, 8),
                    rng.uniform(0.5, 2, 8)])
    return model


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype(np.float32), rng.integers(0, 4, n)


# ----- masks -----

def test_wrap_masks_every_prunable_kernel_and_keeps_outputs():
    model = _small_cnn()
    masked = tx.pruning.wrap(model)
    names = [n for w in tx.pruning.masked_layers(masked) for n in w.kernel_names]
    assert names == ["c1/kernel", "dw/kernel", "pw/kernel", "sep/depthwise_kernel",
                     "sep/pointwise_kernel", "fc/kernel"]
    x, _ = _data()
    np.testing.assert_allclose(masked(x), model(x), rtol=1e-6, atol=1e-6)
    assert not any(isinstance(l, tx.pruning.MaskedLayer) for l in model.layers)  # Untouched.


def test_wrap_skip_and_errors():
    model = _small_cnn()
    masked = tx.pruning.wrap(model, skip=["fc", keras.layers.DepthwiseConv2D])
    names = [w.layer.name for w in tx.pruning.masked_layers(masked)]
    assert names == ["c1", "pw", "sep"]
    with pytest.raises(ValueError, match="not in the model"):
        tx.pruning.wrap(model, skip=["nope"])
    with pytest.raises(ValueError, match="already has masks"):
        tx.pruning.wrap(masked)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="subclassed"):
        tx.pruning.wrap(sub)
    with pytest.raises(ValueError, match="no masks"):
        tx.pruning.PXPruner().prune(model, 0.5, _data())


def test_sequential_and_nested_models():
    seq = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"),
                            keras.layers.Dense(3)])
    masked = tx.pruning.wrap(seq)
    assert isinstance(masked, keras.Sequential)
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    report = tx.pruning.PXPruner(rounds=5, verbose=False).prune(masked, 0.5, (x, np.zeros(10)))
    assert report.kept == round(0.5 * (6 * 5 + 5 * 3))
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu",
                                                                    name="inner_d")], name="inner")
    inputs = keras.Input((6,))
    nested = keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))
    masked = tx.pruning.wrap(nested)
    names = [w.layer.name for w in tx.pruning.masked_layers(masked)]
    assert names == ["inner_d", "head"]
    np.testing.assert_allclose(masked(x), nested(x), rtol=1e-6)
    tx.pruning.SynFlowPruner(rounds=3, verbose=False).prune(masked, 0.6)
    assert tx.pruning.report(masked).kept == round(0.4 * (24 + 8))


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    lambda: keras.optimizers.Adam(0.01),
    lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
])
def test_pruned_weights_stay_exactly_zero_through_fit(optimizer):
    masked = tx.pruning.wrap(_small_cnn())
    x, y = _data(32)
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.7)
    before = {n: np.asarray(m) for w in tx.pruning.masked_layers(masked)
              for n, m in zip(w.kernel_names, w.masks)}
    masked.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masked.fit(x, y, epochs=3, batch_size=8, verbose=0)
    changed = 0
    for w in tx.pruning.masked_layers(masked):
        for name, var, mask in zip(w.kernel_names, w.kernels, w.masks):
            np.testing.assert_array_equal(np.asarray(mask), before[name])
            values = np.asarray(var)
            assert np.all(values[before[name] == 0] == 0), name
            changed += np.count_nonzero(values[before[name] == 1])
    assert changed > 0


def test_save_load_and_strip(tmp_path):
    masked = tx.pruning.wrap(_small_cnn())
    x, _ = _data()
    tx.pruning.RandomPruner(verbose=False, seed=3).prune(masked, 0.6)
    path = str(tmp_path / "masked.keras")
    masked.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), masked(x), rtol=1e-6, atol=1e-6)
    for a, b in zip(tx.pruning.masked_layers(loaded), tx.pruning.masked_layers(masked)):
        for ma, mb in zip(a.masks, b.masks):
            np.testing.assert_array_equal(np.asarray(ma), np.asarray(mb))
    plain = tx.pruning.strip(loaded)
    assert not any(isinstance(l, tx.pruning.MaskedLayer) for l in plain.layers)
    assert "MaskedLayer" not in str(plain.to_json())
    np.testing.assert_allclose(plain(x), masked(x), rtol=1e-6, atol=1e-6)
    kernel = np.asarray(plain.get_layer("c1").kernel)
    np.testing.assert_array_equal(kernel == 0, np.asarray(tx.pruning.masked_layers(masked)[0].masks[0]) == 0)


# ----- ranking -----

def test_top_k_is_exact_with_ties():
    scores = np.array([1.0, 3.0, 3.0, 3.0, 0.5, 3.0])
    np.testing.assert_array_equal(ranking.top_k(scores, 3), [False, True, True, True, False, False])
    np.testing.assert_array_equal(ranking.top_k(np.zeros(5), 2), [True, True, False, False, False])
    assert ranking.top_k(scores, 0).sum() == 0 and ranking.top_k(scores, 9).sum() == 6


def test_select_scopes_and_min_density():
    scores = [np.array([5.0, 4.0, 3.0, 2.0]), np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])]
    alive = [np.ones(4, bool), np.ones(6, bool)]
    g = ranking.select(scores, alive, 0.4)
    assert [k.sum() for k in g] == [4, 0]
    local = ranking.select(scores, alive, 0.5, scope="local")
    assert [k.sum() for k in local] == [2, 3]
    np.testing.assert_array_equal(local[1], [False, False, False, True, True, True])
    m = ranking.select(scores, alive, 0.4, min_density=0.3)
    assert [k.sum() for k in m] == [2, 2]
    np.testing.assert_array_equal(m[1], [False, False, False, False, True, True])
    with pytest.raises(ValueError, match="min_density"):
        ranking.select(scores, alive, 0.1, min_density=0.5)
    dead = [np.array([True, False, True, True]), np.ones(6, bool)]
    kept = ranking.select(scores, dead, 0.3)
    assert not kept[0][1]  # Never revives a pruned weight even with the best score.


# ----- the baselines against direct computations -----

def _scores(pruner, masked, data=None):
    return pruner.score(masked, data)


def test_snip_equals_direct_gradient_times_weight():
    model = _small_cnn()
    masked = tx.pruning.wrap(model)
    x, y = _data()
    got = _scores(tx.pruning.SNIPPruner(verbose=False), masked, (x, y))
    variables = [v for w in tx.pruning.masked_layers(masked) for v in w.kernels]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, masked(x, training=False), from_logits=True))
    grads = tape.gradient(loss, variables)
    raw = [np.abs(np.asarray(v) * g.numpy()) for v, g in zip(variables, grads)]
    total = sum(r.sum() for r in raw)
    for (name, s), r in zip(got.items(), raw):
        np.testing.assert_allclose(s, r / total, rtol=1e-4, atol=1e-12, err_msg=name)
    assert abs(sum(s.sum() for s in got.values()) - 1) < 1e-6


def test_snip_reads_softmax_outputs_as_probabilities():
    model = _small_cnn(softmax=True)
    masked = tx.pruning.wrap(model)
    x, y = _data()
    got = _scores(tx.pruning.SNIPPruner(verbose=False), masked, (x, y))
    variables = [v for w in tx.pruning.masked_layers(masked) for v in w.kernels]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, masked(x)))
    raw = [np.abs(np.asarray(v) * g.numpy()) for v, g in zip(variables, tape.gradient(loss, variables))]
    np.testing.assert_allclose(got["c1/kernel"], raw[0] / sum(r.sum() for r in raw), rtol=1e-4)


def test_synflow_equals_direct_computation_on_an_absolute_copy():
    model = _small_cnn()
    masked = tx.pruning.wrap(model)
    tx.pruning.RandomPruner(verbose=False).prune(masked, 0.3)
    got = _scores(tx.pruning.SynFlowPruner(verbose=False), masked)
    # Direct: a float64 copy with every parameter (and BN statistic) made positive.
    plain = tx.pruning.strip(masked)
    keras.config.set_floatx("float64")
    try:
        copy = keras.models.clone_model(plain, clone_function=lambda l: l.__class__.from_config(
            {**l.get_config(), "dtype": "float64"}))
    finally:
        keras.config.set_floatx("float32")
    for a, b in zip(plain.layers, copy.layers):
        b.set_weights([np.abs(w).astype(np.float64) for w in a.get_weights()])
    kernels = {f"{l.name}/{n}": getattr(l, n) for l in copy.layers
               for n in ("kernel", "depthwise_kernel", "pointwise_kernel") if hasattr(l, n)
               and not (n == "kernel" and hasattr(l, "depthwise_kernel"))}
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(copy(tf.ones((1, 8, 8, 3), tf.float64), training=False))
    grads = tape.gradient(total, list(kernels.values()))
    for (name, var), g in zip(kernels.items(), grads):
        expected = np.abs(np.asarray(var) * g.numpy())
        np.testing.assert_allclose(got[name], expected, rtol=1e-9, atol=1e-300, err_msg=name)


def test_grasp_hessian_gradient_product_matches_finite_differences():
    model = _small_cnn(dtype="float64")  # Finite differences need float64 to resolve H g.
    keras.config.set_floatx("float64")
    try:
        masked = tx.pruning.wrap(model)
    finally:
        keras.config.set_floatx("float32")
    x, y = _data()
    x = x.astype(np.float64)
    pruner = tx.pruning.GraSPPruner(verbose=False)
    from tf_tradyx.pruning.pruner import Session
    session = Session(pruner, masked, (x, y))
    hg = pruner.hessian_gradient_product(session)
    variables = [e.variable for e in session.entries]

    def grad_at(shift):
        originals = [np.asarray(v).copy() for v in variables]
        for v, s in zip(variables, shift):
            v.assign(np.asarray(v) + s)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, masked(x, training=False) / 200.0, from_logits=True))
        grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]
        for v, o in zip(variables, originals):
            v.assign(o)
        return grads

    g = grad_at([np.zeros(v.shape) for v in variables])
    norm = np.sqrt(sum((a ** 2).sum() for a in g))
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
    masked = tx.pruning.wrap(_small_cnn())
    mags = _scores(tx.pruning.MagnitudePruner(verbose=False), masked)
    w = tx.pruning.masked_layers(masked)[0]
    np.testing.assert_array_equal(mags["c1/kernel"], np.abs(np.asarray(w.kernels[0])))
    r1 = _scores(tx.pruning.RandomPruner(seed=5, verbose=False), masked)
    r2 = _scores(tx.pruning.RandomPruner(seed=5, verbose=False), masked)
    r3 = _scores(tx.pruning.RandomPruner(seed=6, verbose=False), masked)
    np.testing.assert_array_equal(r1["fc/kernel"], r2["fc/kernel"])
    assert not np.array_equal(r1["fc/kernel"], r3["fc/kernel"])
    report = tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    kept = np.concatenate([np.asarray(w.kernels[i]).ravel()[np.asarray(w.masks[i]).ravel() > 0]
                           for w in tx.pruning.masked_layers(masked) for i in range(len(w.kernels))])
    all_w = np.concatenate([s.ravel() for s in mags.values()])
    assert np.abs(kept).min() >= np.sort(all_w)[len(all_w) - report.kept - 1]


class IterativeMethodsTest(parameterized.TestCase):

    @parameterized.parameters("px", "synflow", "itersnip", "snip", "grasp", "magnitude", "random")
    def test_every_method_hits_the_exact_density_on_a_model_with_bn_pool_and_skip(self, method):
        masked = tx.pruning.wrap(_small_cnn())
        x, y = _data()
        pruner = tx.pruning.get_pruner(method, rounds=4, verbose=False)
        report = pruner.prune(masked, 0.8, (x, y))
        total = report.total
        expected = [round(d * total) for d in
                    tx.pruning.ExponentialSchedule().densities(0.2, 4)]
        self.assertEqual([h["kept"] for h in report.meta["history"]], expected)
        out = masked(x)
        self.assertTrue(np.all(np.isfinite(out)))


def test_local_scope_min_density_and_pruner_skip():
    masked = tx.pruning.wrap(_small_cnn())
    x, y = _data()
    report = tx.pruning.SynFlowPruner(rounds=3, scope="local", verbose=False).prune(masked, 0.75)
    for row in report.rows:
        assert row["kept"] == pytest.approx(0.25 * row["weights"], abs=3)
    masked = tx.pruning.wrap(_small_cnn())
    report = tx.pruning.PXPruner(rounds=10, min_density=0.03, verbose=False).prune(
        masked, 0.95, (x, y))
    assert all(r["density"] >= 0.03 - 1e-9 for r in report.rows)
    assert report.kept == round(0.05 * report.total)
    masked = tx.pruning.wrap(_small_cnn())
    report = tx.pruning.PXPruner(rounds=2, skip=["fc"], verbose=False).prune(masked, 0.9, (x, y))
    fc = [r for r in report.rows if r["name"] == "fc/kernel"][0]
    assert fc["density"] == 1.0


def test_an_emptied_layer_is_reported_and_warned_about_and_min_density_prevents_it():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="d1"),
                              keras.layers.Dense(4, name="d2"), keras.layers.Dense(2, name="d3")])
    d2 = model.get_layer("d2")
    d2.set_weights([np.full((4, 4), 1e-3, np.float32), np.zeros(4, np.float32)])
    masked = tx.pruning.wrap(model)
    # 36 weights, 18 kept by magnitude: all of them fit in d1 (12) and d3 (8), so d2 empties.
    with pytest.warns(UserWarning, match=r"left no weight in 1 layer\(s\): d2/kernel.*min_density"):
        report = tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
    assert report.collapsed == ["d2/kernel"]
    assert report.as_dict()["totals"]["collapsed"] == ["d2/kernel"]
    assert "collapsed (no weight kept): d2/kernel" in str(report)
    masked = tx.pruning.wrap(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = tx.pruning.MagnitudePruner(min_density=0.1, verbose=False).prune(masked, 0.5)
    assert report.collapsed == [] and "collapsed" not in str(report)
    kept = [r["kept"] for r in report.rows]
    assert sum(kept) == 18 and kept[1] == 2  # ceil(0.1 * 16) forced into d2, the rest by magnitude


def test_bad_input_is_rejected_and_model_unchanged():
    masked = tx.pruning.wrap(_small_cnn())
    x, y = _data()
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
    # Non-finite scores mid-way: every mask and weight is restored.
    x_bad = x.copy()
    x_bad[0, 0, 0, 0] = np.inf
    with pytest.raises(FloatingPointError, match="non-finite"):
        tx.pruning.PXPruner(rounds=3, verbose=False).prune(masked, 0.5, (x_bad, y))
    for v, s in zip(masked.weights, snapshot):
        np.testing.assert_array_equal(np.asarray(v), s)


def test_unsupported_layer_is_named():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, activation="tanh", name="tanh_dense")(inputs)
    masked = tx.pruning.wrap(keras.Model(inputs, keras.layers.Dense(2)(h)))
    with pytest.raises(tx.pruning.UnsupportedLayerError, match="tanh_dense"):
        tx.pruning.PXPruner(verbose=False).prune(masked, 0.5, np.zeros((2, 4), np.float32))
    # Data-driven scorers still work on it.
    tx.pruning.SNIPPruner(verbose=False).prune(masked, 0.5, (np.ones((2, 4)), np.zeros(2)))


def test_max_pool_gates_follow_the_real_network():
    """z1 through max pooling uses the real argmax: compare with a brute-force numpy pass."""
    from tf_tradyx.pruning.paths import PathNetwork
    inputs = keras.Input((4, 4, 1))
    c = keras.layers.Conv2D(2, 1, use_bias=False, name="c")(inputs)
    p = keras.layers.MaxPooling2D(2, name="p")(c)
    out = keras.layers.Flatten()(p)
    model = keras.Model(inputs, out)
    model.get_layer("c").set_weights([np.array([[[[1.0, -1.0]]]], np.float32)])
    masked = tx.pruning.wrap(model)
    net = PathNetwork(masked)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32)
    gates = []
    net.run(tf.constant(x), "real", gates=gates)
    z1 = net.run(tf.constant(x.astype(np.float64) ** 2), "z1", gates=gates).numpy()
    expected = np.zeros((2, 2, 2, 2))
    for n, i, j, ch in np.ndindex(2, 2, 2, 2):
        window = x[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, 0] * (1.0 if ch == 0 else -1.0)
        a, b = np.unravel_index(np.argmax(window), (2, 2))
        expected[n, i, j, ch] = float(x[n, 2 * i + a, 2 * j + b, 0]) ** 2
    np.testing.assert_allclose(z1, expected.reshape(2, -1), rtol=1e-12)


def test_report_table_dict_plot_and_sanity_transforms(tmp_path):
    masked = tx.pruning.wrap(_small_cnn())
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
    assert not np.array_equal(np.asarray(tx.pruning.masked_layers(masked)[2].kernels[0]), old_values)


def test_prune_at_init_one_call():
    model = _small_cnn()
    x, y = _data()
    masked = tx.pruning.prune_at_init(model, method="px", sparsity=0.9, data=(x, y), rounds=5,
                                      verbose=False)
    assert masked.pruning_report.density == pytest.approx(0.1, abs=1 / masked.pruning_report.total)
    assert masked.pruning_report.meta["method"] == "px"


def test_synflow_profile_matches_synaptic_flow_on_resnet20():
    """Per-layer densities vs the Synaptic-Flow implementation's (tests/testdata, 5 seeds)."""
    import json
    import os
    path = os.path.join(os.path.dirname(__file__), "testdata", "synaptic_flow_synflow_resnet20.json")
    with open(path) as f:
        reference = json.load(f)["profiles"]
    for sparsity in ("0.8926", "0.982"):
        keras.utils.set_random_seed(0)
        masked = tx.pruning.wrap(tx.models.resnet20())
        report = tx.pruning.SynFlowPruner(rounds=100, verbose=False).prune(masked, float(sparsity))
        ours = np.array([r["density"] for r in report.rows])
        theirs = np.array(reference[sparsity]["mean"])
        assert np.max(np.abs(ours - theirs)) < 0.05, (sparsity, np.round(ours - theirs, 3))


@keras.saving.register_keras_serializable(package="tf_tradyx_tests")
class ScaledDense(keras.layers.Layer, tx.pruning.PrunableLayer):
    """A user's own layer: y = relu(2 * x @ W) with a declared prunable kernel."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.relu

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units),
                                 initializer="glorot_normal")

    def call(self, x):
        return self.activation(self.linear_call(x, [self.w]))

    def linear_call(self, x, kernels):
        return 2.0 * keras.ops.matmul(x, kernels[0])

    def get_prunable_weights(self):
        return [self.w]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_users_prunable_layer_is_masked_and_scored():
    inputs = keras.Input((6,))
    h = ScaledDense(5, name="mine")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    masked = tx.pruning.wrap(model)
    names = [n for w in tx.pruning.masked_layers(masked) for n in w.kernel_names]
    assert names == ["mine/w", "out/kernel"]
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    scores = tx.pruning.PXPruner(verbose=False).score(masked, (x, np.zeros(10)))
    # By hand for this 2-layer net; the factor 2 inside the user's linear map is not a weight, so
    # it stays unsquared in both auxiliary networks (like average pooling):
    #   z1_k = sum_n sum_j gate_nj * 2 * sum_i x_ni^2,   S(w2_jk) = z1_k * (2 sum_i w1_ij^2) * w2_jk^2.
    w1 = np.asarray(masked.get_layer("masked_mine").layer.w, np.float64)
    w2 = np.asarray(masked.get_layer("masked_out").layer.kernel, np.float64)
    gate = (2 * x.astype(np.float64) @ w1 > 0).astype(float)
    z1 = np.einsum("ni,ij,nj->j", x.astype(np.float64) ** 2, 2 * np.ones_like(w1), gate) @ np.ones_like(w2)
    expected_w2 = (2 * w1 ** 2).sum(0)[:, None] * w2 ** 2 * z1[None, :]
    np.testing.assert_allclose(scores["out/kernel"], expected_w2, rtol=1e-6)
    tx.pruning.PXPruner(rounds=3, verbose=False).prune(masked, 0.5, (x, np.zeros(10)))
    mine = masked.get_layer("masked_mine")
    assert np.all(np.asarray(mine.layer.w)[np.asarray(mine.masks[0]) == 0] == 0)
    assert "ScaledDense" in type(tx.pruning.strip(masked).get_layer("mine")).__name__


def test_conv1d_models_are_pruned():
    inputs = keras.Input((16, 2))
    x = keras.layers.Conv1D(4, 3, padding="same", activation="relu", name="c")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    masked = tx.pruning.wrap(model)
    data = (np.random.default_rng(0).normal(size=(6, 16, 2)).astype(np.float32), np.zeros(6))
    report = tx.pruning.PXPruner(rounds=4, verbose=False).prune(masked, 0.75, data)
    assert report.kept == round(0.25 * (3 * 2 * 4 + 4 * 2))


@pytest.mark.parametrize("method", ["px", "synflow", "snip", "grasp", "magnitude", "random"])
def test_scoring_leaves_weights_and_bn_statistics_untouched(method):
    masked = tx.pruning.wrap(_small_cnn())
    x, y = _data()
    before = [np.asarray(v).copy() for v in masked.weights]
    tx.pruning.get_pruner(method, verbose=False).score(masked, (x, y))
    for v, b in zip(masked.weights, before):
        np.testing.assert_array_equal(np.asarray(v), b, err_msg=v.path)


def test_reinitialize_draws_from_each_layers_initializer():
    keras.utils.set_random_seed(0)
    masked = tx.pruning.wrap(tx.models.resnet20())
    tx.pruning.reinitialize(masked, seed=4)
    conv = masked.get_layer("masked_stage3_block2_1_conv")
    values = np.asarray(conv.kernels[0])
    np.testing.assert_allclose(values.std(), np.sqrt(2 / (9 * 64)), rtol=0.03)
    small = tx.pruning.wrap(_small_cnn())
    tx.pruning.reinitialize(small, seed=1)
    dw = np.asarray(small.get_layer("masked_dw").kernels[0])  # glorot_uniform on (3, 3, 8, 1)
    limit = np.sqrt(6 / (9 * 8 + 9 * 1))  # Keras fans: fan_in 72, fan_out 9.
    assert np.abs(dw).max() <= limit and np.abs(dw).max() > 0.5 * limit


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
       density=st.floats(0.0, 1.0), min_density=st.sampled_from([0.0, 0.05, 0.2]),
       ties=st.booleans(), seed=st.integers(0, 2**16))
def test_select_properties(sizes, density, min_density, ties, seed):
    """Exact count, never revives, respects min_density, deterministic, keeps the best."""
    rng = np.random.default_rng(seed)
    scores = [np.round(rng.random(n), 1) if ties else rng.random(n) for n in sizes]
    alive = [rng.random(n) < 0.8 for n in sizes]
    total, alive_count = sum(sizes), sum(int(a.sum()) for a in alive)
    k = int(round(density * total))
    forced = sum(min(int(np.ceil(min_density * n)), int(a.sum())) for n, a in zip(sizes, alive))
    if k > alive_count or forced > k:
        with pytest.raises(ValueError):
            ranking.select(scores, alive, density, min_density=min_density)
        return
    keep = ranking.select(scores, alive, density, min_density=min_density)
    assert sum(int(m.sum()) for m in keep) == k
    for m, a, n in zip(keep, alive, sizes):
        assert not np.any(m & ~a)
        assert m.sum() >= min(int(np.ceil(min_density * n)), int(a.sum()))
    again = ranking.select(scores, alive, density, min_density=min_density)
    assert all(np.array_equal(a, b) for a, b in zip(keep, again))
    if min_density == 0.0 and 0 < k < alive_count:
        flat_s = np.concatenate(scores)
        flat_k = np.concatenate(keep)
        flat_a = np.concatenate(alive)
        assert flat_s[flat_k].min() >= flat_s[flat_a & ~flat_k].max()


def test_schedules_serialize_and_continue_from_a_pruned_model():
    exp = tx.pruning.ExponentialSchedule()
    np.testing.assert_allclose(exp.densities(0.01, 2), [0.1, 0.01])
    np.testing.assert_allclose(exp.densities(0.01, 2, start=0.1), [np.sqrt(0.001), 0.01])
    np.testing.assert_allclose(tx.pruning.LinearSchedule().densities(0.2, 4), [0.8, 0.6, 0.4, 0.2])
    for schedule in (exp, tx.pruning.LinearSchedule()):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
        assert type(restored) is type(schedule)
    with pytest.raises(ValueError, match="Unknown schedule"):
        tx.pruning.PXPruner(schedule="cosine")
    masked = tx.pruning.wrap(_small_cnn())
    tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.8)
    report = tx.pruning.MagnitudePruner(rounds=2, verbose=False).prune(masked, 0.9)
    assert report.kept == round(0.1 * report.total)
    with pytest.raises(ValueError, match="already at sparsity"):
        tx.pruning.MagnitudePruner(verbose=False).prune(masked, 0.5)
