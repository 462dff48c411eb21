"""Data for both methods: TFDS by name, class folders and archives offline, the bundled CIFAR-10
sample, and the preprocessing the models and pruning split need."""

from tf_tradyx.data.archive import ArchiveError, extract
from tf_tradyx.data.datasets import SUPPORTED_DATASETS, DatasetUnavailableError, load, num_classes
from tf_tradyx.data.folders import from_folder, image_size
from tf_tradyx.data.preprocessing import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    balanced_subset,
    cifar_augment,
    normalization,
    normalize,
    prepare,
    resize,
    scale_to_symmetric,
)
from tf_tradyx.data.sample import SAMPLE_ARCHIVE, cifar10_sample
from tf_tradyx.data.splits import train_test

__all__ = [
    "load",
    "num_classes",
    "SUPPORTED_DATASETS",
    "DatasetUnavailableError",
    "from_folder",
    "image_size",
    "extract",
    "ArchiveError",
    "cifar10_sample",
    "SAMPLE_ARCHIVE",
    "train_test",
    "balanced_subset",
    "prepare",
    "normalization",
    "normalize",
    "resize",
    "scale_to_symmetric",
    "cifar_augment",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
]
