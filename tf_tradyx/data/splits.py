"""`train_test`: the (train, test, number of classes) triple every script starts from."""

from tf_tradyx.data import datasets, folders, sample


def train_test(dataset="cifar10_sample", data_dir=None, seed=0):
    """Train and test splits of (uint8 image, label) and the class count.

    `data_dir` (a class-folder directory or .tar.gz/.zip with train/ and test/) wins over
    `dataset`; `dataset` is a TFDS name, or "cifar10_sample" for the sample shipped with the
    package. The training split is shuffled by file with `seed` where the source allows it.

    Both splits of `data_dir` take their labels from one list of class names (the train split's),
    so label 3 is the same class in both: a test split missing a class folder would otherwise
    shift every later label.

    Args:
      dataset (str): a TFDS name, or "cifar10_sample" (offline).
      data_dir (str | None): a class-folder directory or archive with train/ and test/; wins
        over `dataset`.
      seed (int): the file shuffle's seed.

    Returns:
      tuple: (train `tf.data.Dataset`, test `tf.data.Dataset`, number of classes).

    Raises:
      ValueError: the two splits of `data_dir` have different class folders (named).

    Examples:
      >>> import tempfile
      >>> import tensorflow as tf
      >>> tmp = tempfile.TemporaryDirectory()
      >>> for split in ("train", "test"):
      ...     for label, name in enumerate(["cat", "dog"]):
      ...         os.makedirs(os.path.join(tmp.name, split, name))
      ...         for i in range(2):
      ...             png = tf.io.encode_png(np.full((8, 8, 3), 100 * label + i, np.uint8))
      ...             tf.io.write_file(os.path.join(tmp.name, split, name, f"{i}.png"), png)
      >>> train, test, classes = tx.data.train_test(data_dir=tmp.name)
      >>> classes, train.num_examples, test.class_names
      (2, 4, ['cat', 'dog'])
      >>> tmp.cleanup()
      >>> train, test, classes = tx.data.train_test()  # the bundled CIFAR-10 sample
      >>> classes
      10
    """
    if data_dir:
        root = folders.dataset_root(data_dir)  # an archive is extracted (or its cache checked) once
        train_names = folders.class_folders(root, "train")
        test_names = folders.class_folders(root, "test")
        if train_names != test_names:
            only_train = [c for c in train_names if c not in test_names]
            only_test = [c for c in test_names if c not in train_names]
            raise ValueError(
                f"The splits of {data_dir!r} have different classes: test/ has no folder for "
                f"{only_train} (train/ has), train/ has no folder for {only_test} (test/ has). "
                "Labels are positions in the sorted class names, so they would mean different "
                "classes in the two splits. Give both splits the same class folders (an empty "
                "folder is enough for a class without images)."
            )
        train = folders.from_folder(root, "train", shuffle_files=True, seed=seed)
        test = folders.from_folder(root, "test", class_names=train.class_names)
        return train, test, len(train.class_names)
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
