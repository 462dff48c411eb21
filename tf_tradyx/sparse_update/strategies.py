"""Which channels to update: TraDy and every strategy the TraDy paper compares it with.

A strategy is an object that owns its arguments (`TraDy(layers=...)`, `DetRGN(data=...)`,
`SU(scheme=...)`) and has one method, `select(context) -> {layer name: channel indices}`. Its
attribute `dynamic` says whether `ChannelResampler` calls it again at every epoch start (True) or
only once, at `wrap` time (False); `mode` is "channels" for strategies that pick channels, or
"full", "classifier", "bias" for the ones that train whole variables instead. Strategies serialize
with `get_config`, and `wrap` stores the config in the wrapped model, so a model loaded from a
`.keras` file knows its strategy (`attach(loaded)` needs no arguments).

    class LargestNorm(tx.sparse_update.Strategy):      # a user-defined static strategy
        dynamic = False
        def select(self, context):
            ...  # context.costs, context.layers, context.budget, context.rng, context.model

String names remain as shortcuts: `get("tradi", layers=...)` is `TraDy(layers=...)`.
"""

import abc
import copy
import dataclasses

import keras
import numpy as np

from tf_tradyx import _model_walk
from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update import gradients
from tf_tradyx.sparse_update import sampling
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate

_register = keras.saving.register_keras_serializable(package="tf_tradyx")


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
    """Base class: implement `select`; set `dynamic = False` for a selection made once.

    `layers` are the candidate layer names (None: the strategy decides, e.g. every selectable
    layer). A subclass that takes arguments implements `get_config` so that it can be saved.
    """
    dynamic = True
    mode = "channels"
    budgeted = True          # the selection must fit the budget
    uses_all_layers = False  # candidates are all selectable layers, not the ranking's top-K
    layers = None
    name = "custom"

    @abc.abstractmethod
    def select(self, context):
        """{layer name: input-channel indices} to update, given a `SelectionContext`."""

    def candidate_layers(self, costs):
        """The layers to wrap."""
        if self.uses_all_layers:
            return costs.names
        if self.layers is None:
            raise ValueError(f"Strategy {self.name!r} needs layers=: the preselected layer names, "
                             "e.g. rank_layers(model, data).top_k(coverage=0.97).")
        return list(self.layers)

    def bias_layer_names(self, costs):
        """Layers whose biases train besides the selected channels (none by default)."""
        return []

    def with_layers(self, layers):
        """A copy of this strategy with these candidate layers (for `wrap(..., layers=...)`)."""
        if layers is None:
            return self
        if self.uses_all_layers or self.mode != "channels":
            raise ValueError(f"Strategy {self.name!r} chooses its own layers; do not pass layers=.")
        if self.layers is not None and list(self.layers) != list(layers):
            raise ValueError(f"Strategy {self.name!r} already has layers {list(self.layers)}; "
                             "pass them in one place only.")
        out = copy.copy(self)
        out.layers = list(layers)
        return out

    def get_config(self):
        return {"layers": None if self.layers is None else list(self.layers)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@_register
class RandomChannels(Strategy):
    """Uniformly random channels until the budget (METHODS.md 1.4).

    With `layers` (the ranking's top-K) and dynamic=True this is TraDy; without `layers` it draws
    from every selectable layer (Full Random).
    """

    def __init__(self, layers=None, dynamic=True):
        self.layers = None if layers is None else list(layers)
        self.dynamic = bool(dynamic)

    @property
    def uses_all_layers(self):
        return self.layers is None

    @property
    def name(self):
        scope = "full" if self.layers is None else "topk"
        return f"{'dynamic' if self.dynamic else 'static'}_{scope}_random"

    def with_layers(self, layers):
        if layers is None:
            return self
        return type(self)(**{**self.get_config(), "layers": list(layers)})

    def select(self, context):
        return sampling.random_channels(context.costs, context.layers, context.budget, context.rng,
                                        context.count_pruned)

    def get_config(self):
        return {**super().get_config(), "dynamic": self.dynamic}


@_register
class TraDy(RandomChannels):
    """TraDy: channels of the preselected (top-K RGN) layers, drawn at random every epoch."""

    def __init__(self, layers=None):
        super().__init__(layers=layers, dynamic=True)

    uses_all_layers = False
    name = "tradi"

    def get_config(self):
        return {"layers": None if self.layers is None else list(self.layers)}


@_register
class DetRGN(Strategy):
    """The oracle: full gradients over `batches` batches, highest-RGN channels until the budget.

    Candidates are the given `layers`, or every selectable layer when none are given. `data` is not
    saved with a model: give it again to `attach` (`attach(loaded, strategy=DetRGN(data=...))`).
    """

    def __init__(self, data=None, layers=None, batches=4, dynamic=True, loss=None):
        if not isinstance(batches, int) or isinstance(batches, bool) or batches < 1:
            raise ValueError(f"batches must be a positive integer, got {batches!r}.")
        self.data, self.batches, self.dynamic, self.loss = data, batches, bool(dynamic), loss
        self.layers = None if layers is None else list(layers)

    @property
    def name(self):
        return f"{'dynamic' if self.dynamic else 'static'}_det_rgn"

    def candidate_layers(self, costs):
        return costs.names if self.layers is None else list(self.layers)

    def with_layers(self, layers):
        return self if layers is None else Strategy.with_layers(self, layers)

    def select(self, context):
        if self.data is None:
            raise ValueError("Det RGN computes full gradients: give it data, e.g. "
                             "DetRGN(data=train_ds) or wrap(..., strategy='dynamic_det_rgn', "
                             "data=train_ds) (a loaded model: attach(model, strategy=DetRGN(data=...))).")
        grads = gradients.full_kernel_gradients(context.model, self.data, context.layers,
                                                batches=self.batches, loss=self.loss)
        scores = {n: costs_lib.channel_norms(grads[n], context.costs[n].kind)
                  / context.costs[n].channel_units(context.count_pruned) for n in context.layers}
        return sampling.top_channels(context.costs, scores, context.budget, context.count_pruned)

    def get_config(self):
        return {**super().get_config(), "batches": self.batches, "dynamic": self.dynamic}


PAPER_SCHEMES = {
    # MCUNetV3 (tiny-training) sparse-update schemes, in its notation (conv index, ratio, biases).
    # "mbv2-w0.35/50kb" is the one the TraDy paper pairs with its smallest budget (27,946 units);
    # it costs 28,282 units (METHODS.md 1.4).
    "mbv2-w0.35/50kb": ("36-39-40-41-42-45-48-49", "1-1-0-0.25-0.125-0.125-0.125-0.125", 16),
    "mcunet-in1/50kb": ("23-24-27-30-33-39", "0-0.25-0.5-0.5-0-0", 22),
    "mcunet-in1/100kb": ("21-24-27-30-36-39", "1-1-1-1-0.125-0.25", 22),
    "proxyless-w0.3/50kb": ("39-42-44-45-50-51-54-57", "0.25-1-0-1-0-0.125-0.25-0.25", 21),
}


@_register
class SparseUpdateScheme(Strategy):
    """MCUNetV3's sparse update ("su"): fixed layers, a fixed fraction of input channels each.

    Channels are the ones with the largest input-channel weight norm. Biases of `bias_layers` (the
    last `n` selectable layers when an int) train too; they cost no units. The scheme is fixed, so
    its cost may differ from a budget; `efficiency` reports both.

    Args:
      scheme: {layer name: fraction of input channels in [0, 1]}, or a name in `PAPER_SCHEMES`
        (tiny-training's notation, resolved against the model when it is wrapped).
      bias_layers: an int n (the last n selectable layers) or a list of layer names.
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
            raise ValueError(f"Conv indices {bad} are out of range: the model has {len(convs)} convs.")
        return cls({convs[i]: r for i, r in zip(idx, rat) if r > 0},
                   bias_layers=convs[len(convs) - n_bias_update:] if n_bias_update else [])

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
            return costs.names[len(costs.names) - bias_layers:] if bias_layers else []
        for n in bias_layers:
            costs[n]  # noqa: B018
        return list(bias_layers)

    def select(self, context):
        out = {}
        wrappers = {w.layer.name: w for w in _model_walk.layers_of_type(context.model,
                                                                         ChannelSparseUpdate)}
        for name, fraction in self.resolved(context.costs).fractions.items():
            k = int(round(fraction * context.costs[name].in_channels))
            if k == 0:
                continue
            norms = costs_lib.channel_norms(wrappers[name].kernel, context.costs[name].kind)
            out[name] = np.sort(np.argsort(-norms, kind="stable")[:k])
        return out

    def get_config(self):
        return {"scheme": self.scheme, "bias_layers": self.bias_layers}


SU = SparseUpdateScheme


@_register
class WholeVariables(Strategy):
    """No channel selection: "full" (everything), "classifier" (head only), "bias" (TinyTL)."""

    dynamic = False
    budgeted = False

    def __init__(self, mode):
        if mode not in ("full", "classifier", "bias"):
            raise ValueError(f"mode must be 'full', 'classifier' or 'bias', got {mode!r}.")
        self.mode = self.name = mode

    def with_layers(self, layers):
        if layers is not None:
            raise ValueError(f"Strategy {self.mode!r} trains whole variables; do not pass layers=.")
        return self

    def candidate_layers(self, costs):
        return []

    def bias_layer_names(self, costs):
        return costs.names if self.mode == "bias" else []

    def select(self, context):
        return {}

    def get_config(self):
        return {"mode": self.mode}


NAMES = ("tradi", "static_topk_random", "dynamic_full_random", "static_full_random",
         "dynamic_det_rgn", "static_det_rgn", "su", "full", "classifier", "bias")


def get(strategy, layers=None, data=None, scheme=None):
    """A strategy object from a name in `NAMES` (its arguments from the keywords) or an instance."""
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        strategy = strategy()
    if isinstance(strategy, Strategy):
        return strategy.with_layers(layers)
    if strategy == "tradi":
        return TraDy(layers)
    if strategy == "static_topk_random":
        if layers is None:
            raise ValueError("Strategy 'static_topk_random' needs layers=: the preselected layer "
                             "names, e.g. rank_layers(model, data).top_k(coverage=0.97).")
        return RandomChannels(layers, dynamic=False)
    if strategy in ("dynamic_full_random", "static_full_random"):
        if layers is not None:
            raise ValueError(f"Strategy {strategy!r} draws from all layers; do not pass layers=.")
        return RandomChannels(None, dynamic=strategy.startswith("dynamic"))
    if strategy in ("dynamic_det_rgn", "static_det_rgn"):
        if data is None:
            raise ValueError("Det RGN computes full gradients: pass data= (a dataset of (x, y) "
                             "batches) to wrap.")
        return DetRGN(data, layers, dynamic=strategy.startswith("dynamic"))
    if strategy == "su":
        if scheme is None:
            raise ValueError("strategy='su' needs scheme=: a {layer: fraction} dict, a "
                             f"SparseUpdateScheme, or one of {sorted(PAPER_SCHEMES)}.")
        return (scheme if isinstance(scheme, SparseUpdateScheme) else SU(scheme)).with_layers(layers)
    if strategy in ("full", "classifier", "bias"):
        return WholeVariables(strategy).with_layers(layers)
    raise ValueError(f"Unknown strategy {strategy!r}; choose from {list(NAMES)} or pass a "
                     "tx.sparse_update.Strategy.")


def serialize(strategy):
    """A JSON-able config of a strategy (Keras' serialization format)."""
    return keras.saving.serialize_keras_object(strategy)


def deserialize(config):
    """The strategy a `serialize` config describes; ValueError for an unregistered class."""
    try:
        return keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Cannot rebuild the saved strategy {config.get('class_name')!r} ({e}); "
                         "register your Strategy subclass with "
                         "@keras.saving.register_keras_serializable(), or pass strategy= to "
                         "attach.") from None
