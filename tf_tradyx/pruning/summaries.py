"""`PruningSummaries`: per-layer density to TensorBoard, like TFMOT's callback of the same name."""

import tensorflow as tf

from tf_tradyx._summaries import SummaryCallback
from tf_tradyx.pruning.pruning_report import report as pruning_report


class PruningSummaries(SummaryCallback):
    """Writes `density/<layer>` per masked kernel and `density/total` to `log_dir` each epoch.

    Why per layer: a collapsed layer (density 0) disconnects the network; TensorBoard shows it at a
    glance. Works for a pruned model during `fit` (densities stay fixed) and also after a sparse
    update of a pruned model (they must not move).
    """

    def __init__(self, log_dir, update_freq="epoch"):
        if update_freq != "epoch":
            raise ValueError("PruningSummaries writes once per epoch (update_freq='epoch').")
        super().__init__(log_dir)

    def _write(self, step):
        result = pruning_report(self.model)
        if not result.rows:
            raise ValueError("PruningSummaries needs a model with tx.pruning masks.")
        with self.writer().as_default(step=step):
            for row in result.rows:
                tf.summary.scalar(f"density/{row['name']}", row["density"])
            tf.summary.scalar("density/total", result.density)
        self.writer().flush()

    def on_train_begin(self, logs=None):
        self._write(0)

    def on_epoch_end(self, epoch, logs=None):
        self._write(epoch + 1)
