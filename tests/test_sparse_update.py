"""TraDy sparse updates: gradients against a dense tape, budgets, costs, fit integration, bad input."""

import json
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

import tf_tradyx as tx
from tf_tradyx.models import tinyml_nets as tinyml_lib
from tf_tradyx.sparse_update import sampling

TESTDATA = os.path.join(os.path.dirname(__file__), "testdata")
SU = tx.sparse_update
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CANDIDATES = ["c1", "dw", "pw", "fc"]


def small_cnn(seed=0):
    """conv (with BN) -> depthwise -> 1x1 conv -> GAP -> Dense -> head."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.ZeroPadding2D(1, name="dw_pad")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", name="dw")(x)
    x = keras.layers.Conv2D(6, 1, name="pw", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, name="fc", activation="relu")(x)
    out = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")  # Non-trivial BN statistics so inference mode matters.
    bn.set_weights([w + np.random.rand(*w.shape).astype("float32") for w in bn.get_weights()])
    return model


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 12, 12, 3), np.float32)
    y = rng.integers(0, 3, n)
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


class GradientTest(parameterized.TestCase):

    @parameterized.parameters(
        ({"c1": [1], "dw": [0, 5, 7], "pw": [2, 3], "fc": [4]},),
        ({"c1": [0, 1, 2], "dw": list(range(8)), "pw": list(range(8)), "fc": list(range(5))},),
        ({"pw": [6]},),
        ({},))
    def test_kernel_and_input_gradients_equal_dense_ones(self, chosen):
        model = small_cnn()
        sparse = SU.wrap(model, budget=10_000, layers=CANDIDATES, strategy="tradi")
        SU.set_selection(sparse, chosen)
        self.assertEqual([w.input_gradient for w in SU.sparse_layers(sparse)],
                         [False, True, True, True])  # nothing trains before c1
        SU.sparse_layers(sparse)[0].input_gradient = True  # to compare the model input's gradient
        x, y, _ = data(8)
        x = tf.constant(x)
        names = CANDIDATES + ["head"]

        def grads(m, kernels):
            @tf.function
            def g():
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = LOSS(y, m(x, training=False))
                return tape.gradient(loss, [x] + kernels)
            return [t.numpy() for t in g()]

        dense = grads(model, [model.get_layer(n).kernel for n in names])
        by_name = {w.layer.name: w for w in SU.sparse_layers(sparse)}
        got = grads(sparse, [by_name[n].kernel for n in CANDIDATES] + [sparse.get_layer("head").kernel])
        np.testing.assert_allclose(got[0], dense[0], rtol=1e-5, atol=1e-7)  # input gradient
        for name, g, d in zip(names, got[1:], dense[1:]):
            if name == "head":
                np.testing.assert_allclose(g, d, rtol=1e-5, atol=1e-7)
                continue
            sel = np.asarray(chosen.get(name, []), int)
            unsel = np.setdiff1d(np.arange(d.shape[-2]), sel)
            np.testing.assert_allclose(np.take(g, sel, axis=-2), np.take(d, sel, axis=-2),
                                       rtol=1e-5, atol=1e-7, err_msg=name)
            self.assertTrue(np.all(np.take(g, unsel, axis=-2) == 0), name)
            if len(sel):
                self.assertGreater(np.abs(np.take(d, sel, axis=-2)).sum(), 0)

    def test_no_backward_pass_before_the_earliest_wrapped_layer(self):
        sparse = SU.wrap(small_cnn(), budget=10_000, layers=["pw", "fc"])
        self.assertEqual([w.input_gradient for w in SU.sparse_layers(sparse)], [False, True])
        x, y, _ = data(8)
        x = tf.constant(x)

        @tf.function
        def grads():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = LOSS(y, sparse(x, training=False))
            return tape.gradient(loss, [x] + sparse.trainable_variables)

        g = grads()
        self.assertIsNone(g[0])
        self.assertTrue(all(t is not None for t in g[1:]))
        ops = {op.type for op in grads.get_concrete_function().graph.get_operations()}
        # Even with the input watched, nothing propagates below 'pw' (c1 and dw are frozen).
        self.assertNotIn("Conv2DBackpropInput", ops)
        self.assertNotIn("DepthwiseConv2dNativeBackpropInput", ops)

    def test_forward_is_the_layers_own_computation(self):
        model = small_cnn()
        sparse = SU.wrap(model, budget=10_000, layers=CANDIDATES)
        x, _, _ = data(4)
        np.testing.assert_allclose(sparse(x), model(x, training=False), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(SU.strip(sparse)(x), model(x), rtol=1e-5, atol=1e-6)


def equal_cost_model():
    """Two Dense candidates whose input channels all cost 5 units (C' = 4, H W = 1)."""
    inp = keras.Input((6,))
    x = keras.layers.Dense(10, name="a")(inp)
    x = keras.layers.Dense(4, name="b")(x)
    x = keras.layers.Dense(4, name="b2")(x)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(x))


