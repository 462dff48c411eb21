"""The sampler of a wrapped model: its strategy, budget and seed, and the selections it draws.

`wrap` (or `attach`, for a loaded model) puts a `Sampler` on the model; `resample` asks it for the
next selection and writes it into the wrappers' index variables. Each draw depends only on
(seed, draw number); the draw number is a variable of the wrappers, saved with the model, so a
second `fit` call continues the stream instead of replaying it, and a run resumed by
`keras.callbacks.BackupAndRestore` (or from a saved model) samples exactly what the uninterrupted
run sampled.
The budget is checked once, when the sampler is made; every selection a strategy returns (a user's
own included) is checked against it before anything is assigned.
"""

import numpy as np

from tf_tradyx import _keras_compat, _seeds
from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update import optimizer_state, sampling, strategies
from tf_tradyx.sparse_update.wrapper import wrappers_of

_ATTRIBUTE = "_tradyx_sampler"


class Sampler:
    """Strategy, budget (units), seed and candidate layers of one wrapped model.

    `wrap` and `attach` make it and put it on the model (`sampler_of` reads it back); `resample`
    asks it for the next selection. Each draw depends only on (seed, draw number).

    Args:
      strategy (Strategy): what selects the channels.
      costs (CostTable): the model's costs.
      layers (list[str]): the candidate (wrapped) layer names.
      budget (int | str | None): memory units, or bytes as a string ("200KB"); None for the
        strategies that take no budget.
      seed (int | None): the draws' seed; None follows Keras' global seed.
      count_pruned (bool): False counts only unpruned weights of a channel toward the budget.
      recompute (bool): frozen segments are recomputed in the backward pass.

    Raises:
      ValueError: for a budgeted strategy without a budget, a budget that cannot pay for one
        channel, or a non-positive one; from `draw`, for a selection outside the wrapped layers,
        with invalid channels, or over the budget.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv1", "conv2"], seed=0)
      >>> sampler = sp.sampler_of(sparse)
      >>> sampler.strategy.name, sampler.budget, sampler.layers
      ('tradi', 400, ['conv1', 'conv2'])
      >>> chosen = sampler.draw(sparse, epoch=5)  # the same for the same (seed, epoch)
      >>> all(np.array_equal(chosen[n], c) for n, c in sampler.draw(sparse, epoch=5).items())
      True
    """

    def __init__(
        self, strategy, costs, layers, budget=None, seed=0, count_pruned=True, recompute=False
    ):
        self.strategy = strategy
        self.recompute = bool(recompute)  # frozen segments recomputed (`recompute` module)
        self.costs = costs
        self.layers = list(layers)
        self.seed = _seeds.resolve(seed)
        self.count_pruned = bool(count_pruned)
        self.budget = None if budget is None else costs_lib.parse_budget(budget)
        self.resamples = 0
        if strategy.channel_axis not in ("input", "output"):
            raise ValueError(
                f"Strategy {strategy.name!r}: channel_axis must be 'input' or 'output', got "
                f"{strategy.channel_axis!r}."
            )
        if strategy.budgeted and strategy.mode == "channels":
            if self.budget is None:
                raise ValueError(
                    f"Strategy {strategy.name!r} needs budget= (memory units; full "
                    f"fine-tuning of this model costs {costs.full_units:,})."
                )
            if strategy.channel_axis == "input":
                sampling.check_budget(costs, self.layers, self.budget, self.count_pruned)
            elif self.budget < min(costs[n].neuron_weight_units for n in self.layers):
                raise ValueError(
                    f"A budget of {self.budget} units cannot pay for any output neuron: the "
                    f"cheapest costs {min(costs[n].neuron_weight_units for n in self.layers)}."
                )
        elif self.budget is not None and self.budget <= 0:
            raise ValueError(f"budget must be positive, got {self.budget}.")

    def get_config(self):
        """What a `.keras` file keeps of the sampler (in every wrapper's config)."""
        return {
            "strategy": strategies.serialize(self.strategy),
            "budget": self.budget,
            "seed": self.seed,
            "count_pruned": self.count_pruned,
            "recompute": self.recompute,
        }

    def draw(self, model, epoch):
        """The strategy's selection for `epoch`, checked against the layers and the budget."""
        context = strategies.SelectionContext(
            model=model,
            costs=self.costs,
            layers=self.layers,
            budget=self.budget,
            rng=np.random.default_rng([self.seed, epoch + 1]),
            epoch=epoch,
            count_pruned=self.count_pruned,
        )
        return self._validate(self.strategy.select(context))

    def _validate(self, selection):
        out = {}
        for name, channels in selection.items():
            if name not in self.layers:
                raise ValueError(
                    f"The strategy selected channels of {name!r}, which is not one of "
                    f"the wrapped layers {self.layers}."
                )
            idx = np.asarray(channels, np.int64).reshape(-1)
            count = self.strategy.selectable(self.costs[name])
            if len(np.unique(idx)) != len(idx) or (
                len(idx) and (idx.min() < 0 or idx.max() >= count)
            ):
                what = "output neurons" if self.strategy.channel_axis == "output" else "in_channels"
                raise ValueError(f"Invalid channels for {name!r}: {idx.tolist()} ({what} {count}).")
            if len(idx):
                out[name] = np.sort(idx)
        units = self.strategy.selection_units(self.costs, out, self.count_pruned)
        if self.strategy.budgeted and self.budget is not None and units > self.budget:
            raise ValueError(
                f"Strategy {self.strategy.name!r} selected {units} units, over the "
                f"budget of {self.budget}."
            )
        return out


