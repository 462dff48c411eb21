"""Reading (x, y) batches from what users pass as data, and checking them against a model."""

import numpy as np
import tensorflow as tf


def as_dataset(data, batch_size=32):
    """A dataset of (x, y) batches from a dataset or an (x, y) tuple of arrays (x a dict or a list
    of arrays for a model with several inputs)."""
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if isinstance(x, list):  # several inputs: a list would be stacked into one tensor
            x = tuple(x)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    raise TypeError(
        f"data must be a tf.data.Dataset of (x, y) batches or an (x, y) tuple, got "
        f"{type(data).__name__}."
    )


def bounded(dataset, max_batches, what):
    """`dataset`, refused when it is infinite (a pipeline ending in .repeat()) or turns out longer
    than `max_batches` (unknown cardinality is read lazily and cut with a clear error)."""
    cardinality = int(dataset.cardinality())
    if cardinality == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            f"The {what} is an infinite dataset (it ends in .repeat()?); reading it "
            "would never end. Pass a finite one, e.g. dataset.take(n)."
        )
    if cardinality > max_batches:
        raise ValueError(
            f"The {what} has {cardinality:,} batches, more than the {max_batches:,} "
            "read into memory at most; pass a smaller split, e.g. "
            "tf_tradyx.data.balanced_subset(train, per_class=10) or dataset.take(n)."
        )
    if cardinality >= 0:
        return dataset

    def check(index, batch):
        tf.debugging.assert_less(
            index,
            tf.constant(max_batches, tf.int64),
            message=(
                f"The {what} (of unknown length) yields more than {max_batches:,} batches, the most "
                "read into memory; pass a finite, smaller dataset, e.g. dataset.take(n)."
            ),
        )
        return batch

    return dataset.enumerate().map(check)


def xy(batch):
    """(x, y) of one batch; sample weights, when present, are ignored."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError("data must yield (x, y) batches (optionally with sample weights).")
    return batch[0], batch[1]


def check_single_input(model, what="This method"):
    """Raises a clear ValueError for a model with several inputs (what is passed is one image)."""
    if len(model.inputs) != 1:
        raise ValueError(
            f"{what} supports models with one input; this model has {len(model.inputs)} "
            f"({[t.name for t in model.inputs]}). Wrap the part that takes one image tensor in a "
            "model of its own and apply tf_tradyx to that."
        )


def _input_names(model):
    """The names of the model's inputs in the order of `model.inputs`: a dict-input model's keys
    (KerasHub backbones take {"token_ids": ..., "padding_mask": ...}), else the inputs' names."""
    if isinstance(model.input, dict):
        key_of = {id(t): k for k, t in model.input.items()}
        return [key_of.get(id(t), t.name) for t in model.inputs]
    return [t.name for t in model.inputs]


def flat_inputs(model, x):
    """`model_input`'s result as a list in the order of `model.inputs` (one entry per input)."""
    if len(model.inputs) == 1:
        return [x]
    if isinstance(x, dict):
        return [x[n] for n in _input_names(model)]
    return list(x)


def pack_inputs(model, values):
    """Values in the order of `model.inputs`, in the structure the model is called with (a dict for
    a dict-input model, a list otherwise; the value itself for one input)."""
    if len(model.inputs) == 1:
        return values[0]
    if isinstance(model.input, dict):
        return dict(zip(_input_names(model), values))
    return list(values)


def model_input(model, x):
    """The model's input from `x` as `model.fit` accepts it.

    One input: a tensor, or a dict with one entry (or one keyed by the model's input name), as in
    datasets of ({"image": x}, y). Several inputs (token ids and a padding mask, say): a dict keyed
    by the inputs' names, or a list or tuple in the order of `model.inputs`; returned as a list in
    that order, or as a dict for a model that takes a dict (`pack_inputs`).

    Raises:
      ValueError: for a dict that lacks an input, or a list of the wrong length.
    """
    if len(model.inputs) > 1:
        names = _input_names(model)
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(
                    f"The data's inputs are a dict with keys {sorted(x)}; the model needs "
                    f"{names} (missing {missing}). Key the data by the model's input names."
                )
            return pack_inputs(model, [x[n] for n in names])
        if isinstance(x, (list, tuple)) and len(x) == len(names):
            return pack_inputs(model, list(x))
        raise ValueError(
            f"The model has {len(names)} inputs {names}: give the data's x as a dict keyed by "
            f"these names or a list in this order, got {type(x).__name__}."
        )
    if isinstance(x, dict):
        names = _input_names(model) + list(getattr(model, "input_names", None) or [])
        for name in names:
            if name in x:
                return x[name]
        if len(x) == 1:
            return next(iter(x.values()))
        raise ValueError(
            f"The data's inputs are a dict with keys {sorted(x)}, none of which is the model's "
            f"input {names[:1]}; give the model one input named like one of the keys."
        )
    return x


def check_batch(model, x, y=None):
    """Raises ValueError for a batch the model cannot learn from: non-numeric, misshaped,
    unbatched or non-finite inputs, or integer labels outside [0, number of outputs). `x` is
    `model_input`'s result: a list, one tensor per input, for a model with several inputs."""
    if len(model.inputs) > 1:
        for tensor, spec, name in zip(flat_inputs(model, x), model.inputs, _input_names(model)):
            _check_input(tf.convert_to_tensor(tensor), spec, f" {name!r}")
    else:
        _check_input(tf.convert_to_tensor(x), model.inputs[0], "")
    _check_labels(model, y)


def _check_input(x, spec, which):
    dtype = tf.as_dtype(x.dtype)
    if not (dtype.is_floating or dtype.is_integer):
        raise ValueError(
            f"Inputs must be numeric images, got dtype {dtype.name}; decode and "
            "preprocess them first (e.g. tf_tradyx.models.preprocess)."
        )
    expected = tuple(spec.shape[1:])
    shape = tuple(x.shape[1:])
    if len(x.shape) == len(expected) and all(
        a is None or a == b for a, b in zip(expected, tuple(x.shape))
    ):
        raise ValueError(
            f"Data{which} of shape {tuple(x.shape)} is one example, not a batch: the model takes "
            f"(batch, {', '.join(map(str, expected))}). Batch the dataset first, e.g. ds.batch(32)."
        )
    if len(shape) != len(expected) or any(
        a is not None and b is not None and a != b for a, b in zip(expected, shape)
    ):
        raise ValueError(
            f"Data{which} of shape {tuple(x.shape)} does not fit the model input "
            f"(batch, {', '.join(map(str, expected))}); preprocess it to the "
            "model's input size first (e.g. tf_tradyx.models.preprocess)."
        )
    if dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise ValueError(
            "The input data holds NaN or Inf values; clean or re-preprocess it (a division by a "
            "zero standard deviation, say) before pruning or ranking."
        )


def _check_labels(model, y):
    if y is None:
        return
    labels = np.asarray(y)
    classes = model.outputs[0].shape[-1]
    if (
        labels.size
        and np.issubdtype(labels.dtype, np.integer)
        and classes is not None
        and (labels.ndim <= 1 or labels.shape[-1] == 1)
    ):
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(
                f"Labels must lie in [0, {classes}) for this {classes}-way model, got "
                f"values from {labels.min()} to {labels.max()}: the data is "
                "mislabeled or the classifier has the wrong number of classes."
            )
