"""`PruningSummaries`: per-layer density to TensorBoard, like TFMOT's callback of the same name."""

import keras
import tensorflow as tf

from tf_tradyx.pruning.report import report as pruning_report


class PruningSummaries(keras.callbacks.Callback):
    """Writes `density/<layer>` per masked kernel and `density/total` to `log_dir` each epoch.

    Why per layer: a collapsed layer (density 0) disconnects the network; TensorBoard shows it at a
    glance. Works for a pruned model during `fit` (densities stay fixed) and also after a sparse
    update of a pruned model (they must not move).
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if update_freq != "epoch":
            raise ValueError("PruningSummaries writes once per epoch (update_freq='epoch').")
        _require_tensorboard()
        self.log_dir = log_dir
        self._writer = None

    def _write(self, step):
        result = pruning_report(self.model)
        if not result.rows:
            raise ValueError("PruningSummaries needs a model with tx.pruning masks.")
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            for row in result.rows:
                tf.summary.scalar(f"density/{row['name']}", row["density"])
            tf.summary.scalar("density/total", result.density)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        self._write(0)

    def on_epoch_end(self, epoch, logs=None):
        self._write(epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _require_tensorboard():
    try:
        import tensorboard  # noqa: F401
    except ImportError as e:
        raise ImportError("PruningSummaries writes TensorBoard summaries: pip install 'tf_tradyx[tensorboard]'.") from e