class BudgetTest(parameterized.TestCase):

    @settings(max_examples=40, deadline=None)
    @given(seed=st.integers(0, 2 ** 31 - 1), budget=st.integers(150, 4_000),
           layers=st.sampled_from([["c1"], ["dw", "pw"], CANDIDATES, ["c1", "fc"]]))
    def test_selection_fits_budget_and_stays_in_layers(self, seed, budget, layers):
        costs = SU.cost_table(small_cnn())
        if budget < costs.min_channel_units(layers):
            # The sampler checks the budget once, when the model is wrapped.
            with pytest.raises(ValueError, match="cheapest"):
                SU.Sampler(SU.TraDy(layers), costs, layers, budget=budget, seed=seed)
            assert sampling.random_channels(costs, layers, budget, np.random.default_rng(seed)) == {}
            return
        chosen = sampling.random_channels(costs, layers, budget, np.random.default_rng(seed))
        assert set(chosen) <= set(layers)
        assert costs.units(chosen) <= budget
        assert chosen  # the budget pays for at least the cheapest channel, so something is chosen
        # Greedy fill: no leftover channel of these layers would still fit.
        left = budget - costs.units(chosen)
        for name in layers:
            if len(chosen.get(name, [])) < costs[name].in_channels:
                assert costs[name].units_per_channel > left

    def test_uniform_over_channels_chi_square(self):
        costs = SU.cost_table(equal_cost_model())
        layers = ["b", "b2"]  # 10 + 4 = 14 channels of 5 units each... plus 'a' excluded
        self.assertEqual({costs[n].units_per_channel for n in layers}, {5})
        rng = np.random.default_rng(0)
        draws, k = 3000, 3
        counts = np.zeros(14)
        for _ in range(draws):
            chosen = sampling.random_channels(costs, layers, 5 * k, rng)
            self.assertEqual(sum(len(c) for c in chosen.values()), k)
            for c in chosen.get("b", []):
                counts[c] += 1
            for c in chosen.get("b2", []):
                counts[10 + c] += 1
        expected = draws * k / 14
        chi2 = ((counts - expected) ** 2 / expected).sum()
        self.assertLess(chi2, 34.53)  # chi-square, 13 degrees of freedom, p = 0.001
        # And a sampler that always prefers the first layer would fail this test:
        biased = counts.copy()
        biased[:10] += 50
        self.assertGreater((((biased - expected) ** 2) / expected).sum(), 34.53)

    def test_budget_errors_name_the_minimum(self):
        model = small_cnn()
        with pytest.raises(ValueError, match=r"cheapest .* costs 42 units.*>= 42"):
            SU.wrap(model, budget=41, layers=["dw", "pw"])
        for bad in (0, -5, 12.5, "lots", True, None):
            with pytest.raises(ValueError):
                SU.wrap(model, budget=bad, layers=["dw", "pw"])
        # Above full fine-tuning is allowed and reported.
        big = SU.wrap(model, budget=10 ** 6, layers=CANDIDATES)
        eff = SU.efficiency(big)
        self.assertEqual(eff.units, eff.full_units)
        self.assertGreater(eff.budget, eff.full_units)

    def test_parse_budget_and_bytes(self):
        self.assertEqual(SU.parse_budget(27946), 27946)
        self.assertEqual(SU.parse_budget("27946"), 27946)
        self.assertEqual(SU.parse_budget("111784B"), 27946)
        self.assertEqual(SU.parse_budget("1KiB"), 256)
        self.assertEqual(SU.parse_budget("0.1MB"), 25000)
        self.assertEqual(SU.units_from_bytes(111784), 27946)
        self.assertEqual(SU.units_from_bytes(100, bytes_per_element=1), 100)
        for bad in ("12 parsecs", "", "-3KB", float("nan"), 1.5):
            with pytest.raises(ValueError):
                SU.parse_budget(bad)
        with pytest.raises(ValueError):
            SU.units_from_bytes(-1)


