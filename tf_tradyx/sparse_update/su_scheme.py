"""MCUNetV3's sparse update ("su"): a fixed scheme of layers and channel fractions, the TraDy
paper's static baseline, with the tiny-training schemes the paper pairs with its budgets."""

import numpy as np

from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update.strategy_base import Strategy, register
from tf_tradyx.sparse_update.wrapper import wrappers_of

PAPER_SCHEMES = {
    # MCUNetV3 (tiny-training) sparse-update schemes, in its notation (conv index, ratio, biases).
    # "mbv2-w0.35/50kb" is the one the TraDy paper pairs with its smallest budget (27,946 units);
    # it costs 28,282 units, 336 more than that budget.
    "mbv2-w0.35/50kb": ("36-39-40-41-42-45-48-49", "1-1-0-0.25-0.125-0.125-0.125-0.125", 16),
    "mcunet-in1/50kb": ("23-24-27-30-33-39", "0-0.25-0.5-0.5-0-0", 22),
    "mcunet-in1/100kb": ("21-24-27-30-36-39", "1-1-1-1-0.125-0.25", 22),
    "proxyless-w0.3/50kb": ("39-42-44-45-50-51-54-57", "0.25-1-0-1-0-0.125-0.25-0.25", 21),
}


@register
class SparseUpdateScheme(Strategy):
    """MCUNetV3's sparse update ("su"): fixed layers, a fixed fraction of input channels each.

    Channels are the ones with the largest input-channel weight norm. Biases of `bias_layers` (the
    last `n` selectable layers when an int) train too; they cost no units. The scheme is fixed, so
    its cost may differ from a budget; `efficiency` reports both.

    `SU` is the same class.

    Args:
      scheme (dict | str): {layer name: fraction of input channels in [0, 1]}, or a name in
        `PAPER_SCHEMES` (tiny-training's notation, resolved against the model when it is wrapped).
      bias_layers (int | list[str]): an int n (the last n selectable layers) or a list of layer
        names.

    Raises:
      ValueError: for an unknown scheme name, an empty scheme, a fraction outside [0, 1], or
        `layers` given besides the scheme.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> strategy = sp.SparseUpdateScheme({"conv2": 0.25}, bias_layers=["conv2"])
      >>> sparse = sp.wrap(model, strategy=strategy, seed=0)
      >>> {name: len(channels) for name, channels in sp.selection(sparse).items()}
      {'conv2': 2}
      >>> sp.SU is sp.SparseUpdateScheme
      True
    """

    dynamic = False
    budgeted = False
    name = "su"

    def __init__(self, scheme, bias_layers=0):
        if isinstance(scheme, str):
            if scheme not in PAPER_SCHEMES:
                raise ValueError(f"Unknown scheme {scheme!r}; known: {sorted(PAPER_SCHEMES)}.")
            self.fractions = None
        else:
            if not scheme:
                raise ValueError("A sparse-update scheme needs at least one {layer: fraction}.")
            for n, f in dict(scheme).items():
                if not 0.0 <= float(f) <= 1.0:
                    raise ValueError(f"The fraction of layer {n!r} must lie in [0, 1], got {f!r}.")
            self.fractions = {n: float(f) for n, f in dict(scheme).items()}
        self.scheme = scheme if isinstance(scheme, str) else self.fractions
        self.bias_layers = bias_layers if isinstance(bias_layers, int) else list(bias_layers)

    @property
    def layers(self):
        return None if self.fractions is None else list(self.fractions)

    @layers.setter
    def layers(self, value):  # the scheme names its own layers
        raise ValueError("The 'su' strategy has its own layers (the scheme); do not pass layers=.")

    def resolved(self, costs):
        """This scheme with a paper-scheme name turned into {layer: fraction} for `costs`' model."""
        if self.fractions is not None:
            return self
        return self.from_tiny_training(costs, *PAPER_SCHEMES[self.scheme])

    @classmethod
    def from_tiny_training(cls, costs, weight_idx, ratios, n_bias_update):
        """A scheme in tiny-training's notation: conv indices "36-39-..." and ratios "1-1-0-...".

        Indices count the model's convolutions in graph order (first conv = 0), as
        `--manual_weight_idx` does.
        """
        idx = [int(i) for i in str(weight_idx).split("-")]
        rat = [float(r) for r in str(ratios).split("-")]
        if len(idx) != len(rat):
            raise ValueError(f"{len(idx)} layer indices but {len(rat)} ratios.")
        convs = [r.name for r in costs if r.kind != "dense"]
        bad = [i for i in idx if not 0 <= i < len(convs)]
        if bad:
            raise ValueError(
                f"Conv indices {bad} are out of range: the model has {len(convs)} convs."
            )
        return cls(
            {convs[i]: r for i, r in zip(idx, rat) if r > 0},
            bias_layers=convs[len(convs) - n_bias_update :] if n_bias_update else [],
        )

    def with_layers(self, layers):
        if layers is not None:
            self.layers = layers  # raises
        return self

    def candidate_layers(self, costs):
        for n in self.resolved(costs).fractions:
            costs[n]  # noqa: B018 - raises a clear KeyError for unknown layers
        return list(self.resolved(costs).fractions)

    def bias_layer_names(self, costs):
        bias_layers = self.resolved(costs).bias_layers
        if isinstance(bias_layers, int):
            return costs.names[len(costs.names) - bias_layers :] if bias_layers else []
        for n in bias_layers:
            costs[n]  # noqa: B018
        return list(bias_layers)

    def select(self, context):
        out = {}
        wrappers = {w.selection_name: w for w in wrappers_of(context.model)}
        for name, fraction in self.resolved(context.costs).fractions.items():
            k = int(round(fraction * context.costs[name].in_channels))
            if k == 0:
                continue
            norms = costs_lib.channel_norms(
                wrappers[name].kernel, context.costs[name].kind, context.costs[name].in_channels
            )
            out[name] = np.sort(np.argsort(-norms, kind="stable")[:k])
        return out

    def get_config(self):
        return {"scheme": self.scheme, "bias_layers": self.bias_layers}


SU = SparseUpdateScheme
