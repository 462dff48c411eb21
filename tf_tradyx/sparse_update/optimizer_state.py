"""Optimizer state at a resample: what keeps an unselected channel bit-identical.

The slots (momentum, Adam moments, ...) of the channels that are not selected for the coming epoch
are set back to their initial value (zero, or Adagrad's `initial_accumulator_value`), and selected
channels keep theirs. With a zero gradient and zero state, SGD, SGD
with momentum, Adam, RMSprop and friends leave an unselected channel bit-identical through the
epoch. Decoupled weight decay and EMA would still move it, so `check_optimizer` refuses an optimizer
that applies them to the wrapped kernels, and refuses by name the optimizers whose update of one
channel depends on the others or on state a zero gradient does not keep still:
Muon (orthogonalizes the whole update matrix), Adafactor (factored second moments: a row of zero
gradients divides by zero) and Ftrl (recomputes every weight from its own state).
"""

import keras
import numpy as np

from tf_tradyx import _keras_compat
from tf_tradyx._graph import walk

# Optimizers that cannot leave an unselected channel as it is, and why.
_REFUSED = {
    "Muon": "orthogonalizes each kernel's whole update, so every channel moves",
    "Adafactor": "factors its second moments over rows and columns: unselected channels' zero "
    "gradients enter the statistics of the selected ones (and turn them to NaN)",
    "Ftrl": "recomputes every weight from its own accumulated state, so unselected channels "
    "(and pretrained weights) are overwritten",
}
# Slots whose initial value is not zero: {optimizer class: {slot attribute: optimizer attribute}}.
_INITIAL_VALUES = {"Adagrad": {"_accumulators": "initial_accumulator_value"}}


def _base(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer wraps another


def slot_variables(optimizer, variable):
    """The optimizer's per-variable state (momentum, Adam moments...) for `variable`, as
    (slot variable, initial value) pairs."""
    optimizer = _base(optimizer)
    index = _keras_compat.optimizer_variable_index(optimizer, variable)
    if index is None:
        return []
    initial = {}
    for cls in type(optimizer).__mro__:
        initial.update(_INITIAL_VALUES.get(cls.__name__, {}))
    return [
        (slots[index], float(getattr(optimizer, initial[key], 0.0)) if key in initial else 0.0)
        for key, slots in _keras_compat.optimizer_slot_lists(optimizer)
        if slots[index] is not None and slots[index] is not variable
    ]


def reset_optimizer_state(model, optimizer):
    """Resets the optimizer state of every wrapped kernel's unselected channels to its initial value.

    Channels are input channels, or output neurons for an output-axis strategy; selected ones
    keep their state. `resample` and `set_selection` call it; with a zero gradient and zero
    state, an unselected channel then stays bit-identical through the epoch.

    Args:
      model (keras.Model): a model from `wrap`.
      optimizer (keras.optimizers.Optimizer): its slots (momentum, Adam moments, ...) of the
        wrapped kernels are reset; variables it has not built state for are skipped.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv2"], seed=0)
      >>> optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
      >>> optimizer.build(sparse.trainable_variables)
      >>> kernel = sp.sparse_kernels(sparse)[0]
      >>> momentum = next(m for m in optimizer.momentums if m.shape == kernel.shape)
      >>> _ = momentum.assign(np.ones(kernel.shape))
      >>> sp.set_selection(sparse, {"conv2": [1]}, optimizer=None)
      >>> sp.reset_optimizer_state(sparse, optimizer)
      >>> [int(np.asarray(momentum)[:, :, c].sum()) for c in range(3)]  # only channel 1 kept
      [0, 144, 0]
    """
    for w in _wrappers(model):
        slots = slot_variables(optimizer, w.kernel)
        if not slots:
            continue
        keep = np.zeros(w.in_channels, np.float32)
        keep[w.get_channels()] = 1.0
        keep = w.kernel_channel_mask(keep)
        for slot, initial in slots:
            value = keras.ops.convert_to_tensor(slot) * keep + initial * (1.0 - keep)
            slot.assign(keras.ops.cast(value, slot.dtype))


def _wrappers(model):
    """The sparse-update wrappers of `model` (known by their marker: the wrapper module imports
    this one, to check its optimizer when it trains)."""
    return [layer for layer in walk.flatten_layers(model) if walk.is_sparse_update_wrapper(layer)]


def check_optimizer(model, optimizer):
    """Raises ValueError for an optimizer that would move unselected channels (weight decay, EMA).

    The wrappers call it before the first train step; call it yourself to check early.

    Args:
      model (keras.Model): a model from `wrap`.
      optimizer (keras.optimizers.Optimizer | None): the optimizer to check (None passes).

    Raises:
      ValueError: for Muon, Adafactor or Ftrl, an optimizer with `use_ema=True`, or one whose
        weight decay applies to a wrapped kernel (exclude them with `sparse_kernels`).

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv2"], seed=0)
      >>> sp.check_optimizer(sparse, keras.optimizers.SGD(0.01))  # passes
      >>> sp.check_optimizer(sparse, keras.optimizers.Adafactor())
      Traceback (most recent call last):
      ...
      ValueError: Adafactor cannot be used for sparse updates: ...
    """
    check_kernels(optimizer, _wrappers(model))


def check_kernels(optimizer, wrappers):
    """`check_optimizer` for these wrappers. Each wrapper calls it on the optimizer of the model
    that trains it, every strategy and path alike (fit, train_on_batch, XLA or not, with or without
    `ChannelResampler`): the refusal comes before the first step, the model unchanged."""
    optimizer = _base(optimizer)
    if optimizer is None or not wrappers:
        return
    for cls in type(optimizer).__mro__:
        if cls.__name__ in _REFUSED:
            raise ValueError(
                f"{type(optimizer).__name__} cannot be used for sparse updates: it "
                f"{_REFUSED[cls.__name__]}. Use SGD (the paper's choice), SGD with momentum, Adam, "
                "RMSprop, Adagrad or another per-element optimizer."
            )
    if getattr(optimizer, "use_ema", False):
        raise ValueError(
            "The optimizer uses EMA (use_ema=True), which moves every weight toward its "
            "average, unselected channels included. Turn it off for sparse updates."
        )
    if getattr(optimizer, "weight_decay", None):
        decayed = [
            w.selection_name
            for w in wrappers
            if _keras_compat.optimizer_decays(optimizer, w.kernel)
        ]
        if decayed:
            raise ValueError(
                f"The optimizer's weight decay would shrink unselected channels of {decayed[:3]}... "
                "(the paper uses none, it costs memory for state). Use weight_decay=None, or exclude "
                "them: optimizer.exclude_from_weight_decay(var_list=tx.sparse_update.sparse_kernels("
                "model)) before compile."
            )
