"""`wrap`, `resample`, `selection`, `efficiency`, `strip`: the user-facing sparse-update workflow.

`wrap` clones the model, puts a `ChannelSparseUpdate` around each candidate layer, freezes everything
else except the classifier (BatchNormalization runs in inference mode), and draws a first selection.
The sampling state (strategy, budget, RNG) stays on the returned model for `ChannelResampler`.

Optimizer state at a resample: the slots (momentum, Adam moments, ...) of the channels that are not
selected for the coming epoch are set to zero, and selected channels keep theirs. With a zero
gradient and zero state, SGD, SGD with momentum, Adam, RMSprop and friends leave an unselected
channel bit-identical through the epoch. Decoupled weight decay would still shrink it, so
`ChannelResampler` refuses an optimizer that decays the wrapped kernels.
"""

import dataclasses

import keras
import numpy as np

from tf_tradyx import _model_utils
from tf_tradyx.pruning.masking import MaskedLayer
from tf_tradyx.sparse_update import compact as compact_lib
from tf_tradyx.sparse_update import costs as costs_lib
from tf_tradyx.sparse_update import sampling
from tf_tradyx.sparse_update import strategies
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate

_STATE = "_tradyx_sparse_update"


@dataclasses.dataclass
class SparseUpdateState:
    """What `wrap` leaves on the wrapped model for resampling and reporting."""
    strategy: object
    budget: object
    layers: list
    costs: object
    seed: int
    epoch: int = -1
    resamples: int = 0
    count_pruned: bool = True


def sparse_layers(model):
    """The `ChannelSparseUpdate` wrappers of a model, in graph order."""
    return [l for l in _model_utils.flatten_layers(model) if isinstance(l, ChannelSparseUpdate)]


def state_of(model):
    state = getattr(model, _STATE, None)
    if state is None:
        raise ValueError("This model carries no sparse-update state: make it with "
                         "tx.sparse_update.wrap(model, budget=..., layers=..., strategy=...). "
                         "(A model loaded from a .keras file keeps its selection but not its "
                         "sampler; use tx.sparse_update.attach(model, ...) to resample it.)")
    return state


def _layer_names(layers):
    from tf_tradyx.sparse_update.ranking import LayerRanking
    if layers is None:
        return None
    if isinstance(layers, LayerRanking):
        raise TypeError("layers= takes layer names; pass ranking.top_k(coverage=0.97).")
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers= is empty; give at least one layer name.")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers= repeats names: {layers}.")
    return layers


def _set_trainability(model, state, update_bias, train_batchnorm, bias_layers):
    mode = state.strategy.mode
    classifier = state.costs.classifier
    for layer in _model_utils.flatten_layers(model):
        if isinstance(layer, ChannelSparseUpdate):
            layer.trainable = True
            if layer.layer.use_bias:
                layer.layer.bias.trainable = update_bias or layer.layer.name in bias_layers
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = bool(train_batchnorm)
            continue
        if costs_lib._inner(layer).name == classifier:
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


def _parents(layer):
    out = []
    for node in layer._inbound_nodes[:1]:
        for parent in node.parent_nodes:
            out.append(parent.operation)
    return out


def _seed(seed):
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2 ** 63))
    return int(seed)


def _set_input_gradients(model):
    """Wrappers with nothing trainable upstream skip their input gradient (no backward below them)."""
    if any(isinstance(l, keras.Model) for l in model.layers):
        return  # nested models: keep every input gradient (conservative)
    upstream = {}
    for layer in model.layers:
        upstream[id(layer)] = any(upstream.get(id(p), True) or bool(p.trainable_weights)
                                  for p in _parents(layer))
        if isinstance(layer, ChannelSparseUpdate):
            layer.input_gradient = upstream[id(layer)]


