"""The `Pruner` base class: scoring passes, the round schedule, exact global ranking, safety.

A pruner never leaves a model half-modified: masks and kernels are snapshot before pruning and
restored if anything fails (bad data, non-finite scores, an interrupt).
"""

import abc
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_tradyx import _seeds
from tf_tradyx.pruning import mask_selection, masking, pruning_data, pruning_report, schedules


class Entry:
    """One prunable kernel of a masked model: its wrapper, variable and mask."""

    def __init__(self, wrapper, index):
        self.wrapper = wrapper
        self.index = index  # which of the wrapper's kernels
        self.variable = wrapper.kernels[index]
        self.mask = wrapper.masks[index]
        self.name = wrapper.kernel_names[index]

    @property
    def size(self):
        return int(np.prod(self.variable.shape))


class Session:
    """What one prune/score call needs across rounds: entries, data batches, compiled passes."""

    def __init__(self, pruner, model, data):
        self.pruner = pruner
        self.model = model
        self.entries = pruner.entries(model)
        # Streamed: read again at every pass, one batch in memory at a time (pruning_data).
        self.batches = pruning_data.PruningData(model, data, pruner.needs_data, pruner.needs_labels)
        self.round = 0
        self.cache = {}


# From this many rounds on, a round's masks are written by one compiled call: tracing it costs about
# 0.1 s, and it saves ~2.5 ms per round over one eager assignment per variable (ResNet-20).
_COMPILED_WRITES_FROM = 40


class _MaskWriter:
    """Writes a round's masks, and zeroes the pruned weights, in the model's variables.

    Straight to the TensorFlow variables under the Keras ones (`.value`): Keras' own `assign`
    checks and converts every call, which cost more than the pruning itself on small networks (100
    rounds of magnitude pruning on ResNet-20 took 2.4 s, three quarters of it in assignments)."""

    def __init__(self, entries, compiled):
        self.masks = [e.mask.value for e in entries]
        self.kernels = [e.variable.value for e in entries]
        self.shapes = [tuple(e.mask.shape) for e in entries]
        self.sizes = [e.size for e in entries]
        self.compiled = tf.function(self._write, autograph=False) if compiled else None

    def _write(self, flat_keep):
        """All masks from one flat bool tensor: one conversion per round, not one per layer."""
        for mask, kernel, keep, shape in zip(
            self.masks, self.kernels, tf.split(flat_keep, self.sizes), self.shapes
        ):
            keep = tf.reshape(keep, shape)
            mask.assign(tf.cast(keep, mask.dtype))
            kernel.assign(kernel * tf.cast(keep, kernel.dtype))

    def __call__(self, keeps):
        flat = tf.constant(np.concatenate([k.ravel() for k in keeps]))
        (self.compiled or self._write)(flat)