class CostTest(parameterized.TestCase):

    @parameterized.parameters("mbv2-w0.35", "mcunet-in1", "proxyless-w0.3")
    def test_tinyml_costs_match_paper(self, name):
        with open(os.path.join(TESTDATA, "tinyml_nets_128px.json")) as f:
            ref = json.load(f)
        net = ref["networks"][tinyml_lib.NETWORKS[name]]
        costs = SU.cost_table(tx.models.tinyml(name, feature_mix=True))
        self.assertEqual(costs.full_units, ref["paper_full_finetune_units"][tinyml_lib.NETWORKS[name]])
        self.assertEqual(costs.total_weight_units, net["total_conv_weight_elements"])
        self.assertEqual(costs.total_activation_units, net["total_conv_input_activation_elements"])
        self.assertLen(costs, net["n_conv"])
        for row, spec in zip(costs, net["conv_layers"]):
            o, i, kh, kw = spec["weight_shape_oihw"]
            self.assertEqual(row.in_channels, spec["in_channels"], row.name)
            self.assertEqual(row.in_hw, spec["in_hw"] ** 2, row.name)
            self.assertEqual(row.out_hw, spec["out_hw"] ** 2, row.name)
            self.assertEqual(row.weight_units * row.in_channels, o * i * kh * kw, row.name)
            self.assertEqual(row.units_per_channel, o * i * kh * kw // row.in_channels
                             + spec["in_hw"] ** 2)
            self.assertEqual(row.kind == "depthwise", spec["depthwise"])

    @parameterized.parameters(("mbv2-w0.35/50kb", "mbv2-w0.35", 28_282),
                              ("mcunet-in1/50kb", "mcunet-in1", 15_936),
                              ("mcunet-in1/100kb", "mcunet-in1", 64_832),
                              ("proxyless-w0.3/50kb", "proxyless-w0.3", 25_984))
    def test_paper_su_schemes_cost(self, scheme, name, units):
        model = tx.models.load_pretrained(name, num_classes=10)
        sparse = SU.wrap(model, strategy="su", scheme=scheme)
        self.assertEqual(SU.efficiency(sparse).units, units)
        # Channels are the largest-norm ones of each layer.
        for w in SU.sparse_layers(sparse):
            chosen = SU.selection(sparse).get(w.layer.name, [])
            norms = SU.channel_norms(w.kernel, w.kind)
            if len(chosen):
                rest = np.setdiff1d(np.arange(w.in_channels), chosen)
                if len(rest):
                    self.assertGreaterEqual(norms[chosen].min(), norms[rest].max())

    def test_efficiency_by_hand(self):
        model = small_cnn()
        costs = SU.cost_table(model)
        # c1: C'D^2 = 8*9 = 72, HW = 144; dw: 1*9, HW = 12*12 (before its ZeroPadding2D), out 6*6;
        # pw: 6, HW = 36; fc: 5, HW = 1. The head is not counted.
        self.assertEqual([(r.name, r.weight_units, r.in_hw, r.out_hw) for r in costs],
                         [("c1", 72, 144, 144), ("dw", 9, 144, 36), ("pw", 6, 36, 36),
                          ("fc", 5, 1, 1)])
        sparse = SU.wrap(model, budget=10_000, layers=CANDIDATES)
        SU.set_selection(sparse, {"c1": [0], "pw": [1, 2], "fc": [0, 1, 4]})
        e = SU.efficiency(sparse)
        total_w = 3 * 72 + 8 * 9 + 8 * 6 + 6 * 5
        total_a = 3 * 144 + 8 * 144 + 8 * 36 + 6 * 1
        total_f = 3 * 72 * 144 + 8 * 9 * 36 + 8 * 6 * 36 + 6 * 5 * 1
        self.assertEqual(e.units, (72 + 144) + 2 * (6 + 36) + 3 * (5 + 1))
        self.assertEqual(e.full_units, total_w + total_a)
        self.assertAlmostEqual(e.weight_derivative_sparsity, 1 - (72 + 12 + 15) / total_w)
        self.assertAlmostEqual(e.activation_sparsity, 1 - (144 + 72 + 3) / total_a)
        self.assertAlmostEqual(e.weight_derivative_flops_saved,
                               1 - (72 * 144 + 2 * 6 * 36 + 3 * 5) / total_f)
        self.assertEqual((e.channels, e.layers_updated), (6, 3))


