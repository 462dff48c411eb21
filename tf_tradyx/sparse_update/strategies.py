"""Which channels to update: TraDy and every strategy the TraDy paper compares it with.

A strategy is a small class with one method, `select(context) -> {layer name: channel indices}`.
Its class attribute `dynamic` says whether `ChannelResampler` calls it again at every epoch start
(True) or only once, at `wrap` time (False). `mode` is "channels" for strategies that pick channels,
or "full", "classifier", "bias" for the ones that train whole variables instead.

    class LargestNorm(tx.sparse_update.Strategy):      # a user-defined static strategy
        dynamic = False
        def select(self, context):
            ...  # context.costs, context.layers, context.budget, context.rng, context.model
"""

import abc
import dataclasses

import numpy as np

from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update import sampling


@dataclasses.dataclass
class SelectionContext:
    """What a strategy may look at when it selects."""
    model: object          # the wrapped model
    costs: object          # CostTable of every selectable layer
    layers: list           # candidate layer names (the wrapped ones)
    budget: int            # units (None for fixed schemes)
    rng: np.random.Generator
    epoch: int = 0
    count_pruned: bool = True  # False: only unpruned weights of a channel count toward the budget


class Strategy(abc.ABC):
    """Base class: implement `select`; set `dynamic = False` for a selection made once."""
    dynamic = True
    mode = "channels"
    budgeted = True         # the selection must fit the budget
    uses_all_layers = False  # candidates are all selectable layers, not the ranking's top-K
    name = "custom"

    @abc.abstractmethod
    def select(self, context):
        """{layer name: input-channel indices} to update, given a `SelectionContext`."""

    def candidate_layers(self, costs, layers):
        """The layers to wrap, from the user's `layers` (None = not given)."""
        if self.uses_all_layers:
            if layers is not None:
                raise ValueError(f"Strategy {self.name!r} draws from all layers; do not pass layers=.")
            return costs.names
        if layers is None:
            raise ValueError(f"Strategy {self.name!r} needs layers=: the preselected layer names, "
                             "e.g. rank_layers(model, data).top_k(coverage=0.97).")
        return list(layers)


class RandomChannels(Strategy):
    """Uniformly random channels until the budget (METHODS.md 1.4).

    dynamic=True with the top-K layers is TraDy; `all_layers=True` is Full Random.
    """

    def __init__(self, dynamic=True, all_layers=False):
        self.dynamic = dynamic
        self.uses_all_layers = all_layers
        self.name = f"{'dynamic' if dynamic else 'static'}_{'full' if all_layers else 'topk'}_random"

    def select(self, context):
        return sampling.random_channels(context.costs, context.layers, context.budget, context.rng,
                                        context.count_pruned)


class DetRGN(Strategy):
    """The oracle: full gradients over `batches` batches, highest-RGN channels until the budget.

    Candidates are the given `layers`, or every selectable layer when none are given.
    """

    def __init__(self, data, batches=4, dynamic=True, loss=None):
        if data is None:
            raise ValueError("Det RGN computes full gradients: pass data= (a dataset of (x, y) "
                             "batches) to wrap.")
        if not isinstance(batches, int) or batches < 1:
            raise ValueError(f"batches must be a positive integer, got {batches!r}.")
        self.data, self.batches, self.dynamic, self.loss = data, batches, dynamic, loss
        self.name = f"{'dynamic' if dynamic else 'static'}_det_rgn"

    def candidate_layers(self, costs, layers):
        return costs.names if layers is None else list(layers)

    def select(self, context):
        from tf_tradyx.sparse_update import ranking  # noqa: cyclic at import time
        grads = ranking.full_kernel_gradients(context.model, self.data, context.layers,
                                              batches=self.batches, loss=self.loss)
        scores = {n: ranking.channel_norms(grads[n], context.costs[n].kind)
                  / context.costs[n].channel_units(context.count_pruned) for n in context.layers}
        return sampling.top_channels(context.costs, scores, context.budget, context.count_pruned)


class SparseUpdateScheme(Strategy):
    """MCUNetV3's sparse update: fixed layers, a fixed fraction of input channels each.

    Channels are the ones with the largest input-channel weight norm. Biases of `bias_layers` (the
    last `n` selectable layers when an int) train too; they cost no units. The scheme is fixed, so
    its cost may differ from a budget; `efficiency` reports both.

    Args:
      fractions: {layer name: fraction of input channels in [0, 1]}.
      bias_layers: an int n (the last n selectable layers) or a list of layer names.
    """

    dynamic = False
    budgeted = False
    name = "su"

    def __init__(self, fractions, bias_layers=0):
        if not fractions:
            raise ValueError("A sparse-update scheme needs at least one {layer: fraction}.")
        for n, f in fractions.items():
            if not 0.0 <= float(f) <= 1.0:
                raise ValueError(f"The fraction of layer {n!r} must lie in [0, 1], got {f!r}.")
        self.fractions = {n: float(f) for n, f in fractions.items()}
        self.bias_layers = bias_layers

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
            raise ValueError(f"Conv indices {bad} are out of range: the model has {len(convs)} convs.")
        return cls({convs[i]: r for i, r in zip(idx, rat) if r > 0},
                   bias_layers=convs[len(convs) - n_bias_update:] if n_bias_update else [])

    def candidate_layers(self, costs, layers):
        if layers is not None:
            raise ValueError("The 'su' strategy has its own layers (the scheme); do not pass layers=.")
        for n in self.fractions:
            costs[n]  # noqa: B018 - raises a clear KeyError for unknown layers
        return list(self.fractions)

    def bias_layer_names(self, costs):
        if isinstance(self.bias_layers, int):
            return costs.names[len(costs.names) - self.bias_layers:] if self.bias_layers else []
        for n in self.bias_layers:
            costs[n]  # noqa: B018
        return list(self.bias_layers)

    def select(self, context):
        out = {}
        for name, fraction in self.fractions.items():
            wrapper = _wrapper_of(context.model, name)
            k = int(round(fraction * context.costs[name].in_channels))
            if k == 0:
                continue
            norms = channel_weight_norms(wrapper.kernel, context.costs[name].kind)
            out[name] = np.sort(np.argsort(-norms, kind="stable")[:k])
        return out


