"""What the current selection saves against full fine-tuning (docs/METHODS.md 1.6), per sample."""

import dataclasses

import numpy as np

from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update import sampler as sampler_lib


@dataclasses.dataclass
class Efficiency:
    """The savings of the current selection (docs/METHODS.md 1.6), per sample.

    What `efficiency` returns. `units` is the memory the selection keeps (weight derivatives and
    input maps, in float32 elements), `full_units` what full fine-tuning of the same layers
    keeps; `budget_used` is the share of the budget spent. `as_dict()` adds
    `units_fraction_of_full`; `as_logs()` gives the numeric fields for Keras' epoch logs.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> eff = sp.efficiency(sp.wrap(model, budget=400, layers=["conv2"], seed=0))
      >>> eff.strategy, eff.channels, eff.layers_updated, eff.budget_used
      ('tradi', 2, 1, 0.9)
      >>> round(eff.as_dict()["units_fraction_of_full"], 3)
      0.195
      >>> eff.as_logs()["sparse_update/units"]
      360.0
    """

    strategy: str
    units: int
    budget: object
    full_units: int
    channels: int
    layers_updated: int
    activation_sparsity: float
    weight_derivative_sparsity: float
    weight_derivative_flops_saved: float
    units_all_weights: int = 0  # a selected channel charged for all its weights
    units_unpruned_weights: int = 0  # ... only for its unpruned ones (differs on pruned models)
    count_pruned: bool = True  # which of the two `units` (and the budget) uses
    # What the budget counts when it is not `units`: Velocity's budget counts weights only, while
    # `units` counts the input maps its selected neurons keep too.
    budgeted_units: int = None

    @property
    def budget_used(self):
        spent = self.units if self.budgeted_units is None else self.budgeted_units
        return spent / self.budget if self.budget else None

    def as_dict(self):
        d = dataclasses.asdict(self)
        d["budget_used"] = self.budget_used
        d["units_fraction_of_full"] = self.units / self.full_units
        return d

    def as_logs(self, prefix="sparse_update/"):
        """Numeric figures for Keras epoch logs (History, TensorBoard)."""
        d = self.as_dict()
        return {
            prefix + k: float(v)
            for k, v in d.items()
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        }


def efficiency(model):
    """`Efficiency` of the model's current selection against full fine-tuning of all its layers.

    Args:
      model (keras.Model): a model from `wrap` (or `attach`).

    Returns:
      Efficiency: units used (`units`, and counted with and without pruned weights), the
        budget, activation and weight-derivative sparsity, and the weight-derivative FLOPs saved
        (docs/METHODS.md 1.6).

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> eff = sp.efficiency(sp.wrap(model, budget=400, layers=["conv2"], seed=0))
      >>> eff.units, eff.full_units
      (360, 1848)
    """
    sampler = sampler_lib.sampler_of(model, required=False)
    table = sampler.costs if sampler is not None else costs_lib.cost_table(model)
    chosen = sampler_lib.selection(model)
    budgeted = None
    # By the wrappers, not the sampler: a loaded model has its axis before `attach`.
    if any(w.selects_outputs for w in sampler_lib.sparse_layers(model)):
        sel_w, sel_a, sel_f = _output_sums(table, chosen)
        count_pruned, budgeted = True, int(sel_w)
        units = units_all = units_unpruned = int(sel_w + sel_a)
    else:
        sel_w = sum(table[n].weight_units * len(c) for n, c in chosen.items())
        sel_a = sum(table[n].in_hw * len(c) for n, c in chosen.items())
        sel_f = sum(table[n].flops_per_channel * len(c) for n, c in chosen.items())
        count_pruned = sampler.count_pruned if sampler is not None else True
        units = int(table.units(chosen, count_pruned))
        units_all, units_unpruned = int(table.units(chosen, True)), int(table.units(chosen, False))
    return Efficiency(
        strategy=sampler.strategy.name if sampler is not None else "unknown",
        units=units,
        budget=sampler.budget if sampler is not None else None,
        units_all_weights=units_all,
        units_unpruned_weights=units_unpruned,
        count_pruned=count_pruned,
        budgeted_units=budgeted,
        full_units=int(table.full_units),
        channels=int(sum(len(c) for c in chosen.values())),
        layers_updated=len(chosen),
        activation_sparsity=1.0 - sel_a / table.total_activation_units,
        weight_derivative_sparsity=1.0 - sel_w / table.total_weight_units,
        weight_derivative_flops_saved=1.0 - sel_f / table.full_flops,
    )


def _output_sums(table, chosen):
    """(weights, activations, FLOPs) of selected output neurons: each costs its weights; a layer
    with any selected neuron keeps its whole input map (a depthwise conv only its selected
    channels' maps, output c being input c)."""
    sel_w = sum(table[n].neuron_weight_units * len(c) for n, c in chosen.items())
    sel_a = sum(
        table[n].in_hw * (len(c) if table[n].kind == "depthwise" else table[n].in_channels)
        for n, c in chosen.items()
        if len(c)
    )
    sel_f = sum(table[n].neuron_weight_units * table[n].out_hw * len(c) for n, c in chosen.items())
    return sel_w, sel_a, sel_f