def wrap(model, budget=None, layers=None, strategy="tradi", seed=0, data=None, scheme=None,
         update_bias=False, train_batchnorm=False, classifier="auto", rgn_batches=4,
         compact_activations=True, simulate=False, count_pruned=True):
    """A clone of `model` ready for memory-budgeted fine-tuning.

    Args:
      model: a built Functional or Sequential model with a fixed input size (not modified).
      budget: memory units (an int, or a string such as "109KiB", see `parse_budget`); required by
        the channel-sampling strategies, optional for "su", "full", "classifier", "bias".
      layers: the preselected layer names (`LayerRanking.top_k`), for "tradi", "static_topk_random"
        and optionally the Det RGN strategies.
      strategy: one of `strategies.NAMES` or a `Strategy` instance.
      seed: seeds the channel sampler (a reproducible stream of selections).
      data: (x, y) batches for the Det RGN strategies.
      scheme: for "su": a {layer: fraction} dict, a `SparseUpdateScheme`, or a name in
        `PAPER_SCHEMES`.
      update_bias: also train the biases of the wrapped layers.
      train_batchnorm: let BatchNormalization layers train (default: frozen, inference mode).
      classifier: the head's name, or "auto" (the layer producing the output). It always trains.
      compact_activations: replace ReLU/ReLU6 layers (and wrapped layers' relu activations) by
        `CompactReLU`, whose backward pass keeps a 1-bit mask instead of a float map.
      simulate: the paper's simulation (full backward pass, masked kernel gradients): identical
        updates, none of the memory savings. Implies compact_activations=False.
      count_pruned: for a pruned model (layers in `tx.pruning.MaskedLayer`): True charges a
        channel for all its weights, False only for its unpruned ones. Masks stay enforced either
        way; `efficiency` reports both counts.
    """
    _model_utils.check_cloneable(model)
    if not model.built:
        raise ValueError("The model is not built; call it on data or give it an Input first.")
    if sparse_layers(model):
        raise ValueError("The model is already wrapped for sparse updates; wrap it only once "
                         "(tx.sparse_update.strip(model) gives back a plain model).")
    table = costs_lib.cost_table(model, classifier=classifier)
    strat = strategies.get(strategy, costs=table, data=data, scheme=scheme, rgn_batches=rgn_batches)
    candidates = strat.candidate_layers(table, _layer_names(layers))
    for name in candidates:
        table[name]  # noqa: B018 - raises a clear KeyError naming the selectable layers
    if budget is not None:
        budget = costs_lib.parse_budget(budget)
    if strat.budgeted and strat.mode == "channels":
        if budget is None:
            raise ValueError(f"Strategy {strat.name!r} needs budget= (memory units; "
                             f"full fine-tuning of this model costs {table.full_units:,}).")
        sampling.check_budget(table, candidates, budget, count_pruned)
    elif budget is not None and budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}.")
    bias_layers = set(strat.bias_layer_names(table)) if hasattr(strat, "bias_layer_names") else set()
    if strat.mode == "bias":
        bias_layers = set(table.names)
    if isinstance(seed, bool) or not (seed is None or isinstance(seed, (int, np.integer))) or (
            seed is not None and seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}.")
    wanted = set(candidates)

    compact = bool(compact_activations) and not simulate

    def clone_layer(layer):
        if compact and compact_lib.replaceable_relu(layer) is not False:
            return compact_lib.CompactReLU(compact_lib.replaceable_relu(layer), name=layer.name)
        inner = costs_lib._inner(layer)
        if inner.name in wanted:
            fresh = inner.__class__.from_config(inner.get_config())
            return ChannelSparseUpdate(fresh, update_bias=update_bias, simulate=simulate,
                                       compact_activation=compact,
                                       kernel_mask=isinstance(layer, MaskedLayer))
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    for original, cloned in _model_utils.layer_pairs(model, clone):
        if isinstance(cloned, ChannelSparseUpdate):
            source = costs_lib._inner(original)
            cloned.layer.set_weights(source.get_weights())
            if isinstance(original, MaskedLayer):
                cloned.kernel_mask.assign(original.masks[0])
        elif cloned.weights or original.weights:
            cloned.set_weights(original.get_weights())
    state = SparseUpdateState(strategy=strat, budget=budget, layers=list(candidates),
                              costs=costs_lib.cost_table(clone, classifier=table.classifier),
                              seed=_seed(seed), count_pruned=bool(count_pruned))
    object.__setattr__(clone, _STATE, state)
    _set_trainability(clone, state, update_bias, train_batchnorm, bias_layers)
    _set_input_gradients(clone)
    if strat.mode == "channels":
        resample(clone, epoch=-1)
    if budget is not None and budget > table.full_units:
        import logging
        logging.getLogger("tf_tradyx").info(
            "The budget (%d units) exceeds full fine-tuning (%d units).", budget, table.full_units)
    return clone


