"""Layer preselection by Reweighted Gradient Norm (RGN), computed once per architecture.

    RGN(l, c) = || dL/dW_l[:, c] ||_2 / units(l, c),     RGN(l) = sum_c RGN(l, c)

`rank_layers` fine-tunes a copy of the model with full gradients for a few epochs and accumulates
RGN(l) over every step (docs/METHODS.md 1.3). The paper finds the ranking to be a property of the
architecture, so a `LayerRanking` is saved as JSON keyed by layer name and reused across datasets
and budgets; `top_k(coverage=0.97)` gives the smallest set of layers holding 97 % of the total.
"""

import json
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_tradyx import _batches, _losses
from tf_tradyx._graph import walk
from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update import gradients, transforms
from tf_tradyx.sparse_update import sampler as sampler_lib

_FORMAT = "tf_tradyx.layer_ranking/1"  # what `save` writes
_SORTED_PROBE = 4  # batches inspected for a class-sorted stream


def _batch_classes(y):
    """(batch size, number of distinct classes) of a label batch, sparse or one-hot."""
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] > 1:
        y = y.argmax(axis=-1)
    y = y.reshape(len(y), -1)[:, 0] if y.ndim else y.reshape(1)
    return len(y), len(np.unique(y))


def _warn_if_sorted(probe):
    """Single-class batches mean class-sorted, unshuffled data: the run would mostly measure the
    classifier relearning each class, which piles RGN onto the last layers."""
    if all(size >= 4 and classes == 1 for size, classes in probe):
        warnings.warn(
            f"rank_layers: each of the first {len(probe)} batches holds a single class; "
            "the data looks sorted by class. Shuffle it (e.g. tx.data.prepare(..., "
            "shuffle_buffer=N)) or the ranking will overweight the last layers.",
            stacklevel=3,
        )


