"""Density schedules for iterative pruning: the density to reach after each round."""

import abc

import keras


@keras.saving.register_keras_serializable(package="tf_tradyx")
class DensitySchedule(abc.ABC):
    """Base class: `densities(final_density, rounds, start=1.0)` -> per-round target densities."""

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
    """

    def densities(self, final_density, rounds, start=1.0):
        return [start * (final_density / start) ** (r / rounds) for r in range(1, rounds + 1)]


@keras.saving.register_keras_serializable(package="tf_tradyx")
class LinearSchedule(DensitySchedule):
    """d_r = s - (s - d) * r / rounds (s = 1 from a dense model): the same count every round."""

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