def attach(model, budget=None, strategy="tradi", seed=0, data=None, scheme=None, classifier="auto",
           count_pruned=True, train_batchnorm=False):
    """Gives a model loaded from disk its sampler (and trainability) back.

    For channel strategies the wrapped layers are the candidates; for "bias" (and an "su" scheme's
    bias layers) it freezes the kernels again: Keras files keep which layers train, not which of a
    layer's variables do.
    """
    _model_utils.check_cloneable(model)
    wrappers = sparse_layers(model)
    for w in wrappers:
        w.check_selection()
    table = costs_lib.cost_table(model, classifier=classifier)
    strat = strategies.get(strategy, costs=table, data=data, scheme=scheme)
    if strat.mode == "channels" and not wrappers:
        raise ValueError("The model has no sparse-update wrappers; use tx.sparse_update.wrap.")
    budget = costs_lib.parse_budget(budget) if budget is not None else None
    names = [w.layer.name for w in wrappers]
    if strat.budgeted and strat.mode == "channels":
        if budget is None:
            raise ValueError(f"Strategy {strat.name!r} needs budget=.")
        sampling.check_budget(table, names, budget, count_pruned)
    state = SparseUpdateState(strategy=strat, budget=budget, layers=names, costs=table,
                              seed=_seed(seed), count_pruned=bool(count_pruned))
    object.__setattr__(model, _STATE, state)
    bias_layers = set(strat.bias_layer_names(table)) if hasattr(strat, "bias_layer_names") else set()
    if strat.mode == "bias":
        bias_layers = set(table.names)
    update_bias = any(w.update_bias for w in wrappers)
    _set_trainability(model, state, update_bias, train_batchnorm, bias_layers)
    return model


def _validate(selection, state):
    out = {}
    for name, channels in selection.items():
        if name not in state.layers:
            raise ValueError(f"The strategy selected channels of {name!r}, which is not one of the "
                             f"wrapped layers {state.layers}.")
        idx = np.asarray(channels, np.int64).reshape(-1)
        row = state.costs[name]
        if len(np.unique(idx)) != len(idx) or (len(idx) and (idx.min() < 0 or idx.max() >= row.in_channels)):
            raise ValueError(f"Invalid channels for {name!r}: {idx.tolist()} (in_channels "
                             f"{row.in_channels}).")
        if len(idx):
            out[name] = np.sort(idx)
    units = state.costs.units(out, state.count_pruned)
    if state.strategy.budgeted and state.budget is not None and units > state.budget:
        raise ValueError(f"Strategy {state.strategy.name!r} selected {units} units, over the budget "
                         f"of {state.budget}.")
    return out


def set_selection(model, selection, optimizer="auto"):
    """Selects exactly these channels {layer name: indices}; other wrapped layers get none."""
    by_name = {w.layer.name: w for w in sparse_layers(model)}
    unknown = [n for n in selection if n not in by_name]
    if unknown:
        raise ValueError(f"{unknown} are not wrapped layers; wrapped: {sorted(by_name)}.")
    checked = {name: w.validated(selection.get(name, ())) for name, w in by_name.items()}
    for name, w in by_name.items():  # all validated first: a bad entry changes nothing
        w._assign(checked[name])
    opt = getattr(model, "optimizer", None) if optimizer == "auto" else optimizer
    if opt is not None:
        reset_optimizer_state(model, opt)


