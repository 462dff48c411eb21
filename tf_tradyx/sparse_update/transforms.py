"""Model transforms of the sparse-update workflow: `wrap`, `attach`, `strip`.

`wrap` clones the model, puts a `ChannelSparseUpdate` around each candidate layer, freezes everything
else except the classifier (BatchNormalization runs in inference mode), installs the model's
`Sampler` (strategy, budget, seed) and draws a first selection. The sampler's config is saved in
the wrappers, so `attach` gives a model loaded from a `.keras` file its sampler back.
"""

import logging

import keras
import numpy as np

from tf_tradyx import _keras_compat
from tf_tradyx._graph import sublayers, walk
from tf_tradyx.pruning.masking import MaskedLayer
from tf_tradyx.sparse_update import compact_relu, optimizer_state, strategies
from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update import recompute as recompute_lib
from tf_tradyx.sparse_update import sampler as sampler_lib
from tf_tradyx.sparse_update.sparse_sublayers import SparseSublayers
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate

_LOG = logging.getLogger("tf_tradyx")


def _layer_names(layers):
    if layers is None:
        return None
    if hasattr(layers, "top_k"):  # a LayerRanking
        raise TypeError("layers= takes layer names; pass ranking.top_k(coverage=0.97).")
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers= is empty; give at least one layer name.")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers= repeats names: {layers}.")
    return layers


def _set_trainability(model, sampler, update_bias, train_batchnorm):
    mode = sampler.strategy.mode
    classifier = sampler.costs.classifier
    bias_layers = set(sampler.strategy.bias_layer_names(sampler.costs))
    for layer in walk.flatten_layers(model):
        if isinstance(layer, ChannelSparseUpdate):
            layer.trainable = True
            if layer.layer_bias is not None:
                layer.layer_bias.trainable = update_bias or layer.selection_name in bias_layers
            continue
        if isinstance(layer, SparseSublayers):
            _freeze_all_but_wrappers(layer, update_bias, bias_layers)
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            if train_batchnorm is not None:
                layer.trainable = bool(train_batchnorm)
            continue
        if walk.inner(layer).name == classifier:
            layer.trainable = True
            continue
        if mode == "full" and layer.weights:
            layer.trainable = True
        elif layer.name in bias_layers and getattr(layer, "bias", None) is not None:
            layer.trainable = True
            for v in layer.weights:
                v.trainable = v is layer.bias
        else:
            layer.trainable = False


def _freeze_all_but_wrappers(holder, update_bias, bias_layers):
    """Inside a custom layer with wrapped sublayers only the wrappers train: every other sublayer
    (LayerNormalization, the projections not selected) is frozen, and so are the variables the
    custom layers on the way hold themselves (position biases, class tokens)."""
    holder.trainable = True  # Keras sets every sublayer trainable too
    inside = _keras_compat.all_sublayers(holder.layer)
    wrappers = [s for s in inside if isinstance(s, ChannelSparseUpdate)]
    above = set()  # the layers on the way from the holder to a wrapper
    for w in wrappers:
        for s in inside:
            if w in _keras_compat.all_sublayers(s):
                above.add(id(s))
    for s in [holder.layer, *inside]:
        if isinstance(s, ChannelSparseUpdate) or any(
            s in _keras_compat.all_sublayers(w) for w in wrappers
        ):
            continue
        if s is holder.layer or id(s) in above:
            for v in _keras_compat.layer_own_variables(s):
                v.trainable = False
        else:
            s.trainable = False
    for w in wrappers:
        if w.layer_bias is not None:
            w.layer_bias.trainable = update_bias or w.selection_name in bias_layers


def _built_copy(layer, node_of=None):
    """A fresh copy of a custom layer, built through a symbolic call like the one the model makes
    (`node_of`'s first call, default `layer`'s): layers that create sublayers in their first
    call (KerasHub's Swin attention) have them all only then."""
    fresh = walk.fresh_copy(layer)
    args, kwargs = _keras_compat.first_call_arguments(node_of or layer)

    def placeholder(value):
        if isinstance(value, keras.KerasTensor):
            return keras.Input(batch_shape=value.shape, dtype=value.dtype)
        return value

    fresh(
        *keras.tree.map_structure(placeholder, args),
        **keras.tree.map_structure(placeholder, kwargs),
    )
    return fresh


