"""`train_test`: the (train, test, number of classes) triple every script starts from."""

from tf_tradyx.data import datasets, folders, sample


def train_test(dataset="cifar10_sample", data_dir=None, seed=0):
    """Train and test splits of (uint8 image, label) and the class count.

    `data_dir` (a class-folder directory or .tar.gz with train/ and test/) wins over `dataset`;
    `dataset` is a TFDS name, or "cifar10_sample" for the sample shipped with the package. The
    training split is shuffled by file with `seed` where the source allows it.
    """
    if data_dir:
        train = folders.from_folder(data_dir, "train", shuffle_files=True, seed=seed)
        return train, folders.from_folder(data_dir, "test"), len(train.class_names)
    if dataset == "cifar10_sample":
        return (
            sample.cifar10_sample("train", shuffle_files=True, seed=seed),
            sample.cifar10_sample("test"),
            10,
        )
    return (
        datasets.load(dataset, "train"),
        datasets.load(dataset, "test"),
        datasets.num_classes(dataset),
    )
