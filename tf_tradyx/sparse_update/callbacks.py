"""Callbacks for `model.fit`: resample channels each epoch, log the efficiency figures."""

import keras
import tensorflow as tf

from tf_tradyx import _keras_compat, _summaries
from tf_tradyx._summaries import SummaryCallback
from tf_tradyx.sparse_update import efficiency_report as efficiency_lib
from tf_tradyx.sparse_update import optimizer_state
from tf_tradyx.sparse_update import sampler as sampler_lib


def _require_sparse_model(model, callback):
    """A plain model has no selection: its figures would read 0 units and 100 % sparsity."""
    if not sampler_lib.sparse_layers(model) and sampler_lib.sampler_of(model, False) is None:
        raise ValueError(
            f"{callback} reports on a model made by tx.sparse_update.wrap; this model "
            "has no sparse-update wrappers or sampler. Wrap it first, or attach() a "
            "loaded one."
        )


class ChannelResampler(keras.callbacks.Callback):
    """Draws a new channel selection at the start of every epoch (dynamic strategies).

    Static strategies keep the selection `wrap` drew. Resampling assigns the wrappers' index
    variables, so the compiled train function is reused, never retraced. Under XLA (Keras' default
    on GPUs), where shapes are static, it first draws this `fit`'s selections ahead (the same
    draws) and reserves room for the largest in every layer, so the step compiles once. The optimizer state of
    channels left out of the new selection goes back to its initial value (see
    `tf_tradyx.sparse_update.optimizer_state`).

    Args:
      verbose (int): 1 prints the units and channel count of each new selection.

    Raises:
      ValueError: when training starts, for a model that `wrap` did not make, or an optimizer
        that would move unselected channels (Muon, Adafactor, Ftrl, decoupled weight decay on
        the wrapped kernels, EMA).

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(16, 3, name="conv"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=500, layers=["conv"], seed=0)
      >>> sparse.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> x, y = np.zeros((4, 8, 8, 3), "float32"), np.zeros(4)
      >>> history = sparse.fit(x, y, epochs=3, callbacks=[sp.ChannelResampler()], verbose=0)
      >>> sp.draws(sparse)  # the number of the next draw: one resample per epoch
      3
    """

    def __init__(self, verbose=0):
        super().__init__()
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        sampler_lib.sampler_of(self.model)
        optimizer_state.check_optimizer(self.model, getattr(self.model, "optimizer", None))
        if _keras_compat.compiled_with_xla(self.model):
            sampler_lib.reserve_upcoming(self.model, self.params.get("epochs", 1))

    def on_epoch_begin(self, epoch, logs=None):
        strategy = sampler_lib.sampler_of(self.model).strategy
        if not strategy.dynamic or strategy.mode != "channels":
            return
        # A run saved mid-epoch and resumed (BackupAndRestore(save_freq=...)) restarts this epoch
        # with its draw already made and the draw counter past it: it keeps that draw.
        if sampler_lib.epoch_in_progress(self.model) == epoch:
            return
        # The draw follows the model's own stream (saved with it), not `epoch`, which restarts at
        # 0 in every `fit` call: four fit(epochs=1) calls draw four selections, not one.
        sampler_lib.resample(self.model, optimizer=getattr(self.model, "optimizer", None))
        sampler_lib.mark_epoch(self.model, epoch)
        if self.verbose:
            e = efficiency_lib.efficiency(self.model)
            _keras_compat.print_msg(
                f"\nEpoch {epoch + 1}: {e.channels} channels in {e.layers_updated} layers, "
                f"{e.units:,} of {e.budget:,} units"
            )

    def on_epoch_end(self, epoch, logs=None):
        sampler_lib.mark_epoch(self.model, -1)  # the epoch's draw is spent