def install(model, sampler):
    """Puts `sampler` on `model` and its config into every wrapper (saved with the model)."""
    _keras_compat.set_untracked(model, _ATTRIBUTE, sampler)
    config = sampler.get_config()
    for w in wrappers_of(model):
        w.sampler_config = config


def sampler_of(model, required=True):
    """The model's `Sampler` (None when absent and not `required`).

    Args:
      model (keras.Model): a model from `wrap` or `attach`.
      required (bool): raise when the model has no sampler, instead of returning None.

    Returns:
      Sampler | None: the sampler `wrap` or `attach` put on the model.

    Raises:
      ValueError: when `required` and the model has none (e.g. loaded from a file without
        `attach`).

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv1", "conv2"], seed=0)
      >>> sp.sampler_of(sparse).seed
      0
      >>> sp.sampler_of(model, required=False) is None
      True
      >>> sp.sampler_of(model)
      Traceback (most recent call last):
      ...
      ValueError: This model carries no sparse-update sampler: ...
    """
    sampler = getattr(model, _ATTRIBUTE, None)
    if sampler is None and required:
        raise ValueError(
            "This model carries no sparse-update sampler: make it with "
            "tx.sparse_update.wrap(model, budget=..., strategy=...), or give a model "
            "loaded from a .keras file its sampler back with "
            "tx.sparse_update.attach(model)."
        )
    return sampler


def sparse_layers(model):
    """The `ChannelSparseUpdate` wrappers of a model, in graph order.

    Args:
      model (keras.Model): any model.

    Returns:
      list[ChannelSparseUpdate]: empty for a model without sparse-update wrappers.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv1", "conv2"], seed=0)
      >>> [w.name for w in sp.sparse_layers(sparse)]
      ['sparse_update_conv1', 'sparse_update_conv2']
    """
    return wrappers_of(model)


def sparse_kernels(model):
    """The kernel variables of the wrapped layers.

    What to exclude from an optimizer's weight decay (`check_optimizer`).

    Args:
      model (keras.Model): any model.

    Returns:
      list[keras.Variable]: one kernel per `ChannelSparseUpdate` wrapper, in graph order.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv1", "conv2"], seed=0)
      >>> [tuple(k.shape) for k in sp.sparse_kernels(sparse)]
      [(3, 3, 3, 8), (3, 3, 8, 16)]
      >>> optimizer = keras.optimizers.AdamW(weight_decay=0.01)
      >>> optimizer.exclude_from_weight_decay(var_list=sp.sparse_kernels(sparse))
    """
    return [w.kernel for w in sparse_layers(model)]


def set_selection(model, selection, optimizer="auto"):
    """Selects exactly these channels {layer name: indices}; other wrapped layers get none.

    Every entry is checked before any is assigned. The budget is not checked: it binds the
    strategy, not a selection set by hand.

    Args:
      model (keras.Model): a model from `wrap`.
      selection (dict): {wrapped layer name: channel indices}.
      optimizer: the optimizer whose state of the unselected channels is reset; "auto" takes the
        model's (if compiled), None resets nothing.

    Raises:
      ValueError: for names that are not wrapped layers, or invalid indices (out of range,
        repeated).

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv1", "conv2"], seed=0)
      >>> sp.set_selection(sparse, {"conv2": [0, 5]})
      >>> {name: list(map(int, c)) for name, c in sp.selection(sparse).items()}
      {'conv2': [0, 5]}
      >>> sp.set_selection(sparse, {"classifier": [0]})
      Traceback (most recent call last):
      ...
      ValueError: ['classifier'] are not wrapped layers; wrapped: ['conv1', 'conv2'].
    """
    by_name = {w.selection_name: w for w in sparse_layers(model)}
    unknown = [n for n in selection if n not in by_name]
    if unknown:
        raise ValueError(f"{unknown} are not wrapped layers; wrapped: {sorted(by_name)}.")
    checked = {name: w.validated(selection.get(name, ())) for name, w in by_name.items()}
    for name, w in by_name.items():  # all validated first: a bad entry changes nothing
        w.assign_validated(checked[name])
    opt = getattr(model, "optimizer", None) if optimizer == "auto" else optimizer
    if opt is not None:
        optimizer_state.reset_optimizer_state(model, opt)
    retrace_if_needed(model)


