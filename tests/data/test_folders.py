"""Class folders: image sizes from headers, labels by sorted class name, missing and mixed input."""

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import SMALL_IMAGE_TREE, jpeg_bytes, make_tree, png_bytes
from tf_tradyx.data import folders


def test_image_size_reads_headers(tmp_path):
    make_tree(tmp_path, {"a.png": png_bytes(11, 13, 0), "b.jpg": jpeg_bytes(17, 19, 0)})
    assert folders.image_size(tmp_path / "a.png") == (11, 13)
    assert folders.image_size(tmp_path / "b.jpg") == (17, 19)


def test_from_folder_directory_labels_follow_sorted_class_names(tmp_path):
    make_tree(tmp_path, SMALL_IMAGE_TREE)
    ds = tx.data.from_folder(str(tmp_path), "train")
    assert ds.class_names == ["a_cls", "b_cls"]
    items = [(x.numpy(), int(y)) for x, y in ds]
    assert [y for _, y in items] == [0, 1, 1]  # a_cls/9.png, then b_cls/0.jpg, b_cls/1.png
    assert items[0][0].shape == (5, 7, 3) and items[0][0].dtype == np.uint8
    np.testing.assert_array_equal(items[0][0], 50)
    np.testing.assert_allclose(items[1][0], 200, atol=2)  # JPEG
    np.testing.assert_array_equal(items[2][0], 10)


def test_missing_folder_missing_split_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tx.data.from_folder(str(tmp_path / "nope"), "train")
    make_tree(tmp_path / "d", SMALL_IMAGE_TREE)
    with pytest.raises(FileNotFoundError, match="No split folder 'validation'"):
        tx.data.from_folder(str(tmp_path / "d"), "validation")
    os.makedirs(tmp_path / "e" / "train" / "cls")
    (tmp_path / "e" / "train" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="No images"):
        tx.data.from_folder(str(tmp_path / "e"), "train")


def test_mixed_sizes_need_image_size(tmp_path):
    make_tree(tmp_path, {"train/a/0.png": png_bytes(4, 4, 1), "train/a/1.png": png_bytes(6, 5, 1)})
    with pytest.raises(ValueError, match="image_size"):
        tx.data.from_folder(str(tmp_path), "train")
    ds = tx.data.from_folder(str(tmp_path), "train", image_size=(8, 9))
    shapes = {tuple(x.shape) for x, _ in ds}
    assert shapes == {(8, 9, 3)}


def test_from_folder_takes_images_in_subfolders_of_a_class(tmp_path):
    for cls, sub in (("a", ""), ("a", "more"), ("b", "")):
        folder = tmp_path / "train" / cls / sub
        folder.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / "x.png"), tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)))
    ds = tx.data.from_folder(str(tmp_path), "train")
    labels = (
        sorted(int(y) for _, y in ds.unbatch().as_numpy_iterator())
        if len(ds.element_spec[0].shape) == 4
        else sorted(int(y) for _, y in ds.as_numpy_iterator())
    )
    assert labels == [0, 0, 1]


def _sof_offset(data):
    return data.index(b"\xff\xc0")


def test_jpeg_headers_fill_bytes_and_truncation(tmp_path):
    good = jpeg_bytes(5, 7, 100)
    sof = _sof_offset(good)
    filled = tmp_path / "filled.jpg"
    filled.write_bytes(good[:sof] + b"\xff\xff\xff" + good[sof:])  # fill bytes before the SOF
    assert folders.image_size(str(filled)) == (5, 7)
    assert tf.io.decode_jpeg(filled.read_bytes()).shape[:2] == (5, 7)  # a valid JPEG indeed
    for cut in (sof + 3, sof + 6, 3, 5):  # inside the SOF segment, inside a marker
        truncated = tmp_path / f"cut{cut}.jpg"
        truncated.write_bytes(good[:cut])
        assert folders.image_size(str(truncated)) is None  # no struct.error


def test_a_jpeg_with_a_good_header_and_a_corrupt_body_is_named_up_front(tmp_path):
    good = jpeg_bytes(8, 8, 50)
    corrupt = good[: _sof_offset(good) + 20] + b"\x00" * 40
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        (tmp_path / "train" / cls / "ok.jpg").write_bytes(good)
    (tmp_path / "train" / "b" / "broken.jpg").write_bytes(corrupt)
    assert folders.image_size(str(tmp_path / "train" / "b" / "broken.jpg")) == (8, 8)
    with pytest.raises(ValueError, match=r"cannot be decoded.*broken\.jpg"):
        tx.data.from_folder(str(tmp_path), "train")
    ds = tx.data.from_folder(str(tmp_path), "train", verify=False)  # the old behaviour: mid-read
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(ds)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