def _sublayer_paths(model, wanted):
    """{id(graph layer): [attribute path, ...]} of the wanted sublayers of custom layers."""
    out, parents = {}, costs_lib.sublayer_parents(model)
    for layer in walk.flatten_layers(model):
        parent = parents.get(id(layer))
        if parent is None:
            continue
        paths = [
            path
            for path, _ in sublayers.selectable_sublayers(parent)
            if sublayers.qualified_name(parent, path) in wanted
        ]
        if paths:
            out[id(layer)] = paths
    return out


def _set_input_gradients(model):
    """Wrappers with nothing trainable upstream skip their input gradient (no backward below them)."""
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        return  # nested models: keep every input gradient (conservative)
    upstream = {}
    for layer in model.layers:
        upstream[id(layer)] = any(
            upstream.get(id(p), True) or bool(p.trainable_weights)
            for p in _keras_compat.parent_layers(layer)
        )
        if isinstance(layer, ChannelSparseUpdate):
            layer.input_gradient = upstream[id(layer)]


_KERNEL_EXTRAS = (
    "kernel_regularizer",
    "depthwise_regularizer",
    "kernel_constraint",
    "depthwise_constraint",
)


def _check_kernel_extras(model, names):
    """Refuses kernel regularizers and constraints on the layers to wrap: a regularizer's gradient
    and a constraint's projection reach every input channel, so unselected channels would move."""
    found = []
    for layer in walk.flatten_layers(model):
        inner = walk.inner(layer)
        if inner.name in names:
            found += [f"{inner.name}.{a}" for a in _KERNEL_EXTRAS if getattr(inner, a, None)]
    if found:
        raise ValueError(
            f"Kernel regularizers and constraints would move unselected channels ({found[:4]}"
            f"{'...' if len(found) > 4 else ''}): their gradient or projection covers the whole "
            "kernel. Remove them from these layers before wrapping (e.g. set "
            "layer.kernel_regularizer = None), or leave these layers out of layers=."
        )


