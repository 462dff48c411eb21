"""Image classification data in the Keras class-folder layout, from a directory or an archive.

Layout: `root/<split>/<class>/*.jpg|*.jpeg|*.png|*.bmp|*.gif`. Labels follow the sorted class-folder
names, hidden entries (names starting with '.') ignored, the same rules
`keras.utils.image_dataset_from_directory` uses, so a model trained here reads the same label ids
elsewhere.

Untrusted folders are read defensively: only regular files are opened (a FIFO named `b.png` would
block a reader forever), and every image's size is read from its header, before anything is
decoded, against a pixel cap (`max_pixels`, like Pillow's `MAX_IMAGE_PIXELS`): a 500 KB PNG can
declare 16000x16000 pixels and take gigabytes to decode.
"""

import os
import stat
import struct
import warnings

import numpy as np
import tensorflow as tf

from tf_tradyx.data import archive

IMAGE_EXTENSIONS = archive.IMAGE_EXTENSIONS
# Pillow's default: a 0.25 GiB RGB image. An image above it is refused before it is decoded. Read at
# each call, so a program can raise it (or set None for no cap, as with Pillow) for every reader.
MAX_IMAGE_PIXELS = 89_478_485


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


def _skip_gif_blocks(f):
    while True:
        n = f.read(1)
        if not n or n[0] == 0:
            return
        f.seek(n[0], os.SEEK_CUR)


def _gif_frames(f, packed):
    """Counts the frames of a GIF after its logical screen descriptor: TensorFlow decodes every
    frame (then keeps the first), so memory grows with frames x canvas."""
    if packed & 0x80:  # global color table
        f.seek(3 << ((packed & 7) + 1), os.SEEK_CUR)
    frames = 0
    while True:
        kind = f.read(1)
        if kind == b",":  # image descriptor
            desc = f.read(9)
            if len(desc) < 9:
                break
            if desc[8] & 0x80:  # local color table
                f.seek(3 << ((desc[8] & 7) + 1), os.SEEK_CUR)
            f.read(1)  # LZW minimum code size
            _skip_gif_blocks(f)
            frames += 1
        elif kind == b"!":  # extension
            f.read(1)
            _skip_gif_blocks(f)
        else:  # trailer, end of file or garbage
            break
    return max(frames, 1)


def _bmp_size(head):
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:  # BITMAPCOREHEADER
        w, h = struct.unpack("<HH", head[18:22])
    else:
        w, h = struct.unpack("<ii", head[18:26])
    return (abs(h), w) if w > 0 and h else None


def _open_regular(path):
    """Opens `path` for reading only when it is a regular file (following links), without ever
    blocking on a FIFO or a device; None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def image_header(path):
    """(height, width, frames) of a JPEG, PNG, GIF or BMP from its header, without decoding it;
    None when the header is unreadable. Raises ValueError for anything but a regular file."""
    f = _open_regular(path)
    if f is None:
        raise ValueError(_not_regular(path))
    with f:
        head = f.read(26)
        if head[:2] == b"\xff\xd8":
            size = _jpeg_size(f)
        elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 13:
            w, h = struct.unpack("<HH", head[6:10])
            f.seek(13)
            return (h, w, _gif_frames(f, head[10])) if h and w else None
        elif head[:2] == b"BM" and len(head) >= 26:
            size = _bmp_size(head)
        else:
            size = _png_size(head)
    return None if size is None else (*size, 1)


def image_size(path):
    """(height, width) of a JPEG, PNG, GIF or BMP from its header, without decoding it.

    Args:
      path (str): an image file.

    Returns:
      tuple[int, int] | None: (height, width); None when the header is unreadable.

    Raises:
      ValueError: for a path that is not a regular file (a folder, a FIFO, a device).

    Examples:
      >>> import tempfile
      >>> import tensorflow as tf
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     path = os.path.join(folder, "image.png")
      ...     tf.io.write_file(path, tf.io.encode_png(np.zeros((6, 9, 3), np.uint8)))
      ...     tx.data.image_size(path)
      (6, 9)
    """
    header = image_header(path)
    return None if header is None else header[:2]


def _not_regular(path):
    return (
        f"{str(path)!r} is not a regular file (a FIFO, device, socket or broken link). Reading it "
        "could block forever, so it is not opened: remove it, or replace it with the file itself."
    )


def _visible(names):
    return sorted(n for n in names if not n.startswith("."))


def _split_dir(root, split):
    """Finds root/<split>, also one level down (archives usually hold a single top folder)."""
    candidates = [os.path.join(root, split)]
    if os.path.isdir(root):
        subdirs = [d for d in _visible(os.listdir(root)) if os.path.isdir(os.path.join(root, d))]
        candidates += [os.path.join(root, d, split) for d in subdirs]
    for c in candidates:
        if os.path.isdir(c):
            return c
    found = _visible(os.listdir(root)) if os.path.isdir(root) else []
    raise FileNotFoundError(
        f"No split folder {split!r} under {root!r} (found: {found[:10]}). Expected the layout "
        f"root/{split}/<class>/*.jpg; pass split= with one of the folders that exist."
    )


def dataset_root(path, sha256=None, cache_dir=None, max_extracted_bytes=None):
    """The folder holding the splits: `path` itself, or the cache folder its archive extracts to
    (see `tf_tradyx.data.extract`). Resolve it once to read several splits of one archive."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path!r} does not exist. Pass a directory in the layout root/<split>/<class>/*.jpg or a "
            ".tar.gz or .zip archive of it (or tf_tradyx.data.cifar10_sample() for the bundled "
            "CIFAR-10 sample)."
        )
    if os.path.isfile(path):
        return archive.extract(
            path, sha256=sha256, cache_dir=cache_dir, max_extracted_bytes=max_extracted_bytes
        )
    if not os.path.isdir(path):
        raise ValueError(_not_regular(path))
    return path


