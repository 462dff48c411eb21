"""PX and SynFlow beyond ReLU networks, against the brute-force path enumeration: smooth
activations (their derivative at the real pre-activation is the data term's gate), affine layers
and `keras.ops` arithmetic with constants (path weights), LayerNormalization (1/sigma^2 of the real
data as a gate, gamma as a path weight) and a squeeze-excite product (the product rule in z1)."""

import sys

import keras
import numpy as np
import pytest

import tf_tradyx as tx
from tests import path_reference as ref

RNG = np.random.default_rng(11)
KERNELS = ("d1", "d2", "dg", "d3", "do")


def _f32(a):
    """Values a float32 layer holds exactly, so that the float64 reference uses the same ones."""
    return a.astype(np.float32).astype(np.float64)


def _case():
    """x / 2 - 0.5 -> Normalization -> Dense silu -> Dense -> gelu -> LayerNorm -> (Dense sigmoid
    gate) * itself -> Dense hard_silu -> Dense; and the same network as a unit graph."""
    inputs = keras.Input((4,))
    h = keras.ops.subtract(keras.ops.divide(inputs, 2.0), 0.5)
    mean, var = _f32(RNG.normal(size=4)), _f32(RNG.uniform(0.5, 2.0, 4))
    h = keras.layers.Normalization(mean=mean, variance=var, name="norm")(h)
    h = keras.layers.Dense(5, activation="silu", name="d1")(h)
    h = keras.layers.Dense(5, name="d2")(h)
    h = keras.layers.Activation("gelu", name="gelu")(h)
    ln = keras.layers.LayerNormalization(name="ln")(h)
    gate = keras.layers.Dense(5, activation="sigmoid", name="dg")(ln)
    h = keras.layers.Multiply(name="se")([ln, gate])
    h = keras.layers.Dense(4, activation="hard_silu", name="d3")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="do")(h))

    sizes = {"d1": (4, 5), "d2": (5, 5), "dg": (5, 5), "d3": (5, 4), "do": (4, 3)}
    params = {}
    for name, shape in sizes.items():
        params[name] = _f32(RNG.normal(scale=0.8, size=shape))
        params[(name, "b")] = _f32(RNG.normal(scale=0.3, size=shape[1]))
        model.get_layer(name).set_weights([params[name], params[(name, "b")]])
    params[("ln", "ln")] = (
        _f32(RNG.uniform(0.5, 1.5, 5)),
        _f32(RNG.normal(scale=0.2, size=5)),
        1e-3,
    )
    model.get_layer("ln").set_weights(list(params[("ln", "ln")][:2]))

    net = ref.UnitNet()
    net.add_tensor("x", 4)
    net.add_tensor("shifted", 4)
    net.add_tensor("norm", 4)
    for u in range(4):  # x / 2 - 0.5, then (. - mean) / std: two affine edges
        std = np.sqrt(var[u])
        net.connect("x", u, "shifted", u, ("a", 0.5, -0.5))
        net.connect("shifted", u, "norm", u, ("a", 1 / std, -mean[u] / std))
    for name, src, act in (("d1", "norm", "silu"), ("d2", "d1", "gelu")):
        ref.dense(net, src, name, *sizes[name], name)
        net.bias[name] = (name, list(range(sizes[name][1])))
        net.smooth[name] = act
    ref.layer_norm(net, "d2", "ln", "ln")
    ref.dense(net, "ln", "dg", 5, 5, "dg")
    net.bias["dg"] = ("dg", list(range(5)))
    net.smooth["dg"] = "sigmoid"
    ref.product(net, "ln", "dg", "se")
    ref.dense(net, "se", "d3", 5, 4, "d3")
    net.bias["d3"] = ("d3", list(range(4)))
    net.smooth["d3"] = "hard_silu"
    ref.dense(net, "d3", "do", 4, 3, "do")
    net.bias["do"] = ("do", list(range(3)))
    x = RNG.normal(scale=2.0, size=(12, 4))
    masks = {n: (RNG.random(sizes[n]) < 0.75).astype(np.float64) for n in KERNELS}
    return model, net, params, masks, x


def _masked(model, masks):
    masked = tx.pruning.wrap(model)
    for w in tx.pruning.masked_layers(masked):
        w.masks[0].assign(masks[w.layer.name].astype(np.float32))
        w.apply_masks()
    return masked


def test_the_reference_network_is_the_keras_network():
    model, net, params, _, x = _case()
    expected = ref.real_forward(net, x, params)[net.order[-1]] + 0.0
    np.testing.assert_allclose(model(x.astype(np.float32)).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exact", [False, True])
def test_px_scores_equal_path_enumeration_beyond_relu(exact):
    model, net, params, masks, x = _case()
    masked = _masked(model, masks)
    expected, z1 = ref.px_scores(net, x, params, masks)
    pruner = tx.pruning.PXPruner(verbose=False, exact_data_term=exact)
    got = pruner.score(masked, (x.astype(np.float32), np.zeros(len(x))))
    assert z1.min() > 0
    # The real pass runs in float32: each gate (a derivative at a float32 pre-activation over a
    # fan-in of at most 5) carries a relative error of a few 1e-7, and a path multiplies at most
    # eight of them; 1e-4 leaves a wide margin and still catches a wrong gate (errors of order 1).
    for n in KERNELS:
        np.testing.assert_allclose(got[f"{n}/kernel"], expected[n], rtol=1e-4, atol=0, err_msg=n)
        assert np.all(got[f"{n}/kernel"][masks[n] == 0] == 0)


def test_synflow_scores_equal_the_linearised_network_beyond_relu():
    model, net, params, masks, _ = _case()
    masked = _masked(model, masks)
    expected = ref.synflow_scores(net, params, masks)
    got = tx.pruning.SynFlowPruner(verbose=False).score(masked)
    for n in KERNELS:  # float64 on both sides
        np.testing.assert_allclose(got[f"{n}/kernel"], expected[n], rtol=1e-9, atol=0, err_msg=n)


def test_synflow_is_not_blind_behind_relu6():
    """SynFlow on a ReLU6 network linearises the activation: with |theta| on the all-ones input
    the ReLU6 saturates, and its real derivative (0) would zero every path through it."""
    inputs = keras.Input((6,))
    h = keras.layers.Dense(32, activation="relu6", name="a")(inputs)
    h = keras.layers.Dense(32, activation="relu6", name="b")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="c")(h))
    for layer in model.layers[1:]:
        layer.set_weights([np.full(layer.kernel.shape, 0.5, np.float32), np.ones(layer.units)])
    scores = tx.pruning.SynFlowPruner(verbose=False).score(tx.pruning.wrap(model))
    for name in ("a", "b", "c"):
        assert np.all(scores[f"{name}/kernel"] > 0), name


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
