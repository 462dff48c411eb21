"""Image classification data in the Keras class-folder layout, from a directory or a `.tar.gz`.

Layout: `root/<split>/<class>/*.jpg|*.jpeg|*.png`. Labels follow the sorted class-folder names, the
same rule `keras.utils.image_dataset_from_directory` uses, so a model trained here reads the same
label ids elsewhere.
"""

import os
import struct

import numpy as np
import tensorflow as tf

from tf_tradyx.data import archive

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _png_size(head):
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return h, w
    return None


_SOF = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)


def _jpeg_size(f):
    """Reads (height, width) from the SOF marker of a JPEG without decoding it; None when the
    header is truncated or malformed. Any number of 0xFF fill bytes may precede a marker."""
    f.seek(2)
    while True:
        byte = f.read(1)
        if byte != b"\xff":
            return None
        code = f.read(1)
        while code == b"\xff":  # fill bytes
            code = f.read(1)
        if not code:
            return None
        code = code[0]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if code in _SOF:
            data = f.read(5)
            if len(data) < 5:
                return None
            h, w = struct.unpack(">HH", data[1:5])
            return (h, w) if h and w else None
        if length < 2:
            return None
        f.seek(length - 2, os.SEEK_CUR)


def image_size(path):
    """(height, width) of a JPEG or PNG from its header; None if the header is unreadable."""
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(f)
        return _png_size(head)


def _split_dir(root, split):
    """Finds root/<split>, also one level down (archives usually hold a single top folder)."""
    candidates = [os.path.join(root, split)]
    if os.path.isdir(root):
        subdirs = [d for d in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, d))]
        candidates += [os.path.join(root, d, split) for d in subdirs]
    for c in candidates:
        if os.path.isdir(c):
            return c
    found = sorted(os.listdir(root)) if os.path.isdir(root) else []
    raise FileNotFoundError(
        f"No split folder {split!r} under {root!r} (found: {found[:10]}). Expected the layout "
        f"root/{split}/<class>/*.jpg; pass split= with one of the folders that exist."
    )


def list_files(path, split="train", sha256=None, cache_dir=None):
    """Returns (file paths, integer labels, class names) of one split, in a deterministic order."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path!r} does not exist. Pass a directory in the layout root/<split>/<class>/*.jpg or a "
            ".tar.gz archive of it (or tf_tradyx.data.cifar10_sample() for the bundled CIFAR-10 "
            "sample)."
        )
    root = path
    if os.path.isfile(path):
        root = archive.extract(path, sha256=sha256, cache_dir=cache_dir)
    split_dir = _split_dir(root, split)
    class_names = sorted(
        d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d))
    )
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, name)
        # Images in sub-folders of a class folder belong to the class, as in Keras'
        # image_dataset_from_directory; walked in sorted order so the file order is deterministic.
        for dirpath, dirnames, fnames in os.walk(class_dir):
            dirnames.sort()
            for fname in sorted(fnames):
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(dirpath, fname))
                    labels.append(label)
    if not files:
        raise ValueError(
            f"No images (*.jpg, *.jpeg, *.png) in class folders under {split_dir!r}. Each class needs "
            "its own sub-folder holding its images."
        )
    return files, np.asarray(labels, np.int64), class_names


def _check_sizes(files):
    sizes = {}
    for f in files:
        size = image_size(f)
        if size is None:
            raise ValueError(f"{f!r} is not a readable JPEG or PNG file; remove or replace it.")
        sizes.setdefault(size, f)
        if len(sizes) > 1:
            examples = ", ".join(f"{h}x{w} ({p})" for (h, w), p in sizes.items())
            raise ValueError(
                f"Images have different sizes: {examples}. Pass image_size=(height, width) to resize "
                "them to one size."
            )
    return next(iter(sizes))


def _check_decodable(files):
    """Raises ValueError naming every file TensorFlow cannot decode (a good header does not mean a
    good body): decodes all of them in a tf.data pass that drops failures, then names the gaps."""
    paths = tf.constant(files)

    def decode(i):
        image = tf.io.decode_image(tf.io.read_file(paths[i]), channels=3, expand_animations=False)
        return i, tf.shape(image)[0]

    ds = tf.data.Dataset.range(len(files)).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ignore_errors()
    good = np.zeros(len(files), bool)
    for batch in ds.batch(4096).as_numpy_iterator():
        good[batch[0]] = True
    bad = [files[i] for i in np.flatnonzero(~good)]
    if bad:
        raise ValueError(
            f"{len(bad)} image file(s) cannot be decoded (corrupt or truncated data): "
            f"{bad[:5]}{'...' if len(bad) > 5 else ''}. Remove or replace them."
        )


def from_folder(
    path,
    split="train",
    *,
    image_size=None,
    sha256=None,
    cache_dir=None,
    shuffle_files=False,
    seed=None,
    verify=True,
):
    """A `tf.data.Dataset` of (uint8 image HxWx3, int64 label) from the class-folder layout.

    Args:
      path: a directory `root/` or a `.tar.gz` archive of it (extracted once into the cache).
      split: the split folder, e.g. "train" or "test".
      image_size: (height, width) to resize to (bilinear). Required when image sizes differ.
      sha256: optional checksum of the archive, verified before the first extraction.
      cache_dir: where archives are extracted (default $TF_TRADYX_CACHE or ~/.cache/tf_tradyx).
      shuffle_files: shuffle the file order once (with `seed`); labels stay attached.
      verify: decode every image once now (in parallel), so that a corrupt file is an error naming
        it here rather than a crash without a name in the middle of an epoch. About a second per
        20,000 small JPEGs on two cores; False skips it.

    The dataset carries `class_names` (sorted folder names) and `num_examples` attributes.
    """
    files, labels, class_names = list_files(path, split, sha256=sha256, cache_dir=cache_dir)
    if image_size is None:
        height, width = _check_sizes(files)
    else:
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        if height < 1 or width < 1:
            raise ValueError(f"image_size must be positive, got {image_size!r}.")
    if shuffle_files:
        order = np.random.default_rng(seed).permutation(len(files))
        files = [files[i] for i in order]
        labels = labels[order]
    resize = image_size is not None

    def load(file, label):
        image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
        if resize:
            image = tf.image.resize(image, (height, width), method="bilinear")
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        image = tf.ensure_shape(image, (height, width, 3))
        return image, label

    if verify:
        _check_decodable(files)
    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds.class_names = class_names
    ds.num_examples = len(files)
    return ds
