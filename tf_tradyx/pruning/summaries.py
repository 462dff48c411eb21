"""`PruningSummaries`: per-layer sparsity to TensorBoard, as TFMOT's callback of the same name.

Like TFMOT's, it is a `keras.callbacks.TensorBoard` (so losses and metrics land in the same run)
that also writes `<layer>/<kernel>/sparsity` for every masked kernel, and `sparsity/total`, into the
run's `train` directory at the optimizer's step (`optimizer.iterations`), once per epoch.
"""

import os

import tensorflow as tf
from keras import callbacks

from tf_tradyx import _summaries
from tf_tradyx.pruning.pruning_report import report as pruning_report


class PruningSummaries(callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` plus the sparsity of every masked kernel.

    Why per layer: a collapsed layer (sparsity 1) disconnects the network; TensorBoard shows it at a
    glance. Works while training a pruned model (sparsities stay fixed) and during a sparse update
    of a pruned model (they must not move). Other arguments go to `keras.callbacks.TensorBoard`.

    Args:
      log_dir (str): the TensorBoard run directory; sparsities go to its `train` subdirectory.
      update_freq (str): must be "epoch" (sparsities are written once per epoch).
      **kwargs: the other arguments of `keras.callbacks.TensorBoard`.

    Raises:
      ValueError: for an `update_freq` other than "epoch"; in `fit`, for a model without masks.
      ImportError: without TensorBoard (`pip install 'tf_tradyx[tensorboard]'`).

    Examples:
      >>> import glob, tempfile
      >>> import tensorflow as tf
      >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
      >>> masked = tx.pruning.prune_at_init(model, "magnitude", sparsity=0.5, verbose=0)
      >>> masked.compile("sgd", "mse")
      >>> with tempfile.TemporaryDirectory() as logs:
      ...     summaries = tx.pruning.PruningSummaries(log_dir=logs)
      ...     _ = masked.fit(np.ones((4, 4)), np.ones((4, 2)), epochs=1, verbose=0,
      ...                    callbacks=[summaries])
      ...     events = glob.glob(os.path.join(logs, "train", "events.*"))
      ...     tags = {value.tag: value for path in events
      ...             for event in tf.compat.v1.train.summary_iterator(path)
      ...             for value in event.summary.value}
      >>> sorted(tag for tag in tags if "sparsity" in tag)
      ['fc/kernel/sparsity', 'sparsity/total']
      >>> float(tf.make_ndarray(tags["sparsity/total"].tensor))
      0.5
    """

    def __init__(self, log_dir="logs", update_freq="epoch", **kwargs):
        if update_freq != "epoch":
            raise ValueError("PruningSummaries writes once per epoch (update_freq='epoch').")
        _summaries.require_tensorboard("PruningSummaries")
        super().__init__(log_dir=log_dir, update_freq=update_freq, **kwargs)
        self._sparsity_writer = None

    def _write_sparsity(self):
        result = pruning_report(self.model, connectivity=False)
        if not result.rows:
            raise ValueError("PruningSummaries needs a model with tx.pruning masks.")
        if self._sparsity_writer is None:
            path = os.path.join(self.log_dir, "train")
            self._sparsity_writer = tf.summary.create_file_writer(path)
        step = _summaries.optimizer_step(self.model)
        with self._sparsity_writer.as_default(step=step):
            for row in result.rows:
                tf.summary.scalar(f"{row['name']}/sparsity", 1.0 - row["density"])
            tf.summary.scalar("sparsity/total", 1.0 - result.density)
        self._sparsity_writer.flush()

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._write_sparsity()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._write_sparsity()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._sparsity_writer is not None:
            self._sparsity_writer.close()
            self._sparsity_writer = None
