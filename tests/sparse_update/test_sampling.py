"""Filling a budget with channels: within the budget and the layers, greedy, uniform over channels,
and budgets too small to buy a channel refused with the minimum named."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, equal_cost_model, small_cnn
from tf_tradyx.sparse_update import sampling

SU = tx.sparse_update


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    budget=st.integers(150, 4_000),
    layers=st.sampled_from([["c1"], ["dw", "pw"], CANDIDATES, ["c1", "fc"]]),
)
def test_selection_fits_budget_and_stays_in_layers(seed, budget, layers):
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


def test_uniform_over_channels_chi_square():
    costs = SU.cost_table(equal_cost_model())
    layers = ["b", "b2"]  # 10 + 4 = 14 channels of 5 units each... plus 'a' excluded
    assert {costs[n].units_per_channel for n in layers} == {5}
    rng = np.random.default_rng(0)
    draws, k = 3000, 3
    counts = np.zeros(14)
    for _ in range(draws):
        chosen = sampling.random_channels(costs, layers, 5 * k, rng)
        assert sum(len(c) for c in chosen.values()) == k
        for c in chosen.get("b", []):
            counts[c] += 1
        for c in chosen.get("b2", []):
            counts[10 + c] += 1
    expected = draws * k / 14
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 34.53  # chi-square, 13 degrees of freedom, p = 0.001
    # And a sampler that always prefers the first layer would fail this test:
    biased = counts.copy()
    biased[:10] += 50
    assert (((biased - expected) ** 2) / expected).sum() > 34.53


def test_budget_errors_name_the_minimum():
    model = small_cnn()
    with pytest.raises(ValueError, match=r"cheapest .* costs 42 units.*>= 42"):
        SU.wrap(model, budget=41, layers=["dw", "pw"])
    for bad in (0, -5, 12.5, "lots", True, None):
        with pytest.raises(ValueError):
            SU.wrap(model, budget=bad, layers=["dw", "pw"])
    # Above full fine-tuning is allowed and reported.
    big = SU.wrap(model, budget=10**6, layers=CANDIDATES)
    eff = SU.efficiency(big)
    assert eff.units == eff.full_units
    assert eff.budget > eff.full_units


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
