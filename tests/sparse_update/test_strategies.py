"""The strategies the TraDy paper compares: static ones keep their selection, whole-variable ones
train exactly their variables, Det RGN takes the highest-RGN channels."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, Recorder, data, small_cnn

SU = tx.sparse_update


@pytest.mark.parametrize(
    "strategy,kwargs,ranks_on_data",
    [
        ("static_topk_random", {"budget": 400, "layers": CANDIDATES}, False),
        ("static_full_random", {"budget": 400}, False),
        ("static_det_rgn", {"budget": 400}, True),
    ],
)
def test_static_strategies_keep_their_selection(strategy, kwargs, ranks_on_data):
    _, _, ds = data()
    if ranks_on_data:
        kwargs = {**kwargs, "data": ds}
    sparse = SU.wrap(small_cnn(), strategy=strategy, **kwargs)
    sparse.compile(keras.optimizers.SGD(0.05), LOSS)
    rec = Recorder()
    sparse.fit(ds, epochs=3, verbose=0, callbacks=[SU.ChannelResampler(), rec])
    assert rec.selections[0] == rec.selections[-1], strategy
    assert SU.efficiency(sparse).units <= 400


def test_whole_variable_strategies(tmp_path):
    _, _, ds = data()
    expected = {
        "full": {
            "c1/kernel",
            "c1/bias",
            "dw/kernel",
            "dw/bias",
            "pw/kernel",
            "pw/bias",
            "fc/kernel",
            "fc/bias",
            "head/kernel",
            "head/bias",
        },
        "classifier": {"head/kernel", "head/bias"},
        "bias": {"c1/bias", "dw/bias", "pw/bias", "fc/bias", "head/kernel", "head/bias"},
    }
    for strategy, trainable in expected.items():
        sparse = SU.wrap(small_cnn(), strategy=strategy)
        assert {v.path for v in sparse.trainable_variables} == trainable, strategy
        before = {v.path: v.numpy().copy() for v in sparse.variables}
        sparse.compile(keras.optimizers.SGD(0.1), LOSS)
        sparse.fit(ds, epochs=1, verbose=0, callbacks=[SU.ChannelResampler()])
        for v in sparse.variables:
            moved = not np.array_equal(v.numpy(), before[v.path])
            assert moved == (v.path in trainable), f"{strategy}: {v.path}"
    # A .keras file keeps which layers train, not which variables: attach restores bias-only.
    path = str(tmp_path / "bias.keras")
    SU.wrap(small_cnn(), strategy="bias").save(path)
    loaded = SU.attach(keras.models.load_model(path), strategy="bias")
    assert {v.path for v in loaded.trainable_variables} == expected["bias"]
    e = SU.efficiency(SU.wrap(small_cnn(), strategy="full"))
    assert (e.units, e.activation_sparsity) == (e.full_units, 0.0)


def test_det_rgn_takes_highest_rgn_channels():
    model = small_cnn()
    _, _, ds = data()
    costs = SU.cost_table(model)
    sparse = SU.wrap(model, budget=500, strategy=SU.DetRGN(data=ds, batches=2))
    # Brute force: dense gradients of the plain model over the same two batches.
    total = {}
    for x, y in ds.take(2):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=False))
        for name, g in zip(
            costs.names, tape.gradient(loss, [model.get_layer(n).kernel for n in costs.names])
        ):
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
    assert got == {k: sorted(v) for k, v in expected.items()}


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