def resample(model, epoch=None, optimizer="auto"):
    """Draws a new selection with the model's strategy; returns it ({layer: indices})."""
    state = state_of(model)
    if state.strategy.mode != "channels":
        return selection(model)
    epoch = state.epoch + 1 if epoch is None else epoch
    context = strategies.SelectionContext(model=model, costs=state.costs, layers=state.layers,
                                          budget=state.budget, rng=None,
                                          epoch=epoch)
    # Each epoch's draw depends only on (seed, epoch): a run resumed at epoch e samples exactly
    # what the uninterrupted run sampled there.
    context.rng = np.random.default_rng([state.seed, epoch + 1])
    context.count_pruned = state.count_pruned
    chosen = _validate(state.strategy.select(context), state)
    set_selection(model, chosen, optimizer=optimizer)
    state.epoch = context.epoch
    state.resamples += 1
    return chosen


def selection(model):
    """{layer name: sorted input-channel indices} of the channels currently updated."""
    state = getattr(model, _STATE, None)
    if state is not None and state.strategy.mode == "full":
        return {r.name: np.arange(r.in_channels) for r in state.costs}
    return {w.layer.name: w.get_channels() for w in sparse_layers(model) if int(np.asarray(w.num_channels)) > 0}


def _slot_variables(optimizer, variable):
    """The optimizer's per-variable state (momentum, Adam moments...) for `variable`.

    A slot list is any attribute holding one variable (or None) per trainable variable, each of its
    reference's shape: SGD's momentums, Adam's moments and velocity hats, RMSprop's velocities...
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    try:
        index = optimizer._get_variable_index(variable)
    except (AttributeError, KeyError, ValueError):
        return []
    refs = list(optimizer._trainable_variables)
    out = []
    for key, value in vars(optimizer).items():
        if key in ("_trainable_variables", "_variables") or not isinstance(value, (list, tuple)):
            continue
        slots = list(value)
        if len(slots) != len(refs) or not all(
                s is None or (isinstance(s, keras.Variable) and tuple(s.shape) == tuple(r.shape))
                for s, r in zip(slots, refs)):
            continue
        if slots[index] is not None and slots[index] is not variable:
            out.append(slots[index])
    return out


def reset_optimizer_state(model, optimizer):
    """Zeroes the optimizer state of every wrapped kernel's unselected input channels."""
    for w in sparse_layers(model):
        slots = _slot_variables(optimizer, w.kernel)
        if not slots:
            continue
        keep = np.zeros(w.in_channels, np.float32)
        keep[w.get_channels()] = 1.0
        shape = [1] * len(w.kernel.shape)
        shape[-2] = w.in_channels
        keep = keep.reshape(shape)
        for slot in slots:
            slot.assign(keras.ops.cast(keras.ops.convert_to_tensor(slot) * keep, slot.dtype))