def retrace_if_needed(model):
    """Rebuilds the train function when a wrapper's selection outgrew the channel slots its XLA
    trace gathers (`ChannelSparseUpdate.outgrew_trace`); a no-op without XLA."""
    wrappers = sparse_layers(model)
    if any(w.outgrew_trace() for w in wrappers):
        for w in wrappers:
            w.traced_capacity = None  # that trace is discarded; the next one sets it again
        _keras_compat.rebuild_train_function(model)


def reserve_upcoming(model, epochs):
    """Under XLA, gives every wrapper room for the next `epochs` draws of a predictable strategy
    (random channels: each draw depends only on the seed and the draw number), so that the train
    step is traced and compiled once per `fit` with static shapes, the draws themselves unchanged.
    Strategies that read the weights (Det RGN) instead grow the room when a draw needs more, at
    the price of one more compilation."""
    sampler = sampler_of(model)
    strategy = sampler.strategy
    if not (strategy.dynamic and strategy.mode == "channels" and strategy.predictable):
        return
    start = draws(model)
    room = {}
    for epoch in range(start, start + max(int(epochs), 1)):
        for name, channels in sampler.draw(model, epoch).items():
            room[name] = max(room.get(name, 0), len(channels))
    for w in sparse_layers(model):
        w.reserved_channels = max(w.reserved_channels, room.get(w.selection_name, 0))
    retrace_if_needed(model)


def draws(model):
    """The number of the next draw (0 right after `wrap`'s initial draw, +1 per resample).

    Saved with the model, so a second `fit` continues the stream instead of replaying it.

    Args:
      model (keras.Model): a model from `wrap`.

    Returns:
      int: the draw number `resample` uses next; 0 for a model without wrappers.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv1", "conv2"], seed=0)
      >>> sp.draws(sparse)
      0
      >>> _ = sp.resample(sparse)
      >>> sp.draws(sparse)
      1
    """
    wrappers = sparse_layers(model)
    return int(wrappers[0].draws.numpy()) if wrappers else 0


def epoch_in_progress(model):
    """The `fit` epoch whose draw the model's selection is while that epoch trains (-1 between
    epochs); saved with the model, so that a mid-epoch resume keeps the epoch's channels."""
    wrappers = sparse_layers(model)
    return int(wrappers[0].epoch_in_progress.numpy()) if wrappers else -1


def mark_epoch(model, epoch):
    """Records that the current selection is `epoch`'s draw (-1: no epoch in progress)."""
    for w in sparse_layers(model):
        w.epoch_in_progress.assign(int(epoch))


def resample(model, epoch=None, optimizer="auto"):
    """Draws a new selection with the model's strategy; returns it ({layer: indices}).

    What `ChannelResampler` calls at every epoch start; call it yourself in a custom loop.

    Args:
      model (keras.Model): a model from `wrap` (or `attach`).
      epoch (int | None): the draw number to use (the stream position); None continues the
        model's stream.
      optimizer: the optimizer whose state of the unselected channels is reset; "auto" takes the
        model's (if compiled), None resets nothing.

    Returns:
      dict[str, np.ndarray]: the new selection; for the strategies that train whole variables,
        the current one.

    Raises:
      ValueError: for a model without a sampler, or a strategy's selection that is invalid or
        over the budget.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv1", "conv2"], seed=0)
      >>> first = sp.resample(sparse, epoch=1)
      >>> again = sp.resample(sparse, epoch=1)  # a draw depends on (seed, draw number) only
      >>> all(np.array_equal(first[n], again[n]) for n in first)
      True
      >>> sp.efficiency(sparse).units <= 400
      True
    """
    sampler = sampler_of(model)
    if sampler.strategy.mode != "channels":
        return selection(model)
    epoch = draws(model) if epoch is None else int(epoch)
    chosen = sampler.draw(model, epoch)
    set_selection(model, chosen, optimizer=optimizer)
    for w in sparse_layers(model):
        w.draws.assign(epoch + 1)
    sampler.resamples += 1
    return chosen


def selection(model):
    """{layer name: sorted input-channel indices} of the channels currently updated.

    Args:
      model (keras.Model): a model from `wrap`.

    Returns:
      dict[str, np.ndarray]: only the layers with at least one selected channel (output neurons
        for Velocity); for the "full" strategy, every channel of every selectable layer.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, strategy=sp.TraDy(["conv2"]), seed=0)
      >>> chosen = sp.selection(sparse)
      >>> list(chosen), len(chosen["conv2"])  # 2 channels of 180 units fit in 400
      (['conv2'], 2)
    """
    sampler = sampler_of(model, required=False)
    if sampler is not None and sampler.strategy.mode == "full":
        return {r.name: np.arange(r.in_channels) for r in sampler.costs}
    return {
        w.selection_name: w.get_channels()
        for w in sparse_layers(model)
        if int(np.asarray(w.num_channels)) > 0
    }
