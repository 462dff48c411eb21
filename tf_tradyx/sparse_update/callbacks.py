"""Callbacks for `model.fit`: resample channels each epoch, log the efficiency figures."""

import keras

from tf_tradyx.sparse_update import api


class ChannelResampler(keras.callbacks.Callback):
    """Draws a new channel selection at the start of every epoch (dynamic strategies).

    Static strategies keep the selection `wrap` drew. Resampling assigns the wrappers' index
    variables, so the compiled train function is reused, never retraced. The optimizer state of
    channels left out of the new selection is zeroed (see `tf_tradyx.sparse_update.api`).

    Args:
      verbose: 1 prints the units and channel count of each new selection.
    """

    def __init__(self, verbose=0):
        super().__init__()
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        api.state_of(self.model)
        api.check_optimizer(self.model, getattr(self.model, "optimizer", None))

    def on_epoch_begin(self, epoch, logs=None):
        state = api.state_of(self.model)
        if not state.strategy.dynamic or state.strategy.mode != "channels":
            return
        api.resample(self.model, epoch=epoch, optimizer=getattr(self.model, "optimizer", None))
        if self.verbose:
            e = api.efficiency(self.model)
            print(f"\nEpoch {epoch + 1}: {e.channels} channels in {e.layers_updated} layers, "
                  f"{e.units:,} of {e.budget:,} units")


class EfficiencyLogger(keras.callbacks.Callback):
    """Adds the current selection's efficiency figures to the epoch logs (History, TensorBoard).

    Keys are prefixed "sparse_update/": units, activation_sparsity, weight_derivative_sparsity,
    weight_derivative_flops_saved, channels, layers_updated, budget_used...
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(api.efficiency(self.model).as_logs())
