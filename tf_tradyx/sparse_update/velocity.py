"""Velocity (Quélennec et al., WACV 2024 workshops): output neurons chosen by how fast their
outputs move, under a budget that counts weights only; the strongest baseline of the TraDy paper.

Why it is here: TraDy's paper compares against it, and it shows what a weight-only budget hides. An
output neuron's weight derivative needs the layer's whole input, so updating any neuron of a layer
keeps that layer's whole input map; the efficiency report charges that memory (`units`) while the
budget (`budgeted_units`) counts what Velocity counts.

The rule, as the authors' code computes it (the NEq family). On `images` fixed images (10 by
default) the output of every candidate layer is recorded at every selection. Between two
recordings, neuron i of a layer moved by

    phi_i = mean over images of cos(output now, output before)   (over spatial positions)
    d_i = 1 - phi_i;  delta_i = d_i(now) - d_i(before);  v_i = delta_i(now) - delta_i(before) + mu * v_i(before)

(all three start at 0; mu = 0.5), and the neurons with the largest |v_i| per weight
(|v_i| / weights of neuron i) are taken, over all candidate layers at once, until the budget of
weights is spent. The first selection, before any movement is known, is random neurons until the
budget (the authors' default initialization). The authors' paper writes the velocity as
delta - mu * v(before); their code, followed here, computes the form above.

The strategy's memory of past outputs is Python state: a model reloaded from a file, or a new
`fit` after `attach`, starts its velocity again from the next recording.
"""

import numpy as np
import tensorflow as tf

from tf_tradyx._graph import steps as graph_steps
from tf_tradyx._graph import walk
from tf_tradyx.sparse_update import sampling
from tf_tradyx.sparse_update.strategy_base import Strategy, register


def selects_neurons(row):
    """Whether the output neurons of the layer with costs `row` can be selected: not in a grouped
    conv, nor in a depthwise conv with a depth multiplier (its outputs are not its input channels)."""
    return row.groups == 1 and (row.kind != "depthwise" or row.out_channels == 1)


