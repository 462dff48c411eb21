"""Optimizer state at a resample: what keeps an unselected channel bit-identical.

The slots (momentum, Adam moments, ...) of the channels that are not selected for the coming epoch
are set to zero, and selected channels keep theirs. With a zero gradient and zero state, SGD, SGD
with momentum, Adam, RMSprop and friends leave an unselected channel bit-identical through the
epoch. Decoupled weight decay and EMA would still move it, so `check_optimizer` refuses an optimizer
that applies them to the wrapped kernels.
"""

import keras
import numpy as np

from tf_tradyx import _keras_compat, _model_walk
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate


def _base(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer wraps another


def slot_variables(optimizer, variable):
    """The optimizer's per-variable state (momentum, Adam moments...) for `variable`."""
    optimizer = _base(optimizer)
    index = _keras_compat.optimizer_variable_index(optimizer, variable)
    if index is None:
        return []
    return [slots[index] for _, slots in _keras_compat.optimizer_slot_lists(optimizer)
            if slots[index] is not None and slots[index] is not variable]


def reset_optimizer_state(model, optimizer):
    """Zeroes the optimizer state of every wrapped kernel's unselected input channels."""
    for w in _model_walk.layers_of_type(model, ChannelSparseUpdate):
        slots = slot_variables(optimizer, w.kernel)
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
    optimizer = _base(optimizer)
    if optimizer is None:
        return
    if getattr(optimizer, "use_ema", False):
        raise ValueError("The optimizer uses EMA (use_ema=True), which moves every weight toward its "
                         "average, unselected channels included. Turn it off for sparse updates.")
    if getattr(optimizer, "weight_decay", None):
        decayed = [w.layer.name for w in _model_walk.layers_of_type(model, ChannelSparseUpdate)
                   if _keras_compat.optimizer_decays(optimizer, w.kernel)]
        if decayed:
            raise ValueError(
                f"The optimizer's weight decay would shrink unselected channels of {decayed[:3]}... "
                "(the paper uses none, it costs memory for state). Use weight_decay=None, or exclude "
                "them: optimizer.exclude_from_weight_decay(var_list=tx.sparse_update.sparse_kernels("
                "model)) before compile.")
