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

from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update import gradients, sampling
from tf_tradyx.sparse_update.strategy_base import (  # noqa: F401
    SelectionContext,
    Strategy,
    deserialize,
    register,
    serialize,
)
from tf_tradyx.sparse_update.su_scheme import PAPER_SCHEMES, SU, SparseUpdateScheme  # noqa: F401
from tf_tradyx.sparse_update.velocity import Velocity

_register = register


@_register
class RandomChannels(Strategy):
    """Uniformly random channels until the budget (docs/METHODS.md 1.4).

    With `layers` (the ranking's top-K) and dynamic=True this is TraDy; without `layers` it draws
    from every selectable layer (Full Random).

    Args:
      layers (list[str] | None): the candidate layer names; None draws from every selectable
        layer.
      dynamic (bool): draw again at every epoch (with `ChannelResampler`); False draws once, at
        `wrap` time.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> strategy = sp.RandomChannels(dynamic=False)  # static Full Random
      >>> strategy.name
      'static_full_random'
      >>> sparse = sp.wrap(model, budget=400, strategy=strategy, seed=0)
      >>> sp.efficiency(sparse).units <= 400
      True
    """

    predictable = True  # draws depend only on the rng: XLA traces can reserve room for them

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
        if self.layers is not None and list(self.layers) != list(layers):
            raise ValueError(
                f"Strategy {self.name!r} already has layers {list(self.layers)}; "
                "pass them in one place only."
            )
        return type(self)(**{**self.get_config(), "layers": list(layers)})

    def select(self, context):
        return sampling.random_channels(
            context.costs, context.layers, context.budget, context.rng, context.count_pruned
        )

    def get_config(self):
        return {**super().get_config(), "dynamic": self.dynamic}


@_register
class TraDy(RandomChannels):
    """TraDy: channels of the preselected (top-K RGN) layers, drawn at random every epoch.

    Every epoch (`ChannelResampler`), the input channels of `layers` are shuffled and taken in
    that order while they fit the budget (docs/METHODS.md 1.4).

    Args:
      layers (list[str]): the preselected layer names, usually
        `rank_layers(model, data).top_k(coverage=0.97)`.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, strategy=sp.TraDy(["conv2"]), seed=0)
      >>> {name: len(channels) for name, channels in sp.selection(sparse).items()}
      {'conv2': 2}
    """

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

    Args:
      data: (x, y) batches the gradients are computed on: a `tf.data.Dataset` of batches or an
        (x, y) tuple of arrays.
      layers (list[str] | None): candidate layer names; None means every selectable layer.
      batches (int): how many batches of `data` the gradients sum over.
      dynamic (bool): select again at every epoch; False selects once, at `wrap` time.
      loss: a Keras loss; default the cross-entropy the model's output calls for.

    Raises:
      ValueError: for a non-positive `batches`; when selecting, without `data`.

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
      >>> strategy = sp.DetRGN(data=(x, y), layers=["conv2"], batches=1, dynamic=False)
      >>> strategy.name
      'static_det_rgn'
      >>> sparse = sp.wrap(model, budget=400, strategy=strategy, seed=0)
      >>> {name: len(channels) for name, channels in sp.selection(sparse).items()}
      {'conv2': 2}
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
            raise ValueError(
                "Det RGN computes full gradients: give it data, e.g. "
                "DetRGN(data=train_ds) or wrap(..., strategy='dynamic_det_rgn', "
                "data=train_ds) (a loaded model: attach(model, strategy=DetRGN(data=...)))."
            )
        grads = gradients.full_kernel_gradients(
            context.model, self.data, context.layers, batches=self.batches, loss=self.loss
        )
        scores = {
            n: costs_lib.channel_norms(
                grads[n], context.costs[n].kind, context.costs[n].in_channels
            )
            / context.costs[n].channel_units(context.count_pruned)
            for n in context.layers
        }
        return sampling.top_channels(context.costs, scores, context.budget, context.count_pruned)

    def get_config(self):
        return {**super().get_config(), "batches": self.batches, "dynamic": self.dynamic}


@_register
class WholeVariables(Strategy):
    """No channel selection: "full" (everything), "classifier" (head only), "bias" (TinyTL).

    The baselines that train whole variables; they take no budget.

    Args:
      mode (str): "full", "classifier" or "bias" (the biases of every selectable layer and the
        classifier).

    Raises:
      ValueError: for another mode, or when given `layers`.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, strategy=sp.WholeVariables("classifier"))
      >>> sp.selection(sparse), sp.sparse_layers(sparse)
      ({}, [])
      >>> sp.WholeVariables("head")
      Traceback (most recent call last):
      ...
      ValueError: mode must be 'full', 'classifier' or 'bias', got 'head'.
    """

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


NAMES = (
    "tradi",
    "static_topk_random",
    "dynamic_full_random",
    "static_full_random",
    "dynamic_det_rgn",
    "static_det_rgn",
    "su",
    "velocity",
    "full",
    "classifier",
    "bias",
)


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
            raise ValueError(
                "Strategy 'static_topk_random' needs layers=: the preselected layer "
                "names, e.g. rank_layers(model, data).top_k(coverage=0.97)."
            )
        return RandomChannels(layers, dynamic=False)
    if strategy in ("dynamic_full_random", "static_full_random"):
        if layers is not None:
            raise ValueError(f"Strategy {strategy!r} draws from all layers; do not pass layers=.")
        return RandomChannels(None, dynamic=strategy.startswith("dynamic"))
    if strategy in ("dynamic_det_rgn", "static_det_rgn"):
        if data is None:
            raise ValueError(
                "Det RGN computes full gradients: pass data= (a dataset of (x, y) batches) to wrap."
            )
        return DetRGN(data, layers, dynamic=strategy.startswith("dynamic"))
    if strategy == "su":
        if scheme is None:
            raise ValueError(
                "strategy='su' needs scheme=: a {layer: fraction} dict, a "
                f"SparseUpdateScheme, or one of {sorted(PAPER_SCHEMES)}."
            )
        return (scheme if isinstance(scheme, SparseUpdateScheme) else SU(scheme)).with_layers(
            layers
        )
    if strategy == "velocity":
        if data is None:
            raise ValueError(
                "Velocity watches how layer outputs move on a few images: pass data= (e.g. 10 "
                "held-out images, or a dataset) to wrap."
            )
        return Velocity(data, layers=layers)
    if strategy in ("full", "classifier", "bias"):
        return WholeVariables(strategy).with_layers(layers)
    raise ValueError(
        f"Unknown strategy {strategy!r}; choose from {list(NAMES)} or pass a "
        "tx.sparse_update.Strategy."
    )
