"""Exact top-k selection: ties, scopes, min_density, and its properties under hypothesis."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_tradyx.pruning import mask_selection as ranking


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


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    density=st.floats(0.0, 1.0),
    min_density=st.sampled_from([0.0, 0.05, 0.2]),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
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


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