def wrap(
    model,
    budget=None,
    layers=None,
    strategy="tradi",
    seed=0,
    *,
    data=None,
    scheme=None,
    update_bias=False,
    train_batchnorm=False,
    classifier="auto",
    compact_activations=True,
    simulate=False,
    count_pruned=True,
    recompute="auto",
):
    """A clone of `model` ready for memory-budgeted fine-tuning.

    Args:
      model (keras.Model): a built Functional or Sequential model with a fixed input size (not modified).
      budget (int | str | None): memory units (an int, or a string such as "109KiB", see `parse_budget`); required by
        the channel-sampling strategies, optional for "su", "full", "classifier", "bias".
      layers (list[str] | None): the preselected layer names (`LayerRanking.top_k`), for "tradi",
        "static_topk_random" and optionally the Det RGN strategies (or give them to the strategy).
      strategy (Strategy | str): a `Strategy` object (`TraDy(layers)`, `DetRGN(data)`, `SU(scheme)`, ...) or one of
        `STRATEGIES` as a shortcut whose arguments come from `layers`, `data` and `scheme`.
      seed (int | None): seeds the channel sampler (a reproducible stream of selections); None follows Keras'
        global seed (`keras.utils.set_random_seed`).
      data (tf.data.Dataset | tuple | None): (x, y) batches for the Det RGN shortcuts.
      scheme (dict | str | None): for "su": a {layer: fraction} dict or a name in `PAPER_SCHEMES`.
      update_bias (bool): also train the biases of the wrapped layers.
      train_batchnorm (bool): let BatchNormalization layers train (default: frozen, inference mode).
      classifier (str | None): the head's name, or "auto" (the layer producing the output). It always trains.
      compact_activations (bool): replace ReLU/ReLU6 layers (and wrapped layers' relu activations) by
        `CompactReLU`, whose backward pass keeps a 1-bit mask instead of a float map.
      simulate (bool): the paper's simulation (full backward pass, masked kernel gradients): identical
        updates, none of the memory savings. Implies compact_activations=False.
      count_pruned (bool): for a pruned model (layers in `tx.pruning.MaskedLayer`): True charges a
        channel for all its weights, False only for its unpruned ones. Masks stay enforced either
        way; `efficiency` reports both counts.
      recompute (bool | str): run frozen segments again in the backward pass instead of keeping their float
        maps (`recompute` module): one more forward pass per step, for most of the memory saving
        on swish, GELU, hard-swish, squeeze-excite, LayerNorm and max-pooling networks. "auto"
        turns it on for models that have such layers; ReLU networks need none of it.

    Returns:
      keras.Model: the wrapped clone. Its selectable layers sit in `ChannelSparseUpdate`
        wrappers holding the current selection; compile and fit it as usual, with a
        `ChannelResampler` among the callbacks to draw new channels every epoch.

    Raises:
      ValueError: for a model that is not built or already wrapped, a missing or unusable budget
        (below the cheapest channel: the message names the minimum), a strategy that lacks its
        arguments, or kernel regularizers and constraints on the layers to wrap.
      KeyError: for a layer name that is not a selectable layer, naming those that are.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
      ...     keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=500, strategy=sp.TraDy(["conv1", "conv2"]), seed=0)
      >>> sparse.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> x = np.zeros((4, 8, 8, 3), "float32")
      >>> history = sparse.fit(x, np.zeros(4), callbacks=[sp.ChannelResampler()], verbose=0)
      >>> sp.efficiency(sparse).units <= 500
      True
    """
    walk.check_cloneable(model)
    if recompute not in (True, False, "auto"):
        raise ValueError(f"recompute must be True, False or 'auto', got {recompute!r}.")
    if not model.built:
        raise ValueError("The model is not built; call it on data or give it an Input first.")
    if sampler_lib.sparse_layers(model):
        raise ValueError(
            "The model is already wrapped for sparse updates; wrap it only once "
            "(tx.sparse_update.strip(model) gives back a plain model)."
        )
    table = costs_lib.cost_table(model, classifier=classifier)
    strat = strategies.get(strategy, layers=_layer_names(layers), data=data, scheme=scheme)
    candidates = strat.candidate_layers(table)
    for name in candidates:
        table[name]  # noqa: B018 - raises a clear KeyError naming the selectable layers
    _check_kernel_extras(model, candidates)
    # Everything about the sampler is checked before the model is cloned.
    if recompute == "auto":
        recompute = recompute_lib.wanted(model, candidates) and not simulate
    sampler = sampler_lib.Sampler(
        strat,
        table,
        candidates,
        budget=budget,
        seed=seed,
        count_pruned=count_pruned,
        recompute=recompute,
    )
    wanted = set(candidates)
    compact = bool(compact_activations) and not simulate
    inside = _sublayer_paths(model, wanted)
    wrapper_config = {
        "update_bias": update_bias,
        "simulate": simulate,
        "compact_activation": compact,
        "channel_axis": strat.channel_axis,
    }

    def clone_layer(layer):
        if compact and compact_relu.replaceable_relu(layer) is not False:
            return compact_relu.CompactReLU(compact_relu.replaceable_relu(layer), name=layer.name)
        inner = walk.inner(layer)
        if id(layer) in inside:  # a custom layer: its wanted sublayers get wrappers in place
            fresh = _built_copy(inner)
            paths = inside[id(layer)]
            return SparseSublayers(fresh, paths, [dict(wrapper_config) for _ in paths])
        if inner.name in wanted:
            fresh = walk.fresh_copy(inner)
            return ChannelSparseUpdate(
                fresh,
                update_bias=update_bias,
                simulate=simulate,
                compact_activation=compact,
                kernel_mask=isinstance(layer, MaskedLayer),
                channel_axis=strat.channel_axis,
            )
        return walk.fresh_copy(layer)

    def changes(layer):
        relu = compact and compact_relu.replaceable_relu(layer) is not False
        return relu or walk.inner(layer).name in wanted or id(layer) in inside

    clone = walk.clone(model, clone_layer, changes)
    for original, cloned in walk.layer_pairs(model, clone):
        if isinstance(cloned, SparseSublayers):
            cloned.set_plain_weights(walk.inner(original).get_weights())
        elif isinstance(cloned, ChannelSparseUpdate):
            source = walk.inner(original)
            cloned.layer.set_weights(source.get_weights())
            if isinstance(original, MaskedLayer):
                cloned.kernel_mask.assign(original.masks[0])
        elif cloned.weights or original.weights:
            cloned.set_weights(original.get_weights())
    sampler.costs = costs_lib.cost_table(clone, classifier=table.classifier)
    sampler_lib.install(clone, sampler)
    _set_trainability(clone, sampler, update_bias, train_batchnorm)
    _set_input_gradients(clone)
    if sampler.recompute:
        recompute_lib.install(clone)
    if strat.mode == "channels":
        sampler_lib.resample(clone, epoch=-1)
    if sampler.budget is not None and sampler.budget > table.full_units:
        _LOG.info(
            "The budget (%d units) exceeds full fine-tuning (%d units).",
            sampler.budget,
            table.full_units,
        )
    return clone