def check_optimizer(model, optimizer):
    """Raises ValueError for an optimizer that would move unselected channels (weight decay, EMA)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if optimizer is None:
        return
    if getattr(optimizer, "use_ema", False):
        raise ValueError("The optimizer uses EMA (use_ema=True), which moves every weight toward its "
                         "average, unselected channels included. Turn it off for sparse updates.")
    if getattr(optimizer, "weight_decay", None):
        decayed = [w.layer.name for w in sparse_layers(model)
                   if optimizer._use_weight_decay(w.kernel)]
        if decayed:
            raise ValueError(
                f"The optimizer's weight decay would shrink unselected channels of {decayed[:3]}... "
                "(the paper uses none, it costs memory for state). Use weight_decay=None, or exclude "
                "them: optimizer.exclude_from_weight_decay(var_list=tx.sparse_update.sparse_kernels("
                "model)) before compile.")


def sparse_kernels(model):
    """The kernel variables of the wrapped layers."""
    return [w.kernel for w in sparse_layers(model)]


@dataclasses.dataclass
class Efficiency:
    """The savings of the current selection (METHODS.md 1.6), per sample."""
    strategy: str
    units: int
    budget: object
    full_units: int
    channels: int
    layers_updated: int
    activation_sparsity: float
    weight_derivative_sparsity: float
    weight_derivative_flops_saved: float
    units_all_weights: int = 0       # a selected channel charged for all its weights
    units_unpruned_weights: int = 0  # ... only for its unpruned ones (differs on pruned models)
    count_pruned: bool = True        # which of the two `units` (and the budget) uses

    @property
    def budget_used(self):
        return self.units / self.budget if self.budget else None

    def as_dict(self):
        d = dataclasses.asdict(self)
        d["budget_used"] = self.budget_used
        d["units_fraction_of_full"] = self.units / self.full_units
        return d

    def as_logs(self, prefix="sparse_update/"):
        """Numeric figures for Keras epoch logs (History, TensorBoard)."""
        d = self.as_dict()
        return {prefix + k: float(v) for k, v in d.items()
                if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def efficiency(model):
    """`Efficiency` of the model's current selection against full fine-tuning of all its layers."""
    state = getattr(model, _STATE, None)
    table = state.costs if state is not None else costs_lib.cost_table(model)
    chosen = selection(model)
    sel_w = sum(table[n].weight_units * len(c) for n, c in chosen.items())
    sel_a = sum(table[n].in_hw * len(c) for n, c in chosen.items())
    sel_f = sum(table[n].flops_per_channel * len(c) for n, c in chosen.items())
    count_pruned = state.count_pruned if state is not None else True
    return Efficiency(
        strategy=state.strategy.name if state is not None else "unknown",
        units=int(table.units(chosen, count_pruned)),
        budget=state.budget if state is not None else None,
        units_all_weights=int(table.units(chosen, True)),
        units_unpruned_weights=int(table.units(chosen, False)), count_pruned=count_pruned,
        full_units=int(table.full_units), channels=int(sum(len(c) for c in chosen.values())),
        layers_updated=len(chosen),
        activation_sparsity=1.0 - sel_a / table.total_activation_units,
        weight_derivative_sparsity=1.0 - sel_w / table.total_weight_units,
        weight_derivative_flops_saved=1.0 - sel_f / table.full_flops)


def strip(model):
    """An ordinary Keras model: every wrapper replaced by its layer, all layers trainable again."""
    _model_utils.check_cloneable(model)
    if not sparse_layers(model) and getattr(model, _STATE, None) is None:
        raise ValueError("The model has no sparse-update wrappers; there is nothing to strip.")

    def clone_layer(layer):
        if isinstance(layer, compact_lib.CompactReLU):
            return layer.to_keras()
        if isinstance(layer, ChannelSparseUpdate):
            fresh = layer.layer.__class__.from_config(layer.layer.get_config())
            # A pruned layer goes back into its pruning mask (tx.pruning.strip bakes it in).
            return MaskedLayer(fresh) if layer.kernel_mask is not None else fresh
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    for original, cloned in _model_utils.layer_pairs(model, clone):
        if isinstance(original, ChannelSparseUpdate):
            target = cloned.layer if isinstance(cloned, MaskedLayer) else cloned
            target.set_weights(original.layer.get_weights())
            if isinstance(cloned, MaskedLayer):
                cloned.masks[0].assign(original.kernel_mask)
        elif original.weights:
            cloned.set_weights(original.get_weights())
    for layer in _model_utils.flatten_layers(clone):
        layer.trainable = True
    return clone
