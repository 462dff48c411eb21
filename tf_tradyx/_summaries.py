"""Base of the TensorBoard callbacks: one lazily opened writer per run, closed at the end."""

import keras
import tensorflow as tf


class SummaryCallback(keras.callbacks.Callback):
    """Subclasses write inside `with self.writer().as_default(step=...)` in their hooks."""

    def __init__(self, log_dir):
        super().__init__()
        try:
            import tensorboard  # noqa: F401
        except ImportError as e:
            raise ImportError(
                f"{type(self).__name__} writes TensorBoard summaries: "
                "pip install 'tf_tradyx[tensorboard]'."
            ) from e
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