class Pruner(abc.ABC):
    """Base class of all pruners. Subclasses implement `_scores(session)`.

    A subclass only scores: `_scores(session)` returns one array per entry of
    `session.entries` (each entry has the kernel `variable`, its `mask` and a `name`), shaped like
    the kernel, higher meaning keep; `session.batches` iterates the pruning data as (x, y) batches
    and `session.round` counts the rounds from 1. The base class runs the schedule, ranks the scores
    (exactly, globally or per layer), writes the masks and restores the model if anything fails.
    Set the class attributes `needs_data = False` for a data-free scorer and `needs_labels = True`
    for one that reads labels, and `default_rounds` for the rounds `rounds=None` means.

    Args:
      rounds (int | None): pruning rounds; the density follows `schedule` from 1 to the target.
        None takes the class's `default_rounds`.
      schedule (str | DensitySchedule): "exponential" (default), "linear", or a DensitySchedule.
      scope (str): "global" (one ranking over all layers) or "local" (per-layer ranking).
      min_density (float): each layer keeps at least this fraction of its weights.
      skip: layer names or classes whose kernels are not ranked (their masks stay as they are).
      seed (int | None): seed for random scores; None follows Keras' global seed
        (keras.utils.set_random_seed), drawn when the pruner is made.
      verbose (bool): show a Progbar over the rounds.

    Raises:
      ValueError: for a non-positive `rounds`, an unknown `scope` or `schedule`, a `min_density`
        outside [0, 1] or a negative `seed`; from `prune`, for a sparsity outside [0, 1), one
        below the model's current sparsity, a model without masks, or scores that cannot rank.
      FloatingPointError: from `prune` and `score`, for non-finite scores (the model is restored).

    Examples:
      A pruner that keeps the largest weights (what `MagnitudePruner` does):

      >>> class AbsolutePruner(tx.pruning.Pruner):
      ...     needs_data = False
      ...     def _scores(self, session):
      ...         return [np.abs(np.asarray(e.variable)) for e in session.entries]
      >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
      >>> masked = tx.pruning.wrap(model)
      >>> pruner = AbsolutePruner(rounds=2, verbose=0)
      >>> pruner.name
      'absolute'
      >>> report = pruner.prune(masked, sparsity=0.75)
      >>> report.kept, report.total
      (8, 32)
      >>> [round(h["target_density"], 2) for h in report.meta["history"]]
      [0.5, 0.25]
    """

    default_rounds = 1
    needs_data = True
    needs_labels = False

    def __init__(
        self,
        rounds=None,
        schedule="exponential",
        scope="global",
        min_density=0.0,
        skip=(),
        seed=0,
        verbose=True,
    ):
        rounds = self.default_rounds if rounds is None else rounds
        if not isinstance(rounds, (int, np.integer)) or rounds < 1:
            raise ValueError(f"rounds must be a positive integer, got {rounds!r}.")
        if scope not in ("global", "local"):
            raise ValueError(f"scope must be 'global' or 'local', got {scope!r}.")
        if not 0.0 <= min_density <= 1.0:
            raise ValueError(f"min_density must be in [0, 1], got {min_density!r}.")
        self.rounds = int(rounds)
        self.schedule = schedules.get(schedule)
        self.scope = scope
        self.min_density = float(min_density)
        self.skip = tuple(skip) if isinstance(skip, (list, tuple, set)) else (skip,)
        self.seed = _seeds.resolve(seed)
        self.verbose = verbose

    @property
    def name(self):
        return type(self).__name__.replace("Pruner", "").lower()

    def get_config(self):
        return {
            "rounds": self.rounds,
            "schedule": type(self.schedule).__name__,
            "scope": self.scope,
            "min_density": self.min_density,
            "seed": self.seed,
        }

    def entries(self, model):
        wrappers = masking.masked_layers(model)
        if not wrappers:
            raise ValueError(
                "The model has no masks: call tf_tradyx.pruning.wrap(model) first and "
                "prune the model it returns."
            )
        entries = [
            Entry(w, i)
            for w in wrappers
            if not masking.matches_skip(w.layer, self.skip)
            for i in range(len(w.kernels))
        ]
        if not entries:
            raise ValueError(
                f"skip= leaves no prunable kernel: it matches every masked layer "
                f"({[w.layer.name for w in wrappers][:6]}), so there is nothing to rank. Skip "
                "fewer layers (skip takes layer names or classes; a base class such as "
                "keras.layers.Layer matches every layer). The model is unchanged."
            )
        return entries

    # ----- scoring -----
    @abc.abstractmethod
    def _scores(self, session):
        """List of score arrays (numpy, one per entry, same shape as the kernel)."""

    def _checked_scores(self, session):
        scores = [
            np.asarray(s, np.float64).reshape(e.variable.shape)
            for s, e in zip(self._scores(session), session.entries)
        ]
        for s, e in zip(scores, session.entries):
            if not np.all(np.isfinite(s)):
                raise FloatingPointError(
                    f"{self.name} produced non-finite scores for {e.name}; the model's weights or "
                    "data may hold inf/NaN, or the network is too deep for this scorer."
                )
        return scores

    def _check_ties(self, scores, alive, density, total, session):
        """Refuses a round whose ranking cannot choose: fewer alive weights score other than 0
        (GraSP scores may be negative) than the round keeps, and most score exactly 0, so the
        kept set would be chosen by position. Warns when only a minority scores 0 but the round
        must keep some of them, and when most score 0 but enough do not."""
        keep = round(density * total)
        positive = sum(int(np.count_nonzero((s != 0) & a)) for s, a in zip(scores, alive))
        remaining = sum(int(a.sum()) for a in alive)
        zero = [
            e.name
            for s, a, e in zip(scores, alive, session.entries)
            if a.any() and not np.any(s[a] != 0)
        ]
        mostly_zero = 2 * positive < remaining
        if positive < keep and not mostly_zero:  # most weights score; the zeros reach no output
            warnings.warn(
                f"{self.name}: in round {session.round}, {remaining - positive:,} of the "
                f"{remaining:,} remaining weights score exactly 0 and the round keeps "
                f"{keep - positive:,} of them, chosen by position. A zero score means the "
                "weight changes nothing the scorer sees: e.g. kernel taps that only ever "
                "meet padding at this input size (3x3 convs on 1x1 maps), or units behind "
                "dead activations.",
                stacklevel=4,
            )
            return
        if positive >= keep:
            if mostly_zero and not session.cache.get("warned_zero"):
                session.cache["warned_zero"] = True  # once per call: the cause does not change
                warnings.warn(
                    f"{self.name}: in round {session.round}, {remaining - positive:,} of the "
                    f"{remaining:,} remaining weights score exactly 0; the round ranks only the "
                    f"others. Layers scoring all zero: {zero[:5]}{'...' if len(zero) > 5 else ''}. "
                    "Usual causes: saturated or dead activations on the scoring data, or a layer "
                    "of zero weights.",
                    stacklevel=4,
                )
            return
        raise ValueError(
            f"{self.name}: in round {session.round}, {remaining - positive:,} of the {remaining:,} "
            f"remaining weights score exactly 0, and the round keeps {keep:,}: the scores cannot "
            "tell the weights apart, so pruning would remove them by position. Layers scoring all "
            f"zero: {zero[:5]}{'...' if len(zero) > 5 else ''}. Usual cause: a layer whose weights "
            "are all zero (e.g. a new zero-initialized classifier head: give it random weights, "
            "e.g. keras.initializers.GlorotUniform, before pruning), which zeroes every path "
            "through it; or a saturated activation (ReLU6) on the scoring input. The model is "
            "unchanged."
        )

    def score(self, model, data=None):
        """{kernel name: score array} from one scoring pass on the current masks.

        Args:
          model (keras.Model): a masked model (from `wrap`); not modified.
          data: pruning examples, as `prune` takes them (None for a data-free pruner).

        Returns:
          dict[str, np.ndarray]: one float64 array per masked kernel, shaped like the kernel.
        """
        session = Session(self, model, data)
        return {e.name: s for e, s in zip(session.entries, self._checked_scores(session))}

    # ----- pruning -----
    def prune(self, model, sparsity, data=None):
        """Prunes `model` (from `wrap`) in place to `sparsity`; returns a PruningReport.

        Args:
          model (keras.Model): a masked model (from `wrap`); its masks and kernels change.
          sparsity (float): the share of the ranked weights to remove, in [0, 1).
          data: pruning examples, (images, labels) arrays or a `tf.data.Dataset`; None for a
            data-free pruner.

        Returns:
          PruningReport: the masks after pruning, with `meta` holding the method, target,
            rounds, scope, seconds and the per-round history.

        Raises:
          ValueError: for a sparsity outside [0, 1) or below the model's current one, a model
            without masks, data that cannot be read, or scores that cannot rank the weights.
        """
        if not isinstance(sparsity, (float, int, np.floating)) or not 0.0 <= sparsity < 1.0:
            raise ValueError(
                f"sparsity must be in [0, 1), got {sparsity!r} (0.9 keeps 10 % of the weights)."
            )
        start = time.time()
        session = Session(self, model, data)
        entries = session.entries
        total = sum(e.size for e in entries)
        snapshot = [(np.asarray(e.mask), np.asarray(e.variable)) for e in entries]
        alive = [mask > 0 for mask, _ in snapshot]
        current = sum(int(a.sum()) for a in alive) / total
        if 1.0 - sparsity > current + 1e-12:
            raise ValueError(
                f"The model is already at sparsity {1 - current:.4f}, beyond the "
                f"requested {sparsity}; pruned weights cannot come back."
            )
        densities = self.schedule.densities(1.0 - float(sparsity), self.rounds, start=current)
        progbar = keras.utils.Progbar(
            self.rounds,
            verbose=1 if self.verbose else 0,
            stateful_metrics=["density"],
            unit_name="round",
        )
        history = []
        write = _MaskWriter(entries, compiled=self.rounds >= _COMPILED_WRITES_FROM)
        try:
            for r, density in enumerate(densities, start=1):
                session.round = r
                scores = self._checked_scores(session)
                self._check_ties(scores, alive, density, total, session)
                keep = mask_selection.select(scores, alive, density, self.scope, self.min_density)
                write(keep)
                alive = keep
                kept = int(sum(k.sum() for k in keep))
                history.append({"round": r, "target_density": density, "kept": kept})
                progbar.update(r, values=[("density", kept / total)])
        except BaseException:
            for e, (mask, value) in zip(entries, snapshot):
                e.mask.assign(mask)
                e.variable.assign(value)
            raise
        result = pruning_report.report(model)
        result.meta.update(
            {
                "method": self.name,
                "target_sparsity": float(sparsity),
                "rounds": self.rounds,
                "scope": self.scope,
                "seconds": round(time.time() - start, 3),
                "history": history,
            }
        )
        if result.collapsed:
            warnings.warn(
                f"{self.name} pruning to sparsity {sparsity}: {result.collapse_message()}",
                stacklevel=2,
            )
        if result.coverage_message():
            warnings.warn(
                f"{self.name} pruning to sparsity {sparsity}: {result.coverage_message()}",
                stacklevel=2,
            )
        return result
