"""ChannelSparseUpdate: kernel and input gradients against a dense tape, no backward pass below the
earliest wrapped layer, the layer's own forward computation, and what cannot be wrapped."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, data, small_cnn

SU = tx.sparse_update


@pytest.mark.parametrize(
    "chosen",
    [
        {"c1": [1], "dw": [0, 5, 7], "pw": [2, 3], "fc": [4]},
        {"c1": [0, 1, 2], "dw": list(range(8)), "pw": list(range(8)), "fc": list(range(5))},
        {"pw": [6]},
        {},
    ],
)
def test_kernel_and_input_gradients_equal_dense_ones(chosen):
    model = small_cnn()
    sparse = SU.wrap(model, budget=10_000, layers=CANDIDATES, strategy="tradi")
    SU.set_selection(sparse, chosen)
    # nothing trains before c1
    assert [w.input_gradient for w in SU.sparse_layers(sparse)] == [False, True, True, True]
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
        np.testing.assert_allclose(
            np.take(g, sel, axis=-2),
            np.take(d, sel, axis=-2),
            rtol=1e-5,
            atol=1e-7,
            err_msg=name,
        )
        assert np.all(np.take(g, unsel, axis=-2) == 0), name
        if len(sel):
            assert np.abs(np.take(d, sel, axis=-2)).sum() > 0


@pytest.mark.parametrize("update_bias,jit", [(False, False), (True, False), (True, True)])
def test_a_trainable_bias_gets_its_dense_gradient(update_bias, jit):
    """The bias is added inside the wrapper's custom gradient (so the conv and bias add
    fuse); its gradient must still be the dense one, and only when it trains."""
    model = small_cnn()
    sparse = SU.wrap(model, budget=10_000, layers=CANDIDATES, update_bias=update_bias)
    SU.set_selection(sparse, {"dw": [1], "pw": [2], "fc": [0]})  # c1 draws nothing
    x, y, _ = data(8)
    x = tf.constant(x)

    def grads(m, biases):
        @tf.function(jit_compile=jit)
        def g():
            with tf.GradientTape() as tape:
                loss = LOSS(y, m(x, training=False))
            return tape.gradient(loss, biases)

        return g()

    by_name = {w.layer.name: w for w in SU.sparse_layers(sparse)}
    got = grads(sparse, [by_name[n].layer.bias for n in CANDIDATES])
    if not update_bias:  # frozen: not even computed
        assert got == [None] * len(CANDIDATES)
        return
    dense = grads(model, [model.get_layer(n).bias for n in CANDIDATES])
    for name, g, d in zip(CANDIDATES, got, dense):
        assert np.abs(d.numpy()).sum() > 0, name
        np.testing.assert_allclose(g.numpy(), d.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)


def test_no_backward_pass_before_the_earliest_wrapped_layer():
    sparse = SU.wrap(small_cnn(), budget=10_000, layers=["pw", "fc"])
    assert [w.input_gradient for w in SU.sparse_layers(sparse)] == [False, True]
    x, y, _ = data(8)
    x = tf.constant(x)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = LOSS(y, sparse(x, training=False))
        return tape.gradient(loss, [x] + sparse.trainable_variables)

    g = grads()
    assert g[0] is None
    assert all(t is not None for t in g[1:])
    ops = {op.type for op in grads.get_concrete_function().graph.get_operations()}
    # Even with the input watched, nothing propagates below 'pw' (c1 and dw are frozen).
    assert "Conv2DBackpropInput" not in ops
    assert "DepthwiseConv2dNativeBackpropInput" not in ops


def test_forward_is_the_layers_own_computation():
    model = small_cnn()
    sparse = SU.wrap(model, budget=10_000, layers=CANDIDATES)
    x, _, _ = data(4)
    np.testing.assert_allclose(sparse(x), model(x, training=False), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(SU.strip(sparse)(x), model(x), rtol=1e-5, atol=1e-6)


def test_models_and_layers_that_cannot_be_wrapped():
    # (A subclassed model is refused: tests/integration/test_bad_input.py.)
    sparse = SU.wrap(small_cnn(), budget=400, layers=CANDIDATES)
    with pytest.raises(ValueError, match="already wrapped"):
        SU.wrap(sparse, budget=400, layers=CANDIDATES)
    with pytest.raises(ValueError, match="nothing to strip"):
        SU.strip(small_cnn())
    with pytest.raises(ValueError, match="Cannot sparse-update"):
        SU.ChannelSparseUpdate(keras.layers.Conv2D(4, 3, data_format="channels_first"))
    with pytest.raises(ValueError, match="Cannot sparse-update"):
        SU.ChannelSparseUpdate(keras.layers.Conv1D(4, 3, data_format="channels_first"))
    with pytest.raises(ValueError, match="unknown size"):
        inp = keras.Input((None, None, 3))
        SU.cost_table(
            keras.Model(
                inp,
                keras.layers.Dense(2)(
                    keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
                ),
            )
        )
    w = SU.sparse_layers(sparse)[0]
    for bad in ([5], [-1], [0, 0]):
        with pytest.raises(ValueError):
            w.set_channels(bad)
    before = {k: v.tolist() for k, v in SU.selection(sparse).items()}
    with pytest.raises(ValueError, match="pw"):  # c1 is valid, pw is not: nothing changes
        SU.set_selection(sparse, {"c1": [0, 1], "pw": [99]})
    assert {k: v.tolist() for k, v in SU.selection(sparse).items()} == before
    w.num_channels.assign(99)  # a corrupted selection is detected
    with pytest.raises(ValueError, match="invalid"):
        w.check_selection()
    with pytest.raises(ValueError, match="no sparse-update sampler"):
        SU.resample(keras.models.clone_model(small_cnn()))


def _grouped_dilated_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(12, 3, padding="same", groups=4, name="grouped")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, name="dilated")(x)
    x = keras.layers.DepthwiseConv2D(
        3, padding="same", dilation_rate=2, depth_multiplier=2, name="dw_dilated"
    )(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="valid", groups=2, name="grouped_strided")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


GROUPED = {"grouped": 8, "dilated": 12, "dw_dilated": 8, "grouped_strided": 16}


def _expected_kernel_mask(layer, chosen):
    """1 where a kernel element belongs to a selected input channel: row c % rows of a grouped
    kernel, in the columns of group c // rows."""
    kernel = layer.kernel.shape
    mask = np.zeros(kernel, np.float32)
    groups = getattr(layer, "groups", 1) if isinstance(layer, keras.layers.Conv2D) else 1
    rows, per_group = kernel[-2], kernel[-1] // groups
    for c in chosen:
        group = c // rows
        mask[..., c % rows, group * per_group : (group + 1) * per_group] = 1
    return mask


