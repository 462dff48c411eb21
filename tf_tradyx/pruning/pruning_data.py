"""The pruning data of a scoring session, streamed: one batch in memory at a time.

Iterative pruners (PX, iterative SNIP, ProsPr...) read the whole pruning set in every round, and PX's
paper setting on ImageNet is 10 images per class for 1,000 classes: 10,000 images of 224 x 224, 6 GB
as float32, more than many machines hold. So a session never materializes the data: numpy arrays
are sliced into batches as they are read, and a `tf.data.Dataset` is iterated again at every pass,
so its own pipeline (decoding, `cache()` if the user asked for it) decides what is kept. A round's
memory is then that of one batch, whatever the number of images.
"""

import numpy as np
import tensorflow as tf

from tf_tradyx import _batches as batch_utils

# An endless dataset (a training pipeline ending in .repeat()) would make every round endless: its
# length is checked when known, and a dataset of unknown length stops with an error beyond this.
MAX_PRUNING_BATCHES = 100_000
BATCH_SIZE = 256  # for arrays and unbatched datasets


_ACCEPTED = (
    "Pass a tf.data.Dataset of (image, label) batches (tf.data.Dataset.from_generator wraps a "
    "generator), or (x, y) arrays."
)


def _array(value, what):
    """`value` as a numeric numpy array; TypeError naming what was given otherwise. A Python
    generator or iterator is refused by name: it can be read only once, and pruners read the data
    again at every round."""
    if hasattr(value, "__next__") or (
        hasattr(value, "__iter__") and not hasattr(value, "__len__") and not tf.is_tensor(value)
    ):
        raise TypeError(
            f"The pruning {what} is a Python {type(value).__name__} (a generator or iterator): "
            f"it can be read only once, but pruners read the data again at every scoring pass. "
            + _ACCEPTED
        )
    array = np.asarray(value)
    if array.dtype == object or array.ndim == 0:
        raise TypeError(
            f"The pruning {what} is a {type(value).__name__}, not an array of numbers. " + _ACCEPTED
        )
    return array


class PruningData:
    """(x, y-or-None) batches of the pruning data, read again on every iteration.

    The first batch is read and checked when the object is made (shape, dtype, finite values,
    labels), so bad data is refused before a pruner changes anything; every batch is checked as it
    is read, and a pruner restores the model if a later one turns out bad.
    """

    def __init__(self, model, data, needs_data, needs_labels):
        self.model = model
        self.needs_labels = needs_labels
        self._arrays = self._dataset = None
        if data is None:
            if needs_data:
                raise ValueError(
                    "This pruner scores with data: pass data= (a tf.data.Dataset of "
                    "(image, label), or a tuple (x, y) of arrays), e.g. "
                    "tf_tradyx.data.balanced_subset(train_ds, per_class=10)."
                )
            self.first = None
            return
        several = len(model.inputs) > 1
        if isinstance(data, tf.data.Dataset):
            self._dataset = self._batched(data)
        elif several and isinstance(data, (tuple, list)) and len(data) == 2:
            # Several inputs (token ids and a padding mask): x is a dict or list of arrays.
            x = batch_utils.model_input(model, data[0])
            x = [_array(v, "x") for v in batch_utils.flat_inputs(model, x)]
            self._dataset = tf.data.Dataset.from_tensor_slices(
                (tuple(x), _array(data[1], "y"))
            ).batch(BATCH_SIZE)
        elif isinstance(data, (tuple, list)) and len(data) == 2:
            self._arrays = (_array(data[0], "x"), _array(data[1], "y"))
        else:
            self._arrays = (_array(data, "data"), None)
        self.first = next(iter(self), None)
        if self.first is None:
            raise ValueError("The pruning data is empty.")

    def _batched(self, dataset):
        input_rank = len(self.model.inputs[0].shape)
        spec = dataset.element_spec
        x_spec = spec[0] if isinstance(spec, tuple) else spec
        if len(self.model.inputs) > 1:  # several inputs: the first one tells batched or not
            x_spec = batch_utils.flat_inputs(
                self.model, batch_utils.model_input(self.model, x_spec)
            )[0]
            if x_spec.shape.rank == input_rank - 1:
                dataset = dataset.batch(BATCH_SIZE)
            return batch_utils.bounded(dataset, MAX_PRUNING_BATCHES, "pruning data")
        if isinstance(x_spec, dict):
            x_spec = next(iter(x_spec.values())) if len(x_spec) == 1 else x_spec
        if isinstance(x_spec, dict):
            x_spec = batch_utils.model_input(self.model, x_spec)
        if x_spec.shape.rank == input_rank - 1:  # unbatched examples
            dataset = dataset.batch(BATCH_SIZE)
        return batch_utils.bounded(dataset, MAX_PRUNING_BATCHES, "pruning data")

    def _items(self):
        if self._dataset is not None:
            yield from self._dataset
            return
        x, y = self._arrays
        for i in range(0, len(x), BATCH_SIZE):
            yield (x[i : i + BATCH_SIZE], None if y is None else y[i : i + BATCH_SIZE])

    def __iter__(self):
        """One pass over the data: (x, y) tensors, x cast to the model's input dtype."""
        if self._dataset is None and self._arrays is None:
            return
        model = self.model
        for item in self._items():
            x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
            x = batch_utils.model_input(model, x)
            several = len(model.inputs) > 1
            if several:
                x = [tf.convert_to_tensor(v) for v in batch_utils.flat_inputs(model, x)]
            else:
                x = tf.convert_to_tensor(x)
            batch_utils.check_batch(model, batch_utils.pack_inputs(model, x) if several else x, y)
            if self.needs_labels and y is None:
                raise ValueError("This pruner needs labels: pass data as (x, y) pairs.")
            if several:  # each input in its own dtype (token ids stay integers)
                x = batch_utils.pack_inputs(
                    model, [tf.cast(v, t.dtype) for v, t in zip(x, model.inputs)]
                )
            else:
                x = tf.cast(x, model.inputs[0].dtype)
            yield x, None if y is None else tf.convert_to_tensor(y)

    def __bool__(self):
        return self.first is not None
