"""What the TensorBoard callbacks share: the extra check, one lazily opened writer per run, and
one step convention, the optimizer's step (`optimizer.iterations`), as TFMOT and Keras use."""

import keras
import tensorflow as tf

try:
    import tensorboard  # noqa: F401 - an optional extra; only its presence is checked
except ImportError:
    tensorboard = None


def require_tensorboard(callback):
    if tensorboard is None:
        raise ImportError(
            f"{callback} writes TensorBoard summaries: pip install 'tf_tradyx[tensorboard]'."
        )


def optimizer_step(model):
    """The model's optimizer step (0 before any step, or without an optimizer)."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    return 0 if iterations is None else int(keras.ops.convert_to_numpy(iterations))


class SummaryCallback(keras.callbacks.Callback):
    """Subclasses write inside `with self.writer().as_default(step=...)` in their hooks."""

    def __init__(self, log_dir):
        super().__init__()
        require_tensorboard(type(self).__name__)
        self.log_dir = log_dir
        self._writer = None

    def writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