@pytest.mark.parametrize("simulate", [False, True])
def test_grouped_and_dilated_convs_train_only_their_selected_channels(simulate):
    """Kernel and input gradients equal the dense tape's on the selected channels (a grouped
    conv's channel reaches only its own group), zero elsewhere; the paper's simulation agrees."""
    model = _grouped_dilated_model()
    rng = np.random.default_rng(0)
    chosen = {n: sorted(rng.choice(c, size=c // 2 - 1, replace=False)) for n, c in GROUPED.items()}
    sparse = SU.wrap(model, budget=10**6, layers=list(GROUPED), strategy="tradi", simulate=simulate)
    SU.set_selection(sparse, chosen)
    x = tf.constant(rng.normal(size=(4, 10, 10, 4)).astype(np.float32))
    y = tf.constant([0, 1, 2, 0])

    def grads(m, layer_of):
        variables = [layer_of(m, n).kernel for n in GROUPED]
        with tf.GradientTape() as tape:
            loss = LOSS(y, m(x, training=False))
        return [g.numpy() for g in tape.gradient(loss, variables)]

    dense = grads(model, lambda m, n: m.get_layer(n))
    by_name = {w.layer.name: w for w in SU.sparse_layers(sparse)}
    got = grads(sparse, lambda m, n: by_name[n])
    for (name, g), d in zip(zip(GROUPED, got), dense):
        keep = _expected_kernel_mask(model.get_layer(name), chosen[name])
        np.testing.assert_allclose(g, d * keep, rtol=1e-4, atol=1e-6, err_msg=name)
        assert np.all(g[keep == 0] == 0), name


def test_grouped_and_dilated_convs_train_under_xla_like_the_graph_path():
    runs = []
    for jit in (False, True):
        model = _grouped_dilated_model()
        sparse = SU.wrap(model, budget=10**6, layers=list(GROUPED), strategy="tradi")
        SU.set_selection(sparse, {"grouped": [1, 6], "dw_dilated": [3], "grouped_strided": [0, 9]})
        sparse.compile(keras.optimizers.SGD(0.1), LOSS, jit_compile=jit)
        x = np.random.default_rng(1).normal(size=(8, 10, 10, 4)).astype(np.float32)
        history = sparse.fit(x, np.arange(8) % 3, batch_size=4, epochs=2, verbose=0, shuffle=False)
        runs.append((history.history["loss"], [np.asarray(v) for v in sparse.trainable_weights]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-4)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("empty", [["c1", "fc"], ["dw"], ["pw", "dw", "c1"]])
def test_trains_under_xla_like_the_graph_path_even_when_a_layer_draws_no_channel(empty):
    """Keras compiles train steps with XLA by default on GPUs; a layer whose draw holds no
    channel used to fail there (a zero-depth filter gradient in a tf.cond branch)."""
    runs = {}
    for jit in (False, True):
        sparse = tx.sparse_update.wrap(small_cnn(), budget=400, layers=CANDIDATES, seed=2)
        chosen = {n: [0, 1] for n in CANDIDATES if n not in empty}
        tx.sparse_update.set_selection(sparse, chosen)
        before = {
            w.layer.name: np.asarray(w.kernel).copy()
            for w in tx.sparse_update.sparse_layers(sparse)
        }
        sparse.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS, jit_compile=jit)
        _, _, ds = data()
        history = sparse.fit(ds, epochs=2, verbose=0, shuffle=False)
        runs[jit] = ([np.asarray(v) for v in sparse.weights], history.history["loss"])
        for w in tx.sparse_update.sparse_layers(sparse):  # exact, under XLA too
            frozen = [c for c in range(w.in_channels) if c not in chosen.get(w.layer.name, [])]
            np.testing.assert_array_equal(
                np.asarray(w.kernel)[..., frozen, :], before[w.layer.name][..., frozen, :]
            )
    # XLA fuses and reorders float32 sums (relative rounding ~1e-7 per op); over 8 momentum steps
    # of this 5-layer net the differences stay orders of magnitude below these tolerances, while a
    # wrong gradient (a channel updated or not) changes weights at the 1e-2 level.
    np.testing.assert_allclose(runs[True][1], runs[False][1], rtol=1e-5)
    for a, b in zip(runs[False][0], runs[True][0]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


_EMPTY_DRAW_WITHOUT_ONEDNN = """
import numpy as np, keras, tf_tradyx as tx
from tests.testing_utils import CANDIDATES, small_cnn
sparse = tx.sparse_update.wrap(small_cnn(), budget=400, layers=CANDIDATES, seed=2)
tx.sparse_update.set_selection(sparse, {"pw": [0, 1]})  # every other layer draws nothing
before = [np.asarray(w.kernel).copy() for w in tx.sparse_update.sparse_layers(sparse)]
sparse.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy", jit_compile=False)
x = np.random.default_rng(0).normal(size=(8, 12, 12, 3)).astype("float32")
loss = sparse.fit(x, np.arange(8) % 3, epochs=1, verbose=0).history["loss"][-1]
for w, b in zip(tx.sparse_update.sparse_layers(sparse), before):
    frozen = [c for c in range(w.in_channels) if w.layer.name != "pw" or c > 1]
    assert np.array_equal(np.asarray(w.kernel)[..., frozen, :], b[..., frozen, :]), w.layer.name
print("finite" if np.isfinite(loss) else "nan")
"""


@pytest.mark.slow
def test_an_empty_draw_trains_on_tensorflows_own_conv_kernels():
    """GPUs, and CPUs without oneDNN, run TensorFlow's own conv filter-gradient kernels, which
    refuse a zero-channel input ("filter depth must be strictly greater than zero"); oneDNN,
    which this suite otherwise runs, accepts it. So the check runs in a process without oneDNN."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _EMPTY_DRAW_WITHOUT_ONEDNN],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert out.stdout.strip().splitlines()[-1:] == ["finite"], out.stderr[-3000:]


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
