"""PX and SynFlow on attention, against the brute-force path enumeration (tests/path_reference.py):
attention written with Dense layers and `keras.ops` (matmul, transpose, a constant scale, softmax)
and `keras.layers.MultiHeadAttention` as one graph node. In the reference a matmul is what it is, a
sum of elementwise products of copies of its factors' entries, and the softmax a row-wise
normalisation whose data-term gate is the diagonal of its Jacobian; the package computes both
with its own einsum/matmul code (docs/METHODS.md 2.5)."""

import sys

import keras
import numpy as np
import pytest
from keras import layers, ops

import tf_tradyx as tx
from tests import path_reference as ref
from tf_tradyx.pruning import paths

T, D, H = 3, 2, 2  # tokens, model width, key width (one head)
SCALE = 0.75  # exact in float32 and float64


def _f32(a):
    """Values a float32 layer holds exactly, so that the float64 reference uses the same ones."""
    return a.astype(np.float32).astype(np.float64)


def _reference(scale_query):
    """The unit graph of x -> q, k, v -> softmax(q k^T * c) v -> Dense "o" (relu) -> average over
    tokens -> Dense "head"; the scale c on the scores (SCALE), or on q (1 / sqrt(H), as
    MultiHeadAttention does)."""
    net = ref.UnitNet()
    net.add_tensor("x", T * D)
    for name in ("q", "k", "v"):
        ref.token_dense(net, "x", name, T, D, H, name)
    query = "q"
    if scale_query:
        ref.scale(net, "q", "q_scaled", 1 / np.sqrt(H))
        query = "q_scaled"
    ref.transpose(net, "k", "k_t", T, H)
    ref.matmul(net, query, "k_t", "scores", T, H, T, "qk")
    if not scale_query:
        ref.scale(net, "scores", "scores_scaled", SCALE)
    ref.softmax_rows(net, net.order[-1], "p", T, T)
    ref.matmul(net, "p", "v", "pv", T, T, H, "pv")
    ref.token_dense(net, "pv", "o", T, H, D, "o")
    net.relu.add("o")
    ref.global_avg(net, "o", "avg", T, D)
    ref.dense(net, "avg", "head", D, 3, "head")
    net.bias["head"] = ("head", [0, 1, 2])
    return net


def _params(rng):
    shapes = {"q": (D, H), "k": (D, H), "v": (D, H), "o": (H, D), "head": (D, 3)}
    params = {}
    for name, shape in shapes.items():
        params[name] = _f32(rng.normal(scale=0.9, size=shape))
        params[(name, "b")] = _f32(rng.normal(scale=0.3, size=shape[1]))
    masks = {n: (rng.random(s) < 0.75).astype(np.float64) for n, s in shapes.items()}
    return params, masks


def _ops_attention(params):
    inputs = keras.Input((T, D))
    q, k, v = (layers.Dense(H, name=n)(inputs) for n in ("q", "k", "v"))
    s = ops.multiply(ops.matmul(q, ops.transpose(k, (0, 2, 1))), SCALE)
    o = ops.matmul(ops.softmax(s, axis=-1), v)
    o = layers.Dense(D, activation="relu", name="o")(o)
    model = keras.Model(inputs, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D()(o)))
    for name in ("q", "k", "v", "o", "head"):
        model.get_layer(name).set_weights([params[name], params[(name, "b")]])
    return model, {n: f"{n}/kernel" for n in ("q", "k", "v", "o", "head")}


def _mha_attention(params):
    inputs = keras.Input((T, D))
    mha = layers.MultiHeadAttention(1, H, name="mha")
    h = layers.ReLU(name="o_relu")(mha(inputs, inputs))
    model = keras.Model(inputs, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D()(h)))
    for name, dense in (("q", mha.query_dense), ("k", mha.key_dense), ("v", mha.value_dense)):
        dense.set_weights([params[name].reshape(D, 1, H), params[(name, "b")].reshape(1, H)])
    mha.output_dense.set_weights([params["o"].reshape(1, H, D), params[("o", "b")]])
    model.get_layer("head").set_weights([params["head"], params[("head", "b")]])
    names = {"q": "query", "k": "key", "v": "value", "o": "attention_output"}
    return model, {**{n: f"mha/{p}/kernel" for n, p in names.items()}, "head": "head/kernel"}


CASES = {"keras_ops": (_ops_attention, False), "multi_head_attention": (_mha_attention, True)}


def _case(which, seed=5):
    rng = np.random.default_rng(seed)
    params, masks = _params(rng)
    build, scale_query = CASES[which]
    model, names = build(params)
    masked = tx.pruning.wrap(model)
    by_name = {
        n: (w, i) for w in tx.pruning.masked_layers(masked) for i, n in enumerate(w.kernel_names)
    }
    for ref_name, name in names.items():
        w, i = by_name[name]
        w.masks[i].assign(masks[ref_name].reshape(w.masks[i].shape).astype(np.float32))
        w.apply_masks()
    x = rng.normal(scale=1.5, size=(10, T * D))
    return model, masked, names, _reference(scale_query), params, masks, x