class Recorder(keras.callbacks.Callback):
    """Snapshots selection and weights at each epoch start (it runs after ChannelResampler)."""

    def __init__(self):
        super().__init__()
        self.selections, self.before, self.after, self.traces = [], [], [], []

    def _weights(self):
        return {v.path: v.numpy().copy() for v in self.model.variables}

    def on_epoch_begin(self, epoch, logs=None):
        self.selections.append({k: v.tolist() for k, v in SU.selection(self.model).items()})
        self.before.append(self._weights())

    def on_epoch_end(self, epoch, logs=None):
        self.after.append(self._weights())
        self.traces.append([w._traces for w in SU.sparse_layers(self.model)])


class FitTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("sgd", lambda: keras.optimizers.SGD(0.1)),
        ("momentum", lambda: keras.optimizers.SGD(0.1, momentum=0.9)),
        ("adam", lambda: keras.optimizers.Adam(0.01)))
    def test_only_selected_channels_and_head_change(self, make_optimizer):
        sparse = SU.wrap(small_cnn(), budget=330, layers=CANDIDATES, strategy="tradi", seed=3)
        sparse.compile(make_optimizer(), LOSS)
        _, _, ds = data()
        rec = Recorder()
        sparse.fit(ds, epochs=4, verbose=0, callbacks=[SU.ChannelResampler(), rec])
        wrappers = {w.kernel.path: w for w in SU.sparse_layers(sparse)}
        for epoch, (sel, before, after) in enumerate(zip(rec.selections, rec.before, rec.after)):
            for path, old in before.items():
                new = after[path]
                if path in wrappers:
                    w = wrappers[path]
                    chosen = np.asarray(sel.get(w.layer.name, []), int)
                    rest = np.setdiff1d(np.arange(w.in_channels), chosen)
                    self.assertTrue(np.array_equal(np.take(new, rest, -2), np.take(old, rest, -2)),
                                    f"epoch {epoch}: unselected channels of {path} moved")
                    if len(chosen):
                        self.assertFalse(np.array_equal(np.take(new, chosen, -2),
                                                        np.take(old, chosen, -2)), path)
                elif path.startswith("head/"):
                    self.assertFalse(np.array_equal(new, old), path)
                else:  # frozen: BN (incl. moving statistics), biases, selection variables
                    self.assertTrue(np.array_equal(new, old), f"epoch {epoch}: {path} changed")

    def test_resamples_each_epoch_without_retracing_and_with_keras_callbacks(self):
        sparse = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES, strategy="tradi", seed=0)
        sparse.compile(keras.optimizers.SGD(0.05), LOSS, metrics=["accuracy"])
        _, _, ds = data()
        rec = Recorder()
        path = os.path.join(tempfile.mkdtemp(), "ep{epoch}.keras")
        history = sparse.fit(
            ds, epochs=5, verbose=0, validation_data=ds.take(1),
            callbacks=[SU.ChannelResampler(), rec, SU.EfficiencyLogger(),
                       keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
                       keras.callbacks.ModelCheckpoint(path)])
        self.assertLen(rec.selections, 5)
        distinct = {json.dumps(s, sort_keys=True) for s in rec.selections}
        self.assertGreaterEqual(len(distinct), 4)
        self.assertEqual(rec.traces[0], rec.traces[-1])  # no retrace after the first epoch
        self.assertIn("val_loss", history.history)
        self.assertLen(history.history["sparse_update/units"], 5)
        self.assertTrue(all(u <= 400 for u in history.history["sparse_update/units"]))
        # A checkpoint holds the selection of its epoch and round-trips through .keras.
        loaded = keras.models.load_model(path.format(epoch=3))
        got = {k: v.tolist() for k, v in SU.selection(loaded).items()}
        self.assertEqual(got, rec.selections[2])
        x, _, _ = data(4)
        for w in SU.sparse_layers(loaded):
            w.check_selection()
        # Same seed -> same stream of selections.
        again = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES, strategy="tradi", seed=0)
        again.compile(keras.optimizers.SGD(0.05), LOSS)
        rec2 = Recorder()
        again.fit(ds, epochs=5, verbose=0, callbacks=[SU.ChannelResampler(), rec2])
        self.assertEqual(rec.selections, rec2.selections)

    def test_static_strategies_keep_their_selection(self):
        _, _, ds = data()
        for strategy, kwargs in [("static_topk_random", {"budget": 400, "layers": CANDIDATES}),
                                 ("static_full_random", {"budget": 400}),
                                 ("static_det_rgn", {"budget": 400, "data": ds})]:
            sparse = SU.wrap(small_cnn(), strategy=strategy, **kwargs)
            sparse.compile(keras.optimizers.SGD(0.05), LOSS)
            rec = Recorder()
            sparse.fit(ds, epochs=3, verbose=0, callbacks=[SU.ChannelResampler(), rec])
            self.assertEqual(rec.selections[0], rec.selections[-1], strategy)
            self.assertLessEqual(SU.efficiency(sparse).units, 400)

    def test_whole_variable_strategies(self):
        _, _, ds = data()
        expected = {"full": {"c1/kernel", "c1/bias", "dw/kernel", "dw/bias", "pw/kernel", "pw/bias",
                             "fc/kernel", "fc/bias", "head/kernel", "head/bias"},
                    "classifier": {"head/kernel", "head/bias"},
                    "bias": {"c1/bias", "dw/bias", "pw/bias", "fc/bias", "head/kernel", "head/bias"}}
        for strategy, trainable in expected.items():
            sparse = SU.wrap(small_cnn(), strategy=strategy)
            self.assertEqual({v.path for v in sparse.trainable_variables}, trainable, strategy)
            before = {v.path: v.numpy().copy() for v in sparse.variables}
            sparse.compile(keras.optimizers.SGD(0.1), LOSS)
            sparse.fit(ds, epochs=1, verbose=0, callbacks=[SU.ChannelResampler()])
            for v in sparse.variables:
                self.assertEqual(not np.array_equal(v.numpy(), before[v.path]), v.path in trainable,
                                 f"{strategy}: {v.path}")
        # A .keras file keeps which layers train, not which variables: attach restores bias-only.
        path = os.path.join(tempfile.mkdtemp(), "bias.keras")
        SU.wrap(small_cnn(), strategy="bias").save(path)
        loaded = SU.attach(keras.models.load_model(path), strategy="bias")
        self.assertEqual({v.path for v in loaded.trainable_variables}, expected["bias"])
        e = SU.efficiency(SU.wrap(small_cnn(), strategy="full"))
        self.assertEqual((e.units, e.activation_sparsity), (e.full_units, 0.0))

    def test_det_rgn_takes_highest_rgn_channels(self):
        model = small_cnn()
        _, _, ds = data()
        costs = SU.cost_table(model)
        sparse = SU.wrap(model, budget=500, strategy=SU.DetRGN(data=ds, batches=2))
        # Brute force: dense gradients of the plain model over the same two batches.
        total = {}
        for x, y in ds.take(2):
            with tf.GradientTape() as tape:
                loss = LOSS(y, model(x, training=False))
            for name, g in zip(costs.names, tape.gradient(
                    loss, [model.get_layer(n).kernel for n in costs.names])):
                total[name] = total.get(name, 0) + g.numpy()
        scores = []
        for name in costs.names:
            axes = (1,) if costs[name].kind == "dense" else (0, 1, 3)
            norms = np.sqrt((total[name].astype(np.float64) ** 2).sum(axis=axes))
            scores += [(n / costs[name].units_per_channel, name, c) for c, n in enumerate(norms)]
        left, expected = 500, {}
        for _, name, c in sorted(scores, reverse=True):
            if costs[name].units_per_channel <= left:
                left -= costs[name].units_per_channel
                expected.setdefault(name, []).append(c)
        got = {k: v.tolist() for k, v in SU.selection(sparse).items()}
        self.assertEqual(got, {k: sorted(v) for k, v in expected.items()})

    def test_user_defined_strategy_and_its_budget_check(self):
        class LargestNormFirstLayer(SU.Strategy):
            dynamic = False

            def select(self, context):
                w = [w for w in SU.sparse_layers(context.model) if w.layer.name == context.layers[0]][0]
                norms = SU.channel_norms(w.kernel, w.kind)
                return {w.layer.name: np.argsort(-norms)[:2]}

        model = small_cnn()
        sparse = SU.wrap(model, budget=400, layers=["pw", "fc"], strategy=LargestNormFirstLayer())
        norms = np.sqrt((model.get_layer("pw").kernel.numpy() ** 2).sum(axis=(0, 1, 3)))
        self.assertEqual({k: v.tolist() for k, v in SU.selection(sparse).items()},
                         {"pw": sorted(np.argsort(-norms)[:2].tolist())})
        self.assertEqual(SU.efficiency(sparse).units, 2 * 42)

        class Greedy(SU.Strategy):
            def select(self, context):
                return {n: np.arange(context.costs[n].in_channels) for n in context.layers}

        with pytest.raises(ValueError, match="over the budget"):
            SU.wrap(model, budget=100, layers=["pw"], strategy=Greedy())

    def test_weight_decay_is_refused_unless_excluded(self):
        sparse = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES)
        _, _, ds = data()
        sparse.compile(keras.optimizers.SGD(0.1, weight_decay=1e-4), LOSS)
        with pytest.raises(ValueError, match="weight decay"):
            sparse.fit(ds, epochs=1, verbose=0, callbacks=[SU.ChannelResampler()])
        opt = keras.optimizers.SGD(0.1, weight_decay=1e-4)
        opt.exclude_from_weight_decay(var_list=SU.sparse_kernels(sparse))
        sparse.compile(opt, LOSS)
        sparse.fit(ds, epochs=1, verbose=0, callbacks=[SU.ChannelResampler()])


