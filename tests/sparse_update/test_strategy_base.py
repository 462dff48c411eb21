"""A user-defined Strategy: its selection is used, and its budget is checked."""

import sys

import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import small_cnn
from tf_tradyx.sparse_update import strategy_base

SP = tx.sparse_update
SU = tx.sparse_update


def test_user_defined_strategy_and_its_budget_check():
    class LargestNormFirstLayer(SU.Strategy):
        dynamic = False

        def select(self, context):
            w = [w for w in SU.sparse_layers(context.model) if w.layer.name == context.layers[0]][0]
            norms = SU.channel_norms(w.kernel, w.kind)
            return {w.layer.name: np.argsort(-norms)[:2]}

    model = small_cnn()
    sparse = SU.wrap(model, budget=400, layers=["pw", "fc"], strategy=LargestNormFirstLayer())
    norms = np.sqrt((model.get_layer("pw").kernel.numpy() ** 2).sum(axis=(0, 1, 3)))
    assert {k: v.tolist() for k, v in SU.selection(sparse).items()} == {
        "pw": sorted(np.argsort(-norms)[:2].tolist())
    }
    assert SU.efficiency(sparse).units == 2 * 42

    class Greedy(SU.Strategy):
        def select(self, context):
            return {n: np.arange(context.costs[n].in_channels) for n in context.layers}

    with pytest.raises(ValueError, match="over the budget"):
        SU.wrap(model, budget=100, layers=["pw"], strategy=Greedy())


@pytest.mark.parametrize(
    "strategy",
    [
        SP.TraDy(["c1", "pw"]),
        SP.RandomChannels(["pw", "fc"], dynamic=False),
        SP.RandomChannels(None, dynamic=True),
        SP.DetRGN(layers=["pw"], batches=2, dynamic=False),
        SP.SU({"pw": 0.5, "fc": 0.25}, bias_layers=1),
        SP.SU("mbv2-w0.35/50kb"),
        SP.WholeVariables("bias"),
    ],
)
def test_every_strategy_round_trips_through_its_config(strategy):
    again = strategy_base.deserialize(strategy_base.serialize(strategy))
    assert type(again) is type(strategy)
    assert again.get_config() == strategy.get_config()
    assert (again.name, again.dynamic, again.mode) == (
        strategy.name,
        strategy.dynamic,
        strategy.mode,
    )


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