def class_folders(path, split="train", sha256=None, cache_dir=None, max_extracted_bytes=None):
    """The sorted class-folder names of one split (hidden folders are not classes)."""
    split_dir = _split_dir(dataset_root(path, sha256, cache_dir, max_extracted_bytes), split)
    return [d for d in _visible(os.listdir(split_dir)) if os.path.isdir(os.path.join(split_dir, d))]


def _class_files(folder):
    """The non-folder entries under a class folder, as `os.walk` (links to folders not followed)
    visits them, hidden entries skipped, each folder's entries sorted."""
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    subfolders = []
    for entry in entries:
        if entry.is_dir():
            if not entry.is_symlink():
                subfolders.append(entry.path)
        else:
            yield entry
    for sub in subfolders:
        yield from _class_files(sub)


def _check_class_names(split, split_dir, found, class_names):
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names has duplicates: {list(class_names)}.")
    missing = [c for c in class_names if c not in found]
    extra = [c for c in found if c not in class_names]
    if missing or extra:
        raise ValueError(
            f"The {split!r} split under {split_dir!r} has no class folder for {missing} and has "
            f"folders {extra} beyond class_names={list(class_names)}. Labels are positions in "
            "that list, so they would name other classes. Give the split exactly those class "
            "folders (an empty folder is enough for a class without images)."
        )


def list_files(
    path, split="train", sha256=None, cache_dir=None, *, class_names=None, max_extracted_bytes=None
):
    """Returns (file paths, integer labels, class names) of one split, in a deterministic order.

    Hidden entries are skipped silently; other files that are not images (or lie outside a class
    folder) are skipped with a warning naming them. Raises ValueError for a non-regular file named
    like an image, and when `class_names` (if given) differ from the class folders.
    """
    split_dir = _split_dir(dataset_root(path, sha256, cache_dir, max_extracted_bytes), split)
    entries = _visible(os.listdir(split_dir))
    found = [d for d in entries if os.path.isdir(os.path.join(split_dir, d))]
    skipped = [os.path.join(split_dir, f) for f in entries if f not in found]
    if class_names is None:
        class_names = found
    else:
        class_names = list(class_names)
        _check_class_names(split, split_dir, found, class_names)
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, name)
        # Images in sub-folders of a class folder belong to the class, as in Keras'
        # image_dataset_from_directory; walked in sorted order so the file order is deterministic.
        for entry in _class_files(class_dir):
            if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                skipped.append(entry.path)
                continue
            if not entry.is_file():  # the directory entry's type, or a link's target: no open
                raise ValueError(_not_regular(entry.path))
            files.append(entry.path)
            labels.append(label)
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} file(s) under {split_dir!r} that are not "
            f"{'/'.join(IMAGE_EXTENSIONS)} images in a class folder: {skipped[:5]}"
            f"{'...' if len(skipped) > 5 else ''}. Convert them to one of those formats to use "
            "them; Keras' image_dataset_from_directory skips them too.",
            stacklevel=3,
        )
    if not files:
        raise ValueError(
            f"No images ({', '.join('*' + e for e in IMAGE_EXTENSIONS)}) in class folders under "
            f"{split_dir!r}. Each class needs its own sub-folder holding its images."
        )
    return files, np.asarray(labels, np.int64), class_names