class LayerRanking:
    """RGN per layer (graph order); `top_k`, JSON `save`/`load`, `plot`.

    What `rank_layers` returns: the relative gradient norm (RGN) each selectable layer
    accumulated over a short full fine-tuning run. `top_k(coverage)` preselects the layers TraDy
    samples from; the ranking depends on the architecture more than on the data, so one saved
    ranking serves every run of a network.

    Args:
      scores (dict[str, float]): {layer name: RGN}, in graph order; finite and non-negative.
      info (dict | None): what the ranking was computed on (saved with it).

    Raises:
      ValueError: for no scores, or scores that are negative or not finite.

    Examples:
      >>> import tempfile
      >>> ranking = tx.sparse_update.LayerRanking({"conv1": 1.0, "conv2": 6.0, "conv3": 3.0})
      >>> ranking.ranked
      ['conv2', 'conv3', 'conv1']
      >>> ranking.top_k(coverage=0.8), ranking.top_k(k=1)  # in graph order
      (['conv2', 'conv3'], ['conv2'])
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     path = os.path.join(folder, "ranking.json")
      ...     ranking.save(path)
      ...     tx.sparse_update.LayerRanking.load(path).scores == ranking.scores
      True
      >>> tx.sparse_update.LayerRanking({"conv1": float("nan")})
      Traceback (most recent call last):
      ...
      ValueError: RGN scores must be finite and non-negative; ...
    """

    def __init__(self, scores, info=None):
        if not scores:
            raise ValueError("A ranking needs at least one layer.")
        vals = np.asarray(list(scores.values()), np.float64)
        if not np.all(np.isfinite(vals)) or np.any(vals < 0):
            raise ValueError(
                "RGN scores must be finite and non-negative; the run that produced them "
                "diverged (lower the learning rate) or the file is corrupted."
            )
        self.scores = {str(k): float(v) for k, v in scores.items()}
        self.info = dict(info or {})

    @property
    def layers(self):
        """Layer names in graph order."""
        return list(self.scores)

    @property
    def ranked(self):
        """Layer names, highest RGN first."""
        return sorted(self.scores, key=lambda n: (-self.scores[n], self.layers.index(n)))

    def cumulative(self):
        """Cumulative share of the total RGN against the number of top-ranked layers."""
        vals = np.asarray([self.scores[n] for n in self.ranked])
        total = vals.sum()
        return np.cumsum(vals) / total if total > 0 else np.linspace(0, 1, len(vals) + 1)[1:]

    def top_k(self, coverage=0.97, k=None):
        """The smallest top-ranked set holding `coverage` of the total RGN (or exactly `k` layers).

        Returned in graph order.
        """
        if k is None:
            if not 0.0 < coverage <= 1.0:
                raise ValueError(f"coverage must lie in (0, 1], got {coverage!r}.")
            k = int(np.searchsorted(self.cumulative(), coverage - 1e-12) + 1)
        elif not isinstance(k, int) or not 1 <= k <= len(self.scores):
            raise ValueError(f"k must be an integer in [1, {len(self.scores)}], got {k!r}.")
        chosen = set(self.ranked[: min(k, len(self.scores))])
        return [n for n in self.layers if n in chosen]

    def spearman(self, other):
        """Spearman rank correlation with another ranking over their common layers."""
        common = [n for n in self.layers if n in other.scores]
        if len(common) < 2:
            raise ValueError("The rankings share fewer than two layers.")
        a = np.argsort(np.argsort([-self.scores[n] for n in common]))
        b = np.argsort(np.argsort([-other.scores[n] for n in common]))
        return float(np.corrcoef(a, b)[0, 1])

    def save(self, path):
        with open(path, "w") as f:
            json.dump(
                {"format": _FORMAT, "rgn": self.scores, "info": self.info},
                f,
                indent=1,
            )

    @classmethod
    def load(cls, path):
        """The ranking `save` wrote; ValueError naming the file and what is wrong otherwise."""
        if os.path.isdir(path):
            raise ValueError(
                f"{path} is a folder; give the ranking's JSON file (ranking.save(...))."
            )
        try:
            with open(path, encoding="utf-8") as f:
                payload = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a layer-ranking JSON file: {e}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("rgn"), dict):
            raise ValueError(
                f"{path} is not a layer-ranking file (no 'rgn' mapping of layer names)."
            )
        fmt = payload.get("format", _FORMAT)
        if not isinstance(fmt, str) or not fmt.startswith(_FORMAT.split("/")[0] + "/"):
            raise ValueError(f"{path} is a {fmt!r} file, not a layer ranking ({_FORMAT}).")
        bad = {
            name: value
            for name, value in payload["rgn"].items()
            if isinstance(value, bool) or not isinstance(value, (int, float))
        }
        if bad:
            raise ValueError(
                f"{path}: RGN scores must be numbers; the file holds {bad} "
                f"(the file is corrupted; rank the layers again with rank_layers)."
            )
        info = payload.get("info")
        if info is not None and not isinstance(info, dict):
            raise ValueError(f"{path}: 'info' must be a mapping, got {type(info).__name__}.")
        try:
            return cls(payload["rgn"], info)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def check_model(self, model):
        """Raises ValueError when the ranking names layers the model does not have."""
        names = costs_lib.cost_table(model).names
        unknown = [n for n in self.layers if n not in names]
        if unknown:
            raise ValueError(
                f"The ranking names layers that the model lacks: {unknown[:5]}... "
                "It was computed for another architecture."
            )

    def figure(self, coverage=0.97):
        """A matplotlib `Figure` of cumulative RGN against the number of top-ranked layers (needs
        the `plots` extra). Made without pyplot, so the user's backend and figures are untouched."""
        try:
            from matplotlib.figure import Figure
        except ImportError as e:
            raise ImportError(
                "LayerRanking.figure needs matplotlib: pip install 'tf_tradyx[plots]'."
            ) from e
        cum = self.cumulative()
        k = len(self.top_k(coverage))
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        ax.plot(np.arange(1, len(cum) + 1), cum, marker=".")
        ax.axhline(coverage, color="gray", ls="--", lw=0.8)
        ax.axvline(k, color="gray", ls=":", lw=0.8)
        ax.set_xlabel("number of top-ranked layers")
        ax.set_ylabel("cumulative share of RGN")
        ax.set_title(
            f"{self.info.get('model', 'model')}: {k} of {len(cum)} layers hold "
            f"{coverage:.0%} of RGN"
        )
        fig.tight_layout()
        return fig

    def plot(self, path, coverage=0.97):
        """Writes `figure(coverage)` as a PNG to `path` and returns the path."""
        self.figure(coverage).savefig(path, dpi=120)
        return path

    def __repr__(self):
        return f"LayerRanking({len(self.scores)} layers, top: {self.ranked[:3]})"


def plain_copy(model):
    """An unwrapped copy of `model` with its weights (wrappers stripped)."""
    if sampler_lib.sparse_layers(model):
        return transforms.strip(model)
    walk.check_cloneable(model)
    clone = keras.models.clone_model(model, clone_function=walk.fresh_copy)
    clone.set_weights(model.get_weights())
    return clone