def attach(
    model,
    budget=None,
    strategy=None,
    seed=None,
    data=None,
    scheme=None,
    classifier="auto",
    count_pruned=None,
    train_batchnorm=None,
):
    """Gives a model loaded from a `.keras` file its sampler (and trainability) back.

    With no arguments the sampler `wrap` saved in the model comes back: strategy, budget, seed.
    Arguments given replace the saved ones (`data=` for the Det RGN strategies, whose data is not
    saved). For "full", "classifier" and "bias" (no wrappers) pass `strategy=`; for "bias" (and an
    "su" scheme's bias layers) the kernels are frozen again: Keras files keep which layers train,
    not which of a layer's variables do. `train_batchnorm=None` keeps what the file recorded.

    Args:
      model (keras.Model): a wrapped model loaded with `keras.models.load_model`.
      budget: as in `wrap`; None keeps the saved budget.
      strategy: as in `wrap`; None keeps the saved strategy.
      seed: as in `wrap`; None keeps the saved seed.
      data: for the Det RGN strategies, whose data is not saved.
      scheme: for "su", as in `wrap`.
      classifier: as in `wrap`.
      count_pruned: as in `wrap`; None keeps the saved choice.
      train_batchnorm: as in `wrap`; None keeps what the file recorded.

    Returns:
      keras.Model: `model` itself, ready to compile and fit with a `ChannelResampler`.

    Raises:
      ValueError: for a model whose stored selection does not fit its layers, or an optimizer
        that would move frozen channels.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sp.wrap(model, budget=200, layers=["conv"], seed=3).save("sparse.keras")
      >>> loaded = sp.attach(keras.models.load_model("sparse.keras"))
      >>> sp.sampler_of(loaded).seed, sp.sampler_of(loaded).budget
      (3, 200)
    """
    walk.check_cloneable(model)
    wrappers = sampler_lib.sparse_layers(model)
    for w in wrappers:
        w.check_selection()
    # A model loaded compiled brings its optimizer: refused here if it would move frozen channels.
    optimizer_state.check_optimizer(model, getattr(model, "optimizer", None))
    saved = next((w.sampler_config for w in wrappers if w.sampler_config), None) or {}
    table = costs_lib.cost_table(model, classifier=classifier)
    names = [w.selection_name for w in wrappers]
    if strategy is None:
        if "strategy" not in saved:
            raise ValueError(
                "The model records no sparse-update strategy (it has no wrappers, or "
                "was wrapped by an older version); pass strategy=."
            )
        strat = strategies.deserialize(saved["strategy"])
        if data is not None and isinstance(strat, (strategies.DetRGN, strategies.Velocity)):
            strat.data = data
    else:
        wants_layers = strategy in ("tradi", "static_topk_random")
        strat = strategies.get(
            strategy, layers=names if wants_layers else None, data=data, scheme=scheme
        )
    if strat.mode == "channels" and not wrappers:
        raise ValueError("The model has no sparse-update wrappers; use tx.sparse_update.wrap.")
    mismatched = [
        w.selection_name
        for w in wrappers
        if w.selects_outputs != (strat.channel_axis == "output") and w.kind != "depthwise"
    ]
    if strat.mode == "channels" and mismatched:
        raise ValueError(
            f"Strategy {strat.name!r} selects {strat.channel_axis} channels, but the model was "
            f"wrapped for the other kind ({mismatched[:3]}...): its selections would name the "
            "wrong kernel slices. Wrap the plain model again with this strategy."
        )
    sampler = sampler_lib.Sampler(
        strat,
        table,
        names,
        budget=budget if budget is not None else saved.get("budget"),
        seed=seed if seed is not None else saved.get("seed", 0),
        count_pruned=count_pruned if count_pruned is not None else saved.get("count_pruned", True),
        recompute=saved.get("recompute", False),
    )
    # Arguments that change what a draw selects (strategy, budget, seed, count_pruned) apply to the
    # current draw too: it is drawn again under them, as `wrap` with these arguments would have
    # drawn it, so a static selection never outspends a budget given here. Drawn before anything
    # is installed: a refusal (Det RGN without data) leaves the model as it was.
    chosen = None
    changed = {k for k, v in sampler.get_config().items() if k != "recompute" and saved.get(k) != v}
    if strat.mode == "channels" and changed:
        chosen = sampler.draw(model, sampler_lib.draws(model) - 1)
    sampler_lib.install(model, sampler)
    if chosen is not None:
        sampler_lib.set_selection(model, chosen)
        _LOG.info("attach: %s changed; the current selection was drawn again.", sorted(changed))
    update_bias = any(w.update_bias for w in wrappers)
    _set_trainability(model, sampler, update_bias, train_batchnorm)
    if sampler.recompute and recompute_lib.installed(model) is None:
        recompute_lib.install(model)
    return model