def _batch_of(data, images, rank):
    """The first `images` inputs of `data` (an array, an (x, y) pair, or a dataset of batches or
    of single examples), as one batch of the model's input `rank`."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and np.ndim(data[0]) == rank:
        data = data[0]
    if isinstance(data, tf.data.Dataset):
        parts, total = [], 0
        for element in data:
            x = np.asarray(element[0] if isinstance(element, (tuple, list)) else element)
            parts.append(x[None] if x.ndim == rank - 1 else x)  # a single example
            total += len(parts[-1])
            if total >= images:
                break
        data = np.concatenate(parts) if parts else np.zeros((0,))
    x = np.asarray(data)
    if x.ndim != rank:
        raise ValueError(
            f"Velocity's data must be inputs of the model's rank {rank} (a batch), got shape "
            f"{x.shape}."
        )
    if len(x) < 1:
        raise ValueError("Velocity needs images to watch: data= gave none.")
    return x[:images]


@register
class Velocity(Strategy):
    """Output neurons with the fastest-moving outputs per weight, every epoch (module docstring).

    Its budget counts weights only (`Efficiency.budgeted_units`); `Efficiency.units` also counts
    the input maps the selected neurons keep.

    Args:
      data: inputs to watch (an array, an (x, y) tuple or a dataset); the first `images` are used.
        Not saved with a model: give it again to `attach`.
      images (int): how many images to watch (the authors use 10 held-out images).
      momentum (float): mu of the velocity (0.5, the authors' value).
      layers (list[str] | None): candidate layers; default every selectable layer (the
        classifier head trains whole).

    Raises:
      ValueError: for a non-positive `images`, a `momentum` outside [0, 1); when selecting, for
        data that is not a batch of the model's inputs, or no images.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> images = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
      >>> sparse = sp.wrap(model, budget=300, strategy=sp.Velocity(images, images=4), seed=0)
      >>> eff = sp.efficiency(sparse)
      >>> eff.strategy, eff.budgeted_units <= 300
      ('velocity', True)
    """

    channel_axis = "output"
    name = "velocity"

    def __init__(self, data=None, images=10, momentum=0.5, layers=None):
        if isinstance(images, bool) or not isinstance(images, (int, np.integer)) or images < 1:
            raise ValueError(f"images must be a positive integer, got {images!r}.")
        if not isinstance(momentum, (int, float, np.floating)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.data, self.images, self.momentum = data, int(images), float(momentum)
        self.layers = None if layers is None else list(layers)
        self._inputs = None
        self._state = None  # {layer: (outputs, d, delta, v)} of the last recording
        self._last = None  # the last selection

    def candidate_layers(self, costs):
        """Every layer whose output neurons can be selected (grouped convs, as in ConvNeXt, and
        depthwise convs with a multiplier are left frozen), or the layers given."""
        if self.layers is None:
            return [n for n in costs.names if selects_neurons(costs[n])]
        return list(self.layers)

    def with_layers(self, layers):
        return self if layers is None else Strategy.with_layers(self, layers)

    def selection_units(self, costs, selection, count_pruned=True):
        """Weights only: what Velocity's budget counts."""
        return sum(costs[n].neuron_weight_units * len(c) for n, c in selection.items())

    def outputs(self, model, layers):
        """{layer: outputs (images, positions, neurons)} of the candidate layers on the watched
        images, in inference mode."""
        if self._inputs is None:
            if self.data is None:
                raise ValueError(
                    "Velocity watches how layer outputs move on a few images: give it data, e.g. "
                    "Velocity(data=x_val) or wrap(..., strategy='velocity', data=val_ds) (a "
                    "loaded model: attach(model, strategy=Velocity(data=...)))."
                )
            self._inputs = tf.convert_to_tensor(
                _batch_of(self.data, self.images, len(model.input_shape))
            )
        wanted, recorded = set(layers), {}

        def call(op, *args, **kwargs):
            out = op(*args, **kwargs)
            name = walk.inner(op).name
            if name in wanted:
                recorded[name] = out
            return out

        steps = graph_steps.graph_steps(model)
        graph_steps.run_graph(model, steps, self._inputs, call, training=False)
        return {
            n: np.asarray(recorded[n], np.float64).reshape(
                len(self._inputs), -1, recorded[n].shape[-1]
            )
            for n in layers
        }

    def select(self, context):
        if getattr(self, "_model", None) is not context.model:  # a new model: a new history
            self._model, self._inputs, self._state = context.model, None, None
        now = self.outputs(context.model, context.layers)
        costs = context.costs
        if self._state is None:  # nothing moved yet: random neurons until the budget
            self._state = {n: (o, 0.0, 0.0, 0.0) for n, o in now.items()}
            self._last = self._random(context)
            return self._last
        if all(np.array_equal(now[n], self._state[n][0]) for n in now):
            return self._last  # no training since the last recording: nothing to measure
        scores = {}
        for n, out in now.items():
            before, d_before, delta_before, v_before = self._state[n]
            dot = np.sum(out * before, axis=1)
            norms = np.linalg.norm(out, axis=1) * np.linalg.norm(before, axis=1)
            phi = np.mean(np.where(norms > 0, dot / np.where(norms > 0, norms, 1), 1.0), axis=0)
            d = 1.0 - phi
            delta = d - d_before
            v = delta - delta_before + self.momentum * v_before
            self._state[n] = (out, d, delta, v)
            scores[n] = np.abs(v) / costs[n].neuron_weight_units
        self._last = self._top(context, scores)
        return self._last

    def _candidates(self, context):
        costs = context.costs
        return sampling.candidates(
            [np.full(costs[n].neurons, costs[n].neuron_weight_units) for n in context.layers]
        )

    def _random(self, context):
        layer_of, neuron_of, unit_of = self._candidates(context)
        order = context.rng.permutation(len(unit_of))
        return sampling.fill(order, layer_of, neuron_of, unit_of, context.budget, context.layers)

    def _top(self, context, scores):
        layer_of, neuron_of, unit_of = self._candidates(context)
        flat = np.concatenate([scores[n] for n in context.layers])
        if not np.all(np.isfinite(flat)):
            raise ValueError("Velocity scores are not finite: the watched outputs hold NaN or Inf.")
        order = np.argsort(-flat, kind="stable")
        return sampling.fill(order, layer_of, neuron_of, unit_of, context.budget, context.layers)

    def get_config(self):
        return {**super().get_config(), "images": self.images, "momentum": self.momentum}