def rank_layers(
    model,
    data,
    epochs=2,
    loss=None,
    optimizer=None,
    steps_per_epoch=None,
    classifier="auto",
    verbose=1,
):
    """Fine-tunes a copy of `model` with full gradients and accumulates RGN per layer.

    The relative gradient norm (RGN) of a layer is the sum over its input channels of the
    channel's kernel-gradient norm divided by the channel's memory cost, accumulated over every
    step; layers with a high RGN learn the most per unit of memory (docs/METHODS.md 1.3).

    Args:
      model (keras.Model): a Functional/Sequential model (not modified).
      data: a dataset of (x, y) batches, or an (x, y) tuple of arrays.
      epochs (int): passes over `data` (the paper uses a few).
      loss: defaults to the model's compiled loss, else the cross-entropy its output calls for.
      optimizer (keras.optimizers.Optimizer | None): defaults to SGD(0.01) without momentum.
      steps_per_epoch (int | None): cap on batches per epoch (needed for an infinite dataset).
      classifier (str | None): the classifier head, not ranked; "auto" finds it.
      verbose (int): 1 shows a progress bar, 0 nothing.

    Returns:
      LayerRanking: the RGN of every selectable layer, with what it was computed on in `info`.

    Raises:
      ValueError: for a non-positive `epochs`, weights or data that are not finite, an infinite
        dataset without `steps_per_epoch`, no batches, or a run that diverges.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
      >>> y = np.arange(8) % 10
      >>> ranking = sp.rank_layers(model, (x, y), epochs=1, verbose=0)
      >>> ranking.layers, ranking.info["steps"]
      (['conv1', 'conv2'], 1)
      >>> sorted(ranking.top_k(k=2))
      ['conv1', 'conv2']
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    work = plain_copy(model)
    if not all(np.all(np.isfinite(np.asarray(v))) for v in work.weights):
        raise ValueError("The model's weights hold NaN or Inf; rank_layers needs a finite model.")
    table = costs_lib.cost_table(work, classifier=classifier)
    loss_fn = _losses.default_loss(model, loss)
    optimizer = optimizer or keras.optimizers.SGD(0.01)
    for layer in walk.flatten_layers(work):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    kernels = [table.layers[r.name].kernel for r in table]
    units = [r.units_per_channel for r in table]
    kinds = [r.kind for r in table]
    channels = [r.in_channels for r in table]
    train_vars = work.trainable_variables
    kernel_pos = [next(i for i, v in enumerate(train_vars) if v is k) for k in kernels]

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            value = loss_fn(y, work(x, training=True))
        grads = tape.gradient(value, train_vars)
        optimizer.apply_gradients(zip(grads, train_vars))
        rgn = tf.stack(
            [
                tf.reduce_sum(gradients.channel_norms_tf(grads[p], kind, c)) / u
                for p, kind, c, u in zip(kernel_pos, kinds, channels, units)
            ]
        )
        return value, rgn

    total = np.zeros(len(kernels))
    steps = 0
    first_labels = []
    dataset = _batches.as_dataset(data)
    if steps_per_epoch is None and int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            "rank_layers got an infinite dataset (it ends in .repeat()?), so an epoch "
            "would never end: pass steps_per_epoch= or a finite dataset."
        )
    for epoch in range(epochs):
        batches = dataset.take(steps_per_epoch) if steps_per_epoch else dataset
        bar = keras.utils.Progbar(steps_per_epoch, verbose=verbose, stateful_metrics=["loss"])
        for i, batch in enumerate(batches):
            x, y = _batches.xy(batch)
            x = _batches.model_input(work, x)
            if i == 0:
                _batches.check_batch(work, x, y)
            if epoch == 0 and i < _SORTED_PROBE:
                first_labels.append(_batch_classes(y))
                if i == _SORTED_PROBE - 1:
                    _warn_if_sorted(first_labels)
            value, rgn = step(x, y)
            rgn = rgn.numpy()
            if not np.all(np.isfinite(rgn)) or not np.isfinite(value.numpy()):
                _batches.check_batch(work, x, y)  # names non-finite data, if that is the cause
                raise ValueError(
                    f"The ranking run diverged at epoch {epoch}, step {i} (non-finite "
                    "gradients); lower the optimizer's learning rate."
                )
            total += rgn
            steps += 1
            bar.update(i + 1, [("loss", float(value))])
    if not steps:
        raise ValueError("data yielded no batch; rank_layers needs training data.")
    info = {
        "model": model.name,
        "epochs": epochs,
        "steps": steps,
        "input_shape": list(model.inputs[0].shape[1:]),
        "classifier": table.classifier,
    }
    return LayerRanking({r.name: t for r, t in zip(table, total)}, info)