def _check_headers(files, max_pixels, same_size):
    """Reads every header (no decoding): refuses unreadable ones and images over `max_pixels`;
    with `same_size`, also images of different sizes. Returns the (height, width) of the first."""
    sizes = {}
    for f in files:
        header = image_header(f)
        if header is None:
            raise ValueError(
                f"{f!r} is not a readable JPEG, PNG, GIF or BMP file; remove or replace it."
            )
        h, w, frames = header
        pixels = h * w * frames
        if max_pixels is not None and pixels > max_pixels:
            of = f" with {frames} frames (every frame is decoded)" if frames > 1 else ""
            raise ValueError(
                f"{f!r} is {h}x{w}{of}: {pixels:,} pixels, more than max_pixels={max_pixels:,} "
                f"(decoding it would take {pixels * 3 / 2**30:.1f} GiB). A decompression bomb or an "
                "unusually large image: shrink it, or pass a larger max_pixels= (or set "
                "tf_tradyx.data.folders.MAX_IMAGE_PIXELS) if you trust it."
            )
        sizes.setdefault((h, w), f)
        if same_size and len(sizes) > 1:
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
    class_names=None,
    max_pixels=None,
    max_extracted_bytes=None,
):
    """A `tf.data.Dataset` of (uint8 image HxWx3, int64 label) from the class-folder layout.

    Args:
      path: a directory `root/` or a `.tar.gz`/`.zip` archive of it (extracted once into the
        cache; links, devices and names leading outside it refuse the archive).
      split: the split folder, e.g. "train" or "test".
      image_size: (height, width) to resize to (bilinear). Required when image sizes differ.
      sha256: optional checksum of the archive, verified before the first extraction.
      cache_dir: where archives are extracted (default $TF_TRADYX_CACHE or ~/.cache/tf_tradyx).
      shuffle_files: shuffle the file order once (with `seed`); labels stay attached.
      verify: decode every image once now (in parallel), so that a corrupt file is an error naming
        it here rather than a crash without a name in the middle of an epoch. About a second per
        20,000 small JPEGs on two cores; False skips it.
      class_names: the classes in label order, e.g. another split's `class_names`, so that a label
        means the same class in both; the split must have exactly these class folders. Default:
        its sorted class folders.
      max_pixels: refuse an image whose header declares more pixels (height x width x frames)
        than this, before decoding it. None: this module's `MAX_IMAGE_PIXELS` (Pillow's limit,
        89,478,485), read at call time; `float("inf")` for no cap.
      max_extracted_bytes: for an archive, the most bytes extraction may write (see
        `tf_tradyx.data.extract`); raise it for a trusted archive that compresses very well.

    Returns:
      tf.data.Dataset: unbatched (image, label) examples, with `class_names` and `num_examples`
        attributes; labels are positions in `class_names`.

    Raises:
      FileNotFoundError: no such path or split folder.
      ValueError: no images, an unreadable, corrupt, non-regular or too large image, images of
        different sizes without `image_size`, or class folders other than `class_names`.
      ArchiveError: an archive that cannot be trusted or read.

    Examples:
      A folder root/<split>/<class>/<image>:

      >>> import tempfile
      >>> import tensorflow as tf
      >>> tmp = tempfile.TemporaryDirectory()
      >>> for split in ("train", "test"):
      ...     for label, name in enumerate(["cat", "dog"]):
      ...         os.makedirs(os.path.join(tmp.name, split, name))
      ...         for i in range(2):
      ...             png = tf.io.encode_png(np.full((8, 8, 3), 100 * label + i, np.uint8))
      ...             tf.io.write_file(os.path.join(tmp.name, split, name, f"{i}.png"), png)
      >>> train = tx.data.from_folder(tmp.name, "train")
      >>> train.class_names, train.num_examples
      (['cat', 'dog'], 4)
      >>> [(tuple(image.shape), int(label)) for image, label in train.take(1)]
      [((8, 8, 3), 0)]
      >>> small = tx.data.from_folder(tmp.name, "test", image_size=(4, 4))
      >>> tuple(next(iter(small))[0].shape)
      (4, 4, 3)
      >>> tmp.cleanup()
    """
    files, labels, class_names = list_files(
        path,
        split,
        sha256=sha256,
        cache_dir=cache_dir,
        class_names=class_names,
        max_extracted_bytes=max_extracted_bytes,
    )
    if max_pixels is None:
        max_pixels = MAX_IMAGE_PIXELS
    height, width = _check_headers(files, max_pixels, same_size=image_size is None)
    if image_size is not None:
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
