"""The base of every sparse-update strategy: what it sees when it selects, what it must
implement, and how it is saved with a model (Keras serialization of its `get_config`)."""

import abc
import copy
import dataclasses

import keras
import numpy as np

register = keras.saving.register_keras_serializable(package="tf_tradyx")


@dataclasses.dataclass
class SelectionContext:
    """What a strategy may look at when it selects.

    The sampler builds one for every draw and passes it to `Strategy.select`.

    Attributes:
      model (keras.Model): the wrapped model (its current weights included).
      costs (CostTable): the costs of every selectable layer.
      layers (list[str]): the candidate (wrapped) layer names.
      budget (int | None): the budget in units (None for fixed schemes).
      rng (np.random.Generator): seeded by (seed, draw number): use it for any randomness.
      epoch (int): the draw number.
      count_pruned (bool): False when only unpruned weights of a channel count toward the budget.

    Examples:
      >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
      >>> context = tx.sparse_update.SelectionContext(
      ...     model=model, costs=tx.sparse_update.cost_table(model, classifier=None),
      ...     layers=["fc"], budget=8, rng=np.random.default_rng(0))
      >>> context.costs["fc"].units_per_channel, context.epoch, context.count_pruned
      (4, 0, True)
    """

    model: object  # the wrapped model
    costs: object  # CostTable of every selectable layer
    layers: list  # candidate layer names (the wrapped ones)
    budget: int  # units (None for fixed schemes)
    rng: np.random.Generator
    epoch: int = 0
    count_pruned: bool = True  # False: only unpruned weights of a channel count toward the budget


class Strategy(abc.ABC):
    """Base class: implement `select`; set `dynamic = False` for a selection made once.

    `layers` are the candidate layer names (None: the strategy decides, e.g. every selectable
    layer). A subclass that takes arguments implements `get_config` so that it can be saved.

    `select(context)` returns {layer name: input-channel indices} given a `SelectionContext`;
    the sampler checks the result against the wrapped layers and the budget before it assigns
    it. Register the subclass with `@keras.saving.register_keras_serializable()` to load a
    saved model that uses it.

    Examples:
      A static strategy: the input channels with the largest kernel norm, until the budget.

      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> class LargestNorm(sp.Strategy):
      ...     dynamic = False  # selected once, at wrap time
      ...     name = "largest_norm"
      ...     def __init__(self, layers=None):
      ...         self.layers = layers
      ...     def select(self, context):
      ...         name = context.layers[0]
      ...         wrapper = next(w for w in sp.sparse_layers(context.model)
      ...                        if w.selection_name == name)
      ...         row = context.costs[name]
      ...         norms = sp.channel_norms(wrapper.kernel, row.kind)
      ...         count = context.budget // row.units_per_channel
      ...         return {name: np.argsort(-norms)[:count]}
      >>> sparse = sp.wrap(model, budget=400, strategy=LargestNorm(["conv2"]), seed=0)
      >>> {name: len(channels) for name, channels in sp.selection(sparse).items()}
      {'conv2': 2}
    """

    dynamic = True
    mode = "channels"
    budgeted = True  # the selection must fit the budget
    uses_all_layers = False  # candidates are all selectable layers, not the ranking's top-K
    # `select` depends only on the context's rng, costs, layers and budget (not on the weights):
    # a sampler may then draw the coming epochs' selections ahead of time, so that an XLA-compiled
    # train step is traced once with room for all of them.
    predictable = False
    # What the selection's indices name: "input" channels (every strategy of the TraDy paper but
    # one) or "output" neurons (Velocity), whose cost is `selection_units`.
    channel_axis = "input"
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
            raise ValueError(
                f"Strategy {self.name!r} needs layers=: the preselected layer names, "
                "e.g. rank_layers(model, data).top_k(coverage=0.97)."
            )
        return list(self.layers)

    def selectable(self, row):
        """How many channels of the layer with costs `row` the selection's indices range over."""
        return row.neurons if self.channel_axis == "output" else row.in_channels

    def selection_units(self, costs, selection, count_pruned=True):
        """The units a selection spends of the budget (weights and input maps of the channels)."""
        return costs.units(selection, count_pruned)

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
            raise ValueError(
                f"Strategy {self.name!r} already has layers {list(self.layers)}; "
                "pass them in one place only."
            )
        out = copy.copy(self)
        out.layers = list(layers)
        return out

    def get_config(self):
        return {"layers": None if self.layers is None else list(self.layers)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def serialize(strategy):
    """A JSON-able config of a strategy (Keras' serialization format)."""
    return keras.saving.serialize_keras_object(strategy)


def deserialize(config):
    """The strategy a `serialize` config describes; ValueError for an unregistered class."""
    try:
        return keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"Cannot rebuild the saved strategy {config.get('class_name')!r} ({e}); "
            "register your Strategy subclass with "
            "@keras.saving.register_keras_serializable(), or pass strategy= to "
            "attach."
        ) from None