class EfficiencyLogger(keras.callbacks.Callback):
    """Adds the current selection's efficiency figures to the epoch logs (History, TensorBoard).

    By default the figures that change from epoch to epoch and say whether the budget holds:
    "sparse_update/units", "sparse_update/budget_used" and "sparse_update/layers_updated", so the
    progress line stays short. `keys="all"` logs every field of `Efficiency` (constants such as the
    full fine-tuning units included); a list of field names picks them.

    Args:
      keys (tuple[str] | str): `Efficiency` field names to log, or "all".

    Raises:
      ValueError: for unknown keys; in `fit`, for a model without sparse-update wrappers.

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
      >>> sparse.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> x, y = np.zeros((4, 8, 8, 3), "float32"), np.zeros(4)
      >>> history = sparse.fit(x, y, epochs=2, verbose=0, callbacks=[
      ...     sp.ChannelResampler(), sp.EfficiencyLogger()])
      >>> sorted(k for k in history.history if k.startswith("sparse_update/"))
      ['sparse_update/budget_used', 'sparse_update/layers_updated', 'sparse_update/units']
      >>> history.history["sparse_update/units"]
      [360.0, 360.0]
    """

    SHORT = ("units", "budget_used", "layers_updated")

    def __init__(self, keys=SHORT):
        super().__init__()
        fields = set(efficiency_lib.Efficiency.__dataclass_fields__) | {
            "budget_used",
            "units_fraction_of_full",
        }
        if keys != "all":
            unknown = sorted(set(keys) - fields)
            if unknown:
                raise ValueError(f"Unknown efficiency keys {unknown}; known: {sorted(fields)}.")
        self.keys = keys

    def on_train_begin(self, logs=None):
        _require_sparse_model(self.model, type(self).__name__)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        figures = efficiency_lib.efficiency(self.model).as_logs()
        if self.keys != "all":
            wanted = {f"sparse_update/{k}" for k in self.keys}
            figures = {k: v for k, v in figures.items() if k in wanted}
        logs.update(figures)


class SelectionSummaries(SummaryCallback):
    """Writes the selection to TensorBoard each epoch, for every wrapped layer.

    Scalars `selected_channels/<layer>` (count), `selected_fraction/<layer>`, and the efficiency
    figures `efficiency/<name>`; a histogram `selected_index/<layer>` of the chosen channel indices.
    Place it after `ChannelResampler` so that it sees the epoch's selection. Steps are the
    optimizer's (`optimizer.iterations` when the epoch starts), as for `keras.callbacks.TensorBoard`
    and `tx.pruning.PruningSummaries`, so the curves line up in one TensorBoard.

    Args:
      log_dir (str): the directory the summaries are written to.

    Raises:
      ImportError: without TensorBoard (`pip install 'tf_tradyx[tensorboard]'`).
      ValueError: in `fit`, for a model without sparse-update wrappers.

    Examples:
      >>> import glob, tempfile
      >>> import tensorflow as tf
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> sparse = sp.wrap(model, budget=400, layers=["conv2"], seed=0)
      >>> sparse.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> x, y = np.zeros((4, 8, 8, 3), "float32"), np.zeros(4)
      >>> with tempfile.TemporaryDirectory() as logs:
      ...     callbacks = [sp.ChannelResampler(), sp.SelectionSummaries(logs)]
      ...     _ = sparse.fit(x, y, epochs=1, verbose=0, callbacks=callbacks)
      ...     tags = {value.tag: value for path in glob.glob(os.path.join(logs, "events.*"))
      ...             for event in tf.compat.v1.train.summary_iterator(path)
      ...             for value in event.summary.value}
      >>> sorted(tag for tag in tags if tag.startswith("selected"))
      ['selected_channels/conv2', 'selected_fraction/conv2', 'selected_index/conv2']
      >>> float(tf.make_ndarray(tags["selected_channels/conv2"].tensor))
      2.0
    """

    def on_train_begin(self, logs=None):
        _require_sparse_model(self.model, type(self).__name__)

    def on_epoch_begin(self, epoch, logs=None):
        chosen = sampler_lib.selection(self.model)
        with self.writer().as_default(step=_summaries.optimizer_step(self.model)):
            for w in sampler_lib.sparse_layers(self.model):
                idx = chosen.get(w.selection_name, [])
                tf.summary.scalar(f"selected_channels/{w.selection_name}", len(idx))
                tf.summary.scalar(f"selected_fraction/{w.selection_name}", len(idx) / w.in_channels)
                if len(idx):
                    tf.summary.histogram(f"selected_index/{w.selection_name}", idx)
            for k, v in efficiency_lib.efficiency(self.model).as_logs(prefix="efficiency/").items():
                tf.summary.scalar(k, v)
        self.writer().flush()
