"""Preprocessing shared by both methods: resizing, per-model normalization, CIFAR augmentation,
batching, and the deterministic class-balanced pruning split.
"""

import warnings

import numpy as np
import tensorflow as tf

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# Per-model input conventions. The tinyML networks were quantized with input scale 1/127.5 and
# zero point 0 on the first conv, i.e. they expect pixel / 127.5 - 1.
_TINYML = ("mbv2-w0.35", "mcunet-in1", "mcunet-5fps", "proxyless-w0.3")


def resize(image, size):
    """Bilinear resize of an image or batch to `size` (int or (h, w)); returns float32 in [0, 255].

    Args:
      image: an (H, W, C) image or an (N, H, W, C) batch, uint8 or float.
      size (int | tuple[int, int]): the new (height, width); an int for a square.

    Returns:
      tf.Tensor: float32, same value range as the input.

    Examples:
      >>> tx.data.resize(np.full((8, 8, 3), 200, np.uint8), 4).shape
      TensorShape([4, 4, 3])
      >>> tx.data.resize(np.zeros((2, 8, 8, 3)), (16, 12)).shape
      TensorShape([2, 16, 12, 3])
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    return tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")


def normalize(image, mean, std):
    """(image / 255 - mean) / std, per channel; accepts uint8 or float in [0, 255].

    Args:
      image: an image or batch, uint8 or float in [0, 255].
      mean (sequence[float]): per-channel means of images scaled to [0, 1].
      std (sequence[float]): per-channel standard deviations, likewise.

    Returns:
      tf.Tensor: float32.

    Examples:
      >>> pixel = np.array([[[255, 0, 51]]], np.uint8)
      >>> tx.data.normalize(pixel, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.1]).numpy()
      array([[[ 1., -1., -3.]]], dtype=float32)
      >>> tx.data.normalize(pixel, tx.data.CIFAR10_MEAN, tx.data.CIFAR10_STD).dtype.name
      'float32'
    """
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def scale_to_symmetric(image):
    """pixel / 127.5 - 1: the [-1, 1] input of the tinyML networks.

    Args:
      image: an image or batch, uint8 or float in [0, 255].

    Returns:
      tf.Tensor: float32 in [-1, 1].

    Examples:
      >>> tx.data.scale_to_symmetric(np.array([0, 51, 255], np.uint8)).numpy()
      array([-1. , -0.6,  1. ], dtype=float32)
    """
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def normalization(model_name, dataset="cifar10"):
    """The normalization function a model of the zoo expects (image uint8 -> float32).

    Args:
      model_name (str): "resnet20", "vgg16_bn" (per-channel mean and std of the dataset) or a
        tinyML network (scaled to [-1, 1]).
      dataset (str): "cifar10" or "cifar100", for the CIFAR networks' statistics.

    Returns:
      Callable: uint8 image -> float32 image of the same shape.

    Raises:
      ValueError: for a model name it does not know.

    Examples:
      >>> norm = tx.data.normalization("mbv2-w0.35")
      >>> float(norm(np.zeros((2, 2, 3), np.uint8))[0, 0, 0])
      -1.0
    """
    if model_name in _TINYML:
        return scale_to_symmetric
    if model_name in ("resnet20", "vgg16_bn"):
        mean, std = (
            (CIFAR100_MEAN, CIFAR100_STD) if dataset == "cifar100" else (CIFAR10_MEAN, CIFAR10_STD)
        )
        return lambda image: normalize(image, mean, std)
    raise ValueError(
        f"No normalization known for model {model_name!r}; known: {['resnet20', 'vgg16_bn', *_TINYML]}."
    )


def cifar_augment(image, seed=None):
    """The standard CIFAR augmentation: 4-pixel zero pad, random crop back, random horizontal flip.

    `seed` is a (2,) int tensor for the stateless ops; without it, the stateful ops use the global seed.

    Args:
      image: one (H, W, C) image (map it over an unbatched dataset, or pass it to `prepare`).
      seed: a (2,) int seed for the stateless ops, or None.

    Returns:
      tf.Tensor: an image of the same shape and dtype.

    Examples:
      >>> image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
      >>> out = tx.data.cifar_augment(image, seed=[1, 2])
      >>> tuple(out.shape), out.dtype.name
      ((8, 8, 3), 'uint8')
      >>> np.array_equal(out, tx.data.cifar_augment(image, seed=[1, 2]))  # stateless: repeatable
      True
      >>> ds = tx.data.cifar10_sample("test").map(lambda x, y: (tx.data.cifar_augment(x), y))
    """
    shape = tf.shape(image)
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    if seed is None:
        image = tf.image.random_crop(padded, shape)
        return tf.image.random_flip_left_right(image)
    seed = tf.convert_to_tensor(seed)
    image = tf.image.stateless_random_crop(padded, shape, seed=seed)
    return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)


def prepare(
    ds,
    batch_size,
    *,
    preprocess=None,
    augment=None,
    shuffle_buffer=0,
    seed=None,
    drop_remainder=False,
    cache=False,
):
    """(image, label) dataset -> batched, prefetched (preprocess(augment(image)), label).

    `augment` runs before `preprocess` on the uint8 image, as a per-example function; `cache=True`
    caches the decoded images in memory before augmentation (worth it for small datasets).

    Args:
      ds (tf.data.Dataset): unbatched (image, label) examples.
      batch_size (int): examples per batch.
      preprocess (Callable | None): image -> model input, e.g. `normalization(name)`.
      augment (Callable | None): image -> image, e.g. `cifar_augment`.
      shuffle_buffer (int): 0 keeps the order; else the size of the shuffle buffer.
      seed (int | None): the shuffle's seed.
      drop_remainder (bool): drop a last, smaller batch.
      cache (bool): cache the images in memory before augmentation.

    Returns:
      tf.data.Dataset: batched, prefetched (input, label) pairs.

    Raises:
      ValueError: for a batch size below 1.

    Examples:
      >>> ds = tx.data.cifar10_sample("test")
      >>> batches = tx.data.prepare(ds, 50, preprocess=tx.data.normalization("resnet20"))
      >>> x, y = next(iter(batches))
      >>> tuple(x.shape), x.dtype.name
      ((50, 32, 32, 3), 'float32')
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if cache:
        ds = ds.cache()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if preprocess is not None:
        ds = ds.map(lambda x, y: (preprocess(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def balanced_subset(ds, per_class=10, num_classes=None):
    """The first `per_class` examples of each class, in dataset order: the pruning split.

    Deterministic for a deterministic `ds`. Stops reading as soon as every class is full when
    `num_classes` is known (given, or from `ds.class_names`).

    Args:
      ds (tf.data.Dataset): unbatched (image, label) examples.
      per_class (int): examples to keep of each class.
      num_classes (int | None): the class count, if `ds` does not tell it.

    Returns:
      tf.data.Dataset: unbatched (image, label) examples, `per_class` of each class.

    Raises:
      ValueError: for `per_class` below 1, or classes with fewer examples (named with counts).

    Examples:
      >>> subset = tx.data.balanced_subset(tx.data.cifar10_sample("test"), per_class=2)
      >>> sorted(int(label) for _, label in subset)
      [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}.")
    if num_classes is None and hasattr(ds, "class_names"):
        num_classes = len(ds.class_names)
    counts, images, labels = {}, [], []
    for image, label in ds.as_numpy_iterator():
        label = int(np.asarray(label).reshape(()))
        if counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            images.append(image)
            labels.append(label)
            if (
                num_classes
                and len(counts) == num_classes
                and all(c == per_class for c in counts.values())
            ):
                break
    if not images:
        raise ValueError("balanced_subset got an empty dataset.")
    if num_classes is None:
        seen = sorted(counts)
        if seen != list(range(len(seen))):
            missing = sorted(set(range(seen[-1] + 1)) - set(seen))
            raise ValueError(
                f"Classes {missing} have no examples; cannot take {per_class} per "
                "class (the data holds only part of the classes: .take() of a "
                "class-sorted dataset?)."
            )
        warnings.warn(
            f"balanced_subset does not know the number of classes (the dataset has no "
            f"class_names, e.g. after .take() or .shuffle()) and found {len(seen)}: "
            f"{seen[:10]}{'...' if len(seen) > 10 else ''}. Pass num_classes= so that a missing "
            "class is an error.",
            stacklevel=2,
        )
    short = {c: n for c, n in counts.items() if n < per_class}
    if num_classes is not None and len(counts) < num_classes:
        missing = sorted(set(range(num_classes)) - set(counts))
        raise ValueError(f"Classes {missing} have no examples; cannot take {per_class} per class.")
    if short:
        raise ValueError(f"Classes with fewer than {per_class} examples: {short}.")
    return tf.data.Dataset.from_tensor_slices((np.stack(images), np.asarray(labels, np.int64)))