def strip(model, into=None):
    """An ordinary Keras model: every wrapper replaced by its layer, all layers trainable again.

    Args:
      model (keras.Model): a model from `wrap` (or `attach`); not modified.
      into (keras.Model | None): a model of the architecture that was wrapped (the model you
        passed to `wrap`, or a fresh one built the same way) to receive the trained weights
        instead of a clone. For models whose layers cannot be re-created from their configs
        (KerasHub 0.32's ViT and Swin backbones): the original model keeps its own classes and
        saves as its library made it.

    Returns:
      keras.Model: a clone with the trained weights and no wrappers (it saves and loads without
        this package), or `into` holding them. A pruned model keeps its masks:
        `tx.pruning.strip` removes those next.

    Raises:
      ValueError: for a model with no sparse-update wrappers; an `into` whose layers do not
        match (nothing is assigned then); a layer that cannot be re-created from its config
        (pass `into=`).

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sparse = tx.sparse_update.wrap(model, budget=200, layers=["conv"])
      >>> plain = tx.sparse_update.strip(sparse)
      >>> [type(layer).__name__ for layer in plain.layers]
      ['Conv2D', 'GlobalAveragePooling2D', 'Dense']
    """
    walk.check_cloneable(model)
    if not sampler_lib.sparse_layers(model) and sampler_lib.sampler_of(model, False) is None:
        raise ValueError("The model has no sparse-update wrappers; there is nothing to strip.")
    if into is not None:
        return _copy_into(model, into)

    def clone_layer(layer):
        if isinstance(layer, compact_relu.CompactReLU):
            return layer.to_keras()
        if isinstance(layer, SparseSublayers):
            return _built_copy(layer.layer, node_of=layer)
        if isinstance(layer, ChannelSparseUpdate):
            fresh = walk.fresh_copy(layer.layer)
            # A pruned layer goes back into its pruning mask (tx.pruning.strip bakes it in).
            return MaskedLayer(fresh) if layer.kernel_mask is not None else fresh
        return walk.fresh_copy(layer)

    try:
        clone = walk.clone(
            model,
            clone_layer,
            lambda layer: isinstance(
                layer, (compact_relu.CompactReLU, ChannelSparseUpdate, SparseSublayers)
            ),
        )
    except TypeError as e:
        raise ValueError(
            f"A layer of this model cannot be re-created from its config ({e}), so strip cannot "
            "clone it. Pass the model you wrapped (or one built the same way) to receive the "
            "trained weights: tx.sparse_update.strip(model, into=original)."
        ) from e
    for original, cloned in walk.layer_pairs(model, clone):
        if isinstance(original, SparseSublayers):
            cloned.set_weights([v.numpy() for v in original.plain_weights()])
        elif isinstance(original, ChannelSparseUpdate):
            target = cloned.layer if isinstance(cloned, MaskedLayer) else cloned
            target.set_weights(original.layer.get_weights())
            if isinstance(cloned, MaskedLayer):
                cloned.masks[0].assign(original.kernel_mask)
        elif original.weights:
            cloned.set_weights(original.get_weights())
    for layer in walk.flatten_layers(clone):
        layer.trainable = True
    return clone


def _plain_values(layer):
    """The weights of a wrapped model's layer as the plain layer holds them."""
    if isinstance(layer, SparseSublayers):
        return [v.numpy() for v in layer.plain_weights()]
    if isinstance(layer, ChannelSparseUpdate):
        return layer.layer.get_weights()
    return layer.get_weights()


def _copy_into(model, into):
    """`strip(model, into=...)`: every value checked against `into` before any is assigned."""
    pairs = list(walk.layer_pairs(model, into))
    if len(walk.flatten_layers(model)) != len(walk.flatten_layers(into)):
        raise ValueError(
            "into= has a different number of layers than the wrapped model; pass the model "
            "that was wrapped, or one built the same way."
        )
    plan = []
    for a, b in pairs:
        values = _plain_values(a)
        target = b.layer if isinstance(b, MaskedLayer) and isinstance(a, ChannelSparseUpdate) else b
        shapes = [tuple(v.shape) for v in target.weights]
        if [tuple(np.shape(v)) for v in values] != shapes:
            raise ValueError(
                f"into= does not match the wrapped model at layer {b.name!r} "
                f"(weights {shapes} vs {[tuple(np.shape(v)) for v in values]}); nothing was "
                "assigned."
            )
        plan.append((target, values))
    for target, values in plan:
        if values:
            target.set_weights(values)
    return into
