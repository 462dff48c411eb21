"""Filling a memory budget with channels: uniformly at random (TraDy) or by score (Det RGN).

Both walk an ordered list of (layer, channel) candidates and add each one whose cost still fits,
skipping one that no longer does (docs/METHODS.md 1.4). Random order gives every channel the same chance
to come first; score order is the oracle.
"""

import numpy as np


def candidates(units):
    """(layer index, channel, cost) of every candidate, flat; `units` holds one array per layer,
    the cost of each of its channels (input channels for TraDy, output neurons for Velocity)."""
    layer_of = [np.full(len(u), i) for i, u in enumerate(units)]
    channel_of = [np.arange(len(u)) for u in units]
    return np.concatenate(layer_of), np.concatenate(channel_of), np.concatenate(units)


def _candidates(costs, names, count_pruned=True):
    return candidates([costs[name].channel_units(count_pruned) for name in names])


def fill(order, layer_of, channel_of, unit_of, budget, names):
    """{layer name: sorted channels}: candidates taken in `order`, each one whose cost still fits."""
    chosen = {n: [] for n in names}
    remaining = int(budget)
    cheapest = int(unit_of.min())
    for k in order:
        if remaining < cheapest:
            break
        u = int(unit_of[k])
        if u <= remaining:
            remaining -= u
            chosen[names[layer_of[k]]].append(int(channel_of[k]))
    return {n: np.sort(np.asarray(c, np.int64)) for n, c in chosen.items() if c}


def check_budget(costs, names, budget, count_pruned=True):
    """Raises ValueError unless `budget` (units) buys at least the cheapest channel of `names`."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(
            f"The budget must be a whole number of memory units, got {budget!r} "
            "(tx.sparse_update.parse_budget reads '109KiB' and the like)."
        )
    minimum = costs.min_channel_units(names, count_pruned)
    if budget < minimum:
        cheapest = min(names, key=lambda n: costs[n].channel_units(count_pruned).min())
        raise ValueError(
            f"A budget of {budget} units cannot pay for any channel: the cheapest "
            f"({cheapest!r}) costs {minimum} units. Use a budget >= {minimum}."
        )


def random_channels(costs, names, budget, rng, count_pruned=True):
    """Channels of layers `names` drawn uniformly at random until `budget` units are spent.

    The budget is checked once, by the sampler (`check_budget`); a budget below every channel
    selects nothing here."""
    layer_of, channel_of, unit_of = _candidates(costs, names, count_pruned)
    return fill(rng.permutation(len(unit_of)), layer_of, channel_of, unit_of, budget, names)


def top_channels(costs, scores, budget, count_pruned=True):
    """The highest-scoring channels until `budget`; `scores` = {layer: per-channel scores}."""
    names = list(scores)
    layer_of, channel_of, unit_of = _candidates(costs, names, count_pruned)
    flat = np.concatenate([np.asarray(scores[n], np.float64).reshape(-1) for n in names])
    if flat.shape != unit_of.shape:
        raise ValueError("scores must hold one value per input channel of each layer.")
    if not np.all(np.isfinite(flat)):
        raise ValueError(
            "Channel scores contain NaN or Inf; check the model and data for non-finite values."
        )
    order = np.argsort(-flat, kind="stable")
    return fill(order, layer_of, channel_of, unit_of, budget, names)