class RankingTest(parameterized.TestCase):

    def test_rgn_of_one_step_equals_hand_computation(self):
        model = small_cnn()
        x, y, _ = data(16)
        ranking = SU.rank_layers(model, (x, y), epochs=1, optimizer=keras.optimizers.SGD(0.0),
                                 verbose=0)
        costs = SU.cost_table(model)
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=False))  # the ranking run freezes BatchNormalization
        grads = tape.gradient(loss, [model.get_layer(n).kernel for n in costs.names])
        for name, g in zip(costs.names, grads):
            axes = (1,) if costs[name].kind == "dense" else (0, 1, 3)
            expected = (np.sqrt((g.numpy() ** 2).sum(axis=axes)) / costs[name].units_per_channel).sum()
            self.assertAlmostEqual(ranking.scores[name], expected, delta=1e-6 * max(1, expected))
        np.testing.assert_array_equal(model.get_layer("c1").kernel.numpy(),
                                      small_cnn().get_layer("c1").kernel.numpy())  # not modified

    @parameterized.parameters("sparse", "one_hot")
    def test_class_sorted_data_warns_and_shuffled_data_does_not(self, labels):
        model = small_cnn()
        x, y, _ = data(64)
        order = np.argsort(y, kind="stable")
        y_sorted = y[order]
        if labels == "one_hot":
            y_sorted = keras.utils.to_categorical(y_sorted, 3)
        sorted_ds = tf.data.Dataset.from_tensor_slices((x[order], y_sorted)).batch(4)
        with pytest.warns(UserWarning, match="sorted by class"):
            SU.rank_layers(model, sorted_ds, epochs=1, loss=LOSS if labels == "sparse" else
                           keras.losses.CategoricalCrossentropy(from_logits=True), verbose=0)
        shuffled = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        self.assertGreater(len(np.unique(y[:8])), 1)  # the fixture's order mixes classes
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            SU.rank_layers(model, shuffled, epochs=1, verbose=0)

    def test_top_k_save_load_plot(self):
        ranking = SU.LayerRanking({"a": 1.0, "b": 60.0, "c": 30.0, "d": 9.0})
        self.assertEqual(ranking.ranked, ["b", "c", "d", "a"])
        self.assertEqual(ranking.top_k(coverage=0.90), ["b", "c"])
        self.assertEqual(ranking.top_k(coverage=0.97), ["b", "c", "d"])  # 99 % >= 97 %
        self.assertEqual(ranking.top_k(coverage=1.0), ["a", "b", "c", "d"])
        self.assertEqual(ranking.top_k(k=1), ["b"])
        path = os.path.join(tempfile.mkdtemp(), "r.json")
        ranking.save(path)
        self.assertEqual(SU.LayerRanking.load(path).scores, ranking.scores)
        self.assertAlmostEqual(SU.LayerRanking.load(path).spearman(ranking), 1.0)
        png = ranking.plot(path.replace(".json", ".png"))
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        with open(path, "w") as f:
            f.write("{not json")
        with pytest.raises(ValueError, match="not a layer-ranking"):
            SU.LayerRanking.load(path)
        for bad in ({}, {"a": float("nan")}, {"a": -1.0}):
            with pytest.raises(ValueError):
                SU.LayerRanking(bad)
        with pytest.raises(ValueError):
            ranking.top_k(coverage=0.0)


