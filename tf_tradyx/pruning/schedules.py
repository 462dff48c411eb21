"""Density schedules for iterative pruning: the density to reach after each round."""

import abc

import keras


@keras.saving.register_keras_serializable(package="tf_tradyx")
class DensitySchedule(abc.ABC):
    """Base class: `densities(final_density, rounds, start=1.0)` -> per-round target densities.

    A pruner's `schedule` argument takes an instance; `densities` returns the density the pruner
    keeps after each round, the last one `final_density`. `start` is the model's density before
    pruning (below 1 for an already pruned model).

    Examples:
      A schedule that prunes half the way in round one, the rest evenly:

      >>> class HalfFirst(tx.pruning.DensitySchedule):
      ...     def densities(self, final_density, rounds, start=1.0):
      ...         first = (start + final_density) / 2
      ...         rest = [first - (first - final_density) * r / (rounds - 1)
      ...                 for r in range(1, rounds)]
      ...         return [first, *rest]
      >>> HalfFirst().densities(0.2, 3)
      [0.6, 0.4, 0.2]
      >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10)])
      >>> masked = tx.pruning.wrap(model)
      >>> pruner = tx.pruning.MagnitudePruner(rounds=3, schedule=HalfFirst(), verbose=0)
      >>> [h["kept"] for h in pruner.prune(masked, 0.8).meta["history"]]
      [24, 16, 8]
    """

    @abc.abstractmethod
    def densities(self, final_density, rounds, start=1.0):
        """Per-round target densities, the last one equal to final_density."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_tradyx")
class ExponentialSchedule(DensitySchedule):
    """d_r = d ** (r / rounds), r = 1..rounds: each round removes the same fraction (SynFlow, PX).

    From a start density s < 1 (an already pruned model): d_r = s * (d / s) ** (r / rounds).

    Examples:
      >>> schedule = tx.pruning.ExponentialSchedule()
      >>> [round(d, 4) for d in schedule.densities(0.125, 3)]
      [0.5, 0.25, 0.125]
      >>> [round(d, 4) for d in schedule.densities(0.125, 2, start=0.5)]
      [0.25, 0.125]
    """

    def densities(self, final_density, rounds, start=1.0):
        return [start * (final_density / start) ** (r / rounds) for r in range(1, rounds + 1)]


@keras.saving.register_keras_serializable(package="tf_tradyx")
class LinearSchedule(DensitySchedule):
    """d_r = s - (s - d) * r / rounds (s = 1 from a dense model): the same count every round.

    Examples:
      >>> [round(d, 4) for d in tx.pruning.LinearSchedule().densities(0.25, 3)]
      [0.75, 0.5, 0.25]
      >>> pruner = tx.pruning.MagnitudePruner(rounds=3, schedule="linear", verbose=0)
      >>> type(pruner.schedule).__name__
      'LinearSchedule'
    """

    def densities(self, final_density, rounds, start=1.0):
        return [start - (start - final_density) * r / rounds for r in range(1, rounds + 1)]


SCHEDULES = {"exponential": ExponentialSchedule, "linear": LinearSchedule}


def get(schedule):
    """A schedule from its name ("exponential", "linear") or a DensitySchedule instance."""
    if isinstance(schedule, DensitySchedule):
        return schedule
    if schedule in SCHEDULES:
        return SCHEDULES[schedule]()
    raise ValueError(
        f"Unknown schedule {schedule!r}; use one of {sorted(SCHEDULES)} or a DensitySchedule."
    )