@pytest.mark.parametrize("which", sorted(CASES))
def test_the_reference_network_is_the_keras_network(which):
    model, masked, _, net, params, masks, x = _case(which)
    expected = ref.real_forward(net, x, params)[net.order[-1]]
    x32 = x.reshape(-1, T, D).astype(np.float32)
    np.testing.assert_allclose(model(x32).numpy(), expected, rtol=1e-4, atol=1e-5)
    masked_params = {k: (v * masks[k] if k in masks else v) for k, v in params.items()}
    expected = ref.real_forward(net, x, masked_params)[net.order[-1]]
    # The path networks' real pass computes MultiHeadAttention from its parts: the masked model.
    gates = paths.GateRecorder()
    real = paths.PathNetwork(masked).run(x32, "real", gates=gates)
    np.testing.assert_allclose(real.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(real.numpy(), masked(x32).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("which", sorted(CASES))
def test_px_scores_on_attention_equal_path_enumeration(which, exact):
    _, masked, names, net, params, masks, x = _case(which)
    expected, z1 = ref.px_scores(net, x, params, masks)
    x32 = x.reshape(-1, T, D).astype(np.float32)
    got = tx.pruning.PXPruner(verbose=False, exact_data_term=exact).score(masked, x32)
    assert z1.min() > 0
    # The real pass runs in float32: each gate (a squared probability, a squared real factor,
    # p (1 - p) squared, a ReLU gate) carries a relative error of a few 1e-7 (fan-ins of at most
    # 3), a path multiplies at most six of them: 1e-4 leaves a wide margin and still catches a
    # wrong gate or a missing path (errors of order 1).
    for ref_name, name in names.items():
        score = got[name].reshape(expected[ref_name].shape)
        np.testing.assert_allclose(score, expected[ref_name], rtol=1e-4, atol=0, err_msg=name)
        assert np.all(score[masks[ref_name] == 0] == 0)
        assert np.all(score[masks[ref_name] == 1] > 0), name  # the query and key too


@pytest.mark.parametrize("which", sorted(CASES))
def test_synflow_scores_on_attention_equal_the_linearised_network(which):
    _, masked, names, net, params, masks, _ = _case(which)
    expected = ref.synflow_scores(net, params, masks)
    got = tx.pruning.SynFlowPruner(verbose=False).score(masked)
    for ref_name, name in names.items():  # float64 on both sides
        score = got[name].reshape(expected[ref_name].shape)
        np.testing.assert_allclose(score, expected[ref_name], rtol=1e-9, atol=0, err_msg=name)


def test_the_real_pass_computes_multi_head_attention_with_masks_as_keras_does():
    """Two heads, a key of its own, an attention mask computed from the input (a comparison and a
    cast: constants of the real pass) and a causal mask: the path networks' real pass recomputes
    the layer from its parts and must equal Keras' own call."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4, 6))
    keep = ops.cast(ops.greater(inputs[:, :, 0], -1.0), "int32")  # (batch, 4)
    mask = ops.logical_and(ops.expand_dims(keep, 1) > 0, ops.expand_dims(keep, 2) > 0)
    h = layers.Dense(6, name="key_source")(inputs)
    h = layers.MultiHeadAttention(2, 3, value_dim=4, name="mha")(
        inputs, inputs, key=h, attention_mask=mask, use_causal_mask=True
    )
    model = keras.Model(inputs, layers.Dense(2, name="head")(layers.Flatten()(h)))
    x = np.random.default_rng(2).normal(size=(6, 4, 6)).astype("float32")
    masked = tx.pruning.wrap(model)
    real = paths.PathNetwork(masked).run(x, "real", gates=paths.GateRecorder())
    np.testing.assert_allclose(real.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    scores = tx.pruning.PXPruner(verbose=False).score(masked, x)
    assert all(np.isfinite(v).all() and (v >= 0).all() for v in scores.values())
    assert all(v.max() > 0 for v in scores.values())


def test_recurrent_layers_are_refused_by_name_with_what_prunes_them():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    h = layers.LSTM(4, name="my_lstm")(inputs)
    model = tx.pruning.wrap(keras.Model(inputs, layers.Dense(2, name="head")(h)))
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype("float32")
    for pruner in (tx.pruning.PXPruner(verbose=False), tx.pruning.SynFlowPruner(verbose=False)):
        with pytest.raises(tx.pruning.UnsupportedLayerError, match="'my_lstm' .*recurrent") as e:
            pruner.prune(model, 0.5, x if pruner.needs_data else None)
        assert "SNIPPruner" in str(e.value) and "magnitude" in str(e.value)
    report = tx.pruning.SNIPPruner(verbose=False).prune(model, 0.5, (x, np.arange(8) % 2))
    names = [r["name"] for r in report.rows if r["kept"] < r["weights"]]
    assert "my_lstm/lstm_cell/recurrent_kernel" in names and report.coverage > 0.8


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