class WholeVariables(Strategy):
    """No channel selection: "full" (everything), "classifier" (head only), "bias" (TinyTL)."""

    dynamic = False
    budgeted = False

    def __init__(self, mode):
        if mode not in ("full", "classifier", "bias"):
            raise ValueError(f"mode must be 'full', 'classifier' or 'bias', got {mode!r}.")
        self.mode = self.name = mode

    def candidate_layers(self, costs, layers):
        if layers is not None:
            raise ValueError(f"Strategy {self.mode!r} trains whole variables; do not pass layers=.")
        return []

    def select(self, context):
        return {}


channel_weight_norms = costs_lib.channel_norms  # L2 norm of each input channel's kernel slice


def _wrapper_of(model, name):
    from tf_tradyx.sparse_update import api
    for w in api.sparse_layers(model):
        if w.layer.name == name:
            return w
    raise KeyError(f"No sparse-update wrapper around layer {name!r}.")


PAPER_SCHEMES = {
    # MCUNetV3 (tiny-training) sparse-update schemes, in its notation (conv index, ratio, biases).
    # "mbv2-w0.35/50kb" is the one the TraDy paper pairs with its smallest budget (27,946 units);
    # it costs 28,282 units (METHODS.md 1.4).
    "mbv2-w0.35/50kb": ("36-39-40-41-42-45-48-49", "1-1-0-0.25-0.125-0.125-0.125-0.125", 16),
    "mcunet-in1/50kb": ("23-24-27-30-33-39", "0-0.25-0.5-0.5-0-0", 22),
    "mcunet-in1/100kb": ("21-24-27-30-36-39", "1-1-1-1-0.125-0.25", 22),
    "proxyless-w0.3/50kb": ("39-42-44-45-50-51-54-57", "0.25-1-0-1-0-0.125-0.25-0.25", 21),
}

NAMES = ("tradi", "static_topk_random", "dynamic_full_random", "static_full_random",
         "dynamic_det_rgn", "static_det_rgn", "su", "full", "classifier", "bias")


def get(strategy, costs=None, data=None, scheme=None, rgn_batches=4):
    """A strategy object from a name in `NAMES` or a `Strategy` instance."""
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        return strategy()
    if strategy == "tradi":
        s = RandomChannels(dynamic=True)
        s.name = "tradi"
        return s
    if strategy in ("static_topk_random", "dynamic_full_random", "static_full_random"):
        return RandomChannels(dynamic=strategy.startswith("dynamic"), all_layers="full" in strategy)
    if strategy in ("dynamic_det_rgn", "static_det_rgn"):
        return DetRGN(data, batches=rgn_batches, dynamic=strategy.startswith("dynamic"))
    if strategy == "su":
        if scheme is None:
            raise ValueError("strategy='su' needs scheme=: a {layer: fraction} dict, a "
                             f"SparseUpdateScheme, or one of {sorted(PAPER_SCHEMES)}.")
        if isinstance(scheme, SparseUpdateScheme):
            return scheme
        if isinstance(scheme, str):
            if scheme not in PAPER_SCHEMES:
                raise ValueError(f"Unknown scheme {scheme!r}; known: {sorted(PAPER_SCHEMES)}.")
            return SparseUpdateScheme.from_tiny_training(costs, *PAPER_SCHEMES[scheme])
        return SparseUpdateScheme(dict(scheme))
    if strategy in ("full", "classifier", "bias"):
        return WholeVariables(strategy)
    raise ValueError(f"Unknown strategy {strategy!r}; choose from {list(NAMES)} or pass a "
                     "tx.sparse_update.Strategy.")


def loss_function(model, loss):
    """The loss to differentiate: `loss`, else the model's compiled loss, else logits cross-entropy."""
    import keras
    if loss is None:
        loss = getattr(model, "loss", None)
    if loss is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.get(loss) if isinstance(loss, str) else loss


__all__ = ["Strategy", "RandomChannels", "DetRGN", "SparseUpdateScheme", "WholeVariables",
           "SelectionContext", "PAPER_SCHEMES", "NAMES", "get", "channel_weight_norms"]
