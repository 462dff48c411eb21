"""Exact top-k selection: keep exactly k weights, ties broken deterministically by position.

Why not "prune everything <= threshold": when many scores tie (common at initialization and with
saturated scores), that rule misses the target density by a wide margin.
"""

import math

import numpy as np


def top_k(scores, k):
    """Boolean array keeping the k largest scores; among equal scores, lower indices win."""
    scores = np.asarray(scores).ravel()
    n = scores.size
    keep = np.zeros(n, bool)
    if k <= 0:
        return keep
    if k >= n:
        keep[:] = True
        return keep
    kth = np.partition(scores, n - k)[n - k]  # The k-th largest value.
    keep[scores > kth] = True
    need = k - int(keep.sum())
    keep[np.flatnonzero(scores == kth)[:need]] = True
    return keep


def select(scores, alive, density, scope="global", min_density=0.0):
    """New masks (list of bool arrays) keeping exactly round(density * N) of the alive weights.

    Args:
      scores: per-layer score arrays.
      alive: per-layer bool arrays; only alive weights can be kept (pruned weights never revive).
      density: target fraction of all weights (N = total size) to keep.
      scope: "global" ranks all layers together; "local" keeps round(density * n_l) per layer.
      min_density: each layer keeps at least ceil(min_density * n_l) weights (if alive).
    """
    sizes = [s.size for s in scores]
    if scope == "local":
        out = []
        for s, a, n in zip(scores, alive, sizes):
            k = min(int(round(density * n)), int(a.sum()))
            k = max(k, min(math.ceil(min_density * n), int(a.sum())))
            out.append(_keep_among_alive(s, a, k))
        return out
    total = sum(sizes)
    k = int(round(density * total))
    alive_count = sum(int(a.sum()) for a in alive)
    if k > alive_count:
        raise ValueError(f"Cannot keep {k} weights: only {alive_count} are still unpruned.")
    forced = [np.zeros(n, bool) for n in sizes]
    if min_density > 0:
        for i, (s, a, n) in enumerate(zip(scores, alive, sizes)):
            forced[i] = _keep_among_alive(s, a, min(math.ceil(min_density * n), int(a.sum())))
        n_forced = sum(int(f.sum()) for f in forced)
        if n_forced > k:
            raise ValueError(
                f"min_density={min_density} forces {n_forced} weights, more than the {k} that density "
                f"{density:.6f} allows; lower min_density or the sparsity."
            )
        k -= n_forced
    flat_scores = np.concatenate([np.asarray(s, np.float64).ravel() for s in scores])
    flat_free = np.concatenate([(a.ravel() & ~f.ravel()) for a, f in zip(alive, forced)])
    candidates = np.flatnonzero(flat_free)
    chosen = candidates[top_k(flat_scores[candidates], k)]
    flat_keep = np.concatenate([f.ravel() for f in forced])
    flat_keep[chosen] = True
    out, start = [], 0
    for s, n in zip(scores, sizes):
        out.append(flat_keep[start : start + n].reshape(np.shape(s)))
        start += n
    return out


def _keep_among_alive(scores, alive, k):
    flat_alive = np.flatnonzero(alive.ravel())
    keep = np.zeros(alive.size, bool)
    keep[flat_alive[top_k(np.asarray(scores).ravel()[flat_alive], k)]] = True
    return keep.reshape(alive.shape)