class BadInputTest(parameterized.TestCase):

    def test_bad_wrap_calls_leave_model_untouched(self):
        model = small_cnn()
        before = [w.copy() for w in model.get_weights()]
        cases = [
            (dict(budget=400, layers=["nope"]), KeyError),
            (dict(budget=400, layers=["head"]), KeyError),       # the classifier is not selectable
            (dict(budget=400), ValueError),                       # tradi needs layers
            (dict(budget=400, layers=CANDIDATES, strategy="magic"), ValueError),
            (dict(budget=400, strategy="dynamic_full_random", layers=["c1"]), ValueError),
            (dict(budget=400, strategy="dynamic_det_rgn"), ValueError),  # no data
            (dict(strategy="su"), ValueError),
            (dict(strategy="su", scheme={"pw": 1.5}), ValueError),
            (dict(budget=400, layers=["c1", "c1"]), ValueError),
            (dict(budget=400, layers=SU.LayerRanking({"c1": 1.0})), TypeError),
            (dict(budget=400, layers=CANDIDATES, seed="x"), ValueError),
        ]
        for kwargs, error in cases:
            with pytest.raises(error):
                SU.wrap(model, **kwargs)
        for a, b in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)
        self.assertTrue(all(l.trainable for l in model.layers))

    def test_models_and_layers_that_cannot_be_wrapped(self):
        # (A subclassed model is refused: tests/test_bad_input.py.)
        sparse = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES)
        with pytest.raises(ValueError, match="already wrapped"):
            SU.wrap(sparse, budget=400, layers=CANDIDATES)
        with pytest.raises(ValueError, match="nothing to strip"):
            SU.strip(small_cnn())
        with pytest.raises(ValueError, match="Cannot sparse-update"):
            SU.ChannelSparseUpdate(keras.layers.Conv2D(4, 3, dilation_rate=2))
        with pytest.raises(ValueError, match="unknown size"):
            inp = keras.Input((None, None, 3))
            SU.cost_table(keras.Model(inp, keras.layers.Dense(2)(
                keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp)))))
        w = SU.sparse_layers(sparse)[0]
        for bad in ([5], [-1], [0, 0]):
            with pytest.raises(ValueError):
                w.set_channels(bad)
        before = {k: v.tolist() for k, v in SU.selection(sparse).items()}
        with pytest.raises(ValueError, match="pw"):  # c1 is valid, pw is not: nothing changes
            SU.set_selection(sparse, {"c1": [0, 1], "pw": [99]})
        self.assertEqual({k: v.tolist() for k, v in SU.selection(sparse).items()}, before)
        w.num_channels.assign(99)  # a corrupted selection is detected
        with pytest.raises(ValueError, match="invalid"):
            w.check_selection()
        with pytest.raises(ValueError, match="no sparse-update sampler"):
            SU.resample(keras.models.clone_model(small_cnn()))
