"""Pruning at initialization for Keras 3: PX and its baselines, masks that survive `fit`.

    masked = wrap(model)
    report = PXPruner(rounds=100).prune(masked, sparsity=0.982, data=prune_ds)
    masked.compile(...); masked.fit(...)
    plain = strip(masked)

`PXPruner` is the method (docs/METHODS.md 2.2); the other pruners are the baselines it is compared
with, all with the same interface. The guide "Pruning at initialization in 5 minutes"
(docs/guides/pruning_at_init.md) walks through a complete run.
"""

from tf_tradyx.pruning.baselines import (
    GraSPPruner,
    IterSNIPPruner,
    MagnitudePruner,
    RandomPruner,
    SNIPPruner,
    SynFlowPruner,
)
from tf_tradyx.pruning.masking import MaskedLayer, PrunableLayer, masked_layers, strip, wrap
from tf_tradyx.pruning.ntk_sap import NTKSAPPruner
from tf_tradyx.pruning.paths import PathNetwork, UnsupportedLayerError
from tf_tradyx.pruning.prospr import ProsPrPruner
from tf_tradyx.pruning.pruner import Pruner
from tf_tradyx.pruning.pruning_report import (
    PruningReport,
    density_figure,
    plot_layer_density,
    report,
)
from tf_tradyx.pruning.px import PXPruner
from tf_tradyx.pruning.sanity import reinitialize, shuffle_masks
from tf_tradyx.pruning.schedules import DensitySchedule, ExponentialSchedule, LinearSchedule
from tf_tradyx.pruning.summaries import PruningSummaries

__all__ = [
    "PXPruner",
    "prune_at_init",
    "wrap",
    "strip",
    "masked_layers",
    "MaskedLayer",
    "PrunableLayer",
    "get_pruner",
    "PRUNERS",
    "Pruner",
    "SynFlowPruner",
    "SNIPPruner",
    "GraSPPruner",
    "IterSNIPPruner",
    "NTKSAPPruner",
    "ProsPrPruner",
    "MagnitudePruner",
    "RandomPruner",
    "DensitySchedule",
    "ExponentialSchedule",
    "LinearSchedule",
    "PruningReport",
    "report",
    "density_figure",
    "plot_layer_density",
    "PruningSummaries",
    "reinitialize",
    "shuffle_masks",
    "PathNetwork",
    "UnsupportedLayerError",
]

PRUNERS = {
    "px": PXPruner,
    "synflow": SynFlowPruner,
    "snip": SNIPPruner,
    "grasp": GraSPPruner,
    "itersnip": IterSNIPPruner,
    "ntk_sap": NTKSAPPruner,
    "prospr": ProsPrPruner,
    "magnitude": MagnitudePruner,
    "random": RandomPruner,
}


def get_pruner(method, **kwargs):
    """A pruner by name: px, synflow, snip, grasp, itersnip, ntk_sap, prospr, magnitude, random.

    Args:
      method (str): a key of `PRUNERS`.
      **kwargs: the pruner's arguments (`rounds`, `schedule`, `scope`, `min_density`, `skip`,
        `seed`, `verbose`, and its own).

    Returns:
      Pruner: a new pruner of that method.

    Raises:
      ValueError: for an unknown method, naming the known ones.

    Examples:
      >>> pruner = tx.pruning.get_pruner("synflow", rounds=10)
      >>> type(pruner).__name__, pruner.rounds
      ('SynFlowPruner', 10)
    """
    if method not in PRUNERS:
        raise ValueError(f"Unknown pruning method {method!r}; choose from {sorted(PRUNERS)}.")
    return PRUNERS[method](**kwargs)


def prune_at_init(model, method="px", sparsity=0.9, data=None, rounds=None, skip=(), **kwargs):
    """One call: wrap `model`, prune it with `method` to `sparsity`, return the masked model.

    Args:
      model (keras.Model): a built Functional or Sequential model (not modified).
      method (str): a key of `PRUNERS` ("px", "snip", "synflow", ...).
      sparsity (float): the share of prunable weights to remove, in [0, 1).
      data: pruning examples, (images, labels) arrays or a `tf.data.Dataset`; the data-free
        methods (synflow, ntk_sap, magnitude, random) take None.
      rounds (int | None): pruning rounds; None takes the method's own (100 for PX).
      skip: layer names or classes to leave dense.
      **kwargs: the pruner's other arguments (`scope`, `min_density`, `schedule`, `seed`,
        `verbose`, ...).

    Returns:
      keras.Model: the masked clone (see `wrap`), its report attached as `pruning_report`.

    Raises:
      ValueError: for an unknown method or an invalid argument, from the pruner.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.prune_at_init(model, "magnitude", sparsity=0.5, verbose=0)
      >>> masked.pruning_report.density
      0.5
    """
    pruner = get_pruner(method, rounds=rounds, **kwargs)
    masked = wrap(model, skip=skip)
    masked.pruning_report = pruner.prune(masked, sparsity=sparsity, data=data)
    return masked
