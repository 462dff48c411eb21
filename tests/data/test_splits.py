"""train_test: both splits read with one list of class names, so a label means the same class."""

import sys

import pytest

import tf_tradyx as tx
from tests.testing_utils import make_tree, png_bytes

PNG = png_bytes(4, 4, 1)


def test_splits_with_different_classes_are_refused_naming_them(tmp_path):
    make_tree(
        tmp_path,
        {f"train/{c}/0.png": PNG for c in ("cat", "dog", "eel")}
        | {f"test/{c}/0.png": PNG for c in ("cat", "eel", "fox")},
    )
    with pytest.raises(ValueError, match=r"\['dog'\].*\['fox'\]"):
        tx.data.train_test(data_dir=str(tmp_path))


def test_labels_agree_between_splits_and_hidden_folders_are_no_class(tmp_path):
    make_tree(
        tmp_path,
        {f"train/{c}/0.png": PNG for c in ("cat", "dog", "eel")}
        | {f"test/{c}/0.png": PNG for c in ("cat", "dog", "eel", ".ipynb_checkpoints")},
    )
    train, test, num_classes = tx.data.train_test(data_dir=str(tmp_path))
    assert num_classes == 3 and train.class_names == test.class_names == ["cat", "dog", "eel"]
    assert [int(y) for _, y in test] == [0, 1, 2]


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
