"""Class folders: image sizes from headers, labels by sorted class name, missing and mixed input."""

import os
import struct
import sys
import threading
import zlib

import keras
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
    with pytest.raises(ValueError, match="No images"), pytest.warns(UserWarning, match="notes"):
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


# ----- hostile and careless input (issue 33, items 2, 3 and 7) -----


def _bmp(h, w, value):
    """A 24-bit BMP, bottom-up rows padded to 4 bytes."""
    row = bytes([value] * 3 * w) + b"\0" * ((4 - 3 * w % 4) % 4)
    pixels = row * h
    head = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return head + dib + pixels


def _gif(frames, h=1, w=1):
    """A GIF whose `frames` frames are each one pixel of color 0 on an h x w canvas."""
    head = b"GIF89a" + struct.pack("<HH", w, h) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    frame = b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00"
    return head + frame * frames + b";"


def _png_header(h, w):
    """The signature and IHDR chunk of a PNG claiming h x w pixels, and nothing else."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def test_images_over_the_pixel_cap_are_refused_before_decoding(tmp_path):
    assert folders.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default, a 0.25 GiB RGB image
    bomb = tmp_path / "bomb"
    make_tree(
        bomb, {"train/a/0.png": _png_header(20000, 20000), "train/b/0.png": png_bytes(4, 4, 1)}
    )
    for kwargs in ({}, {"image_size": (8, 8), "verify": False}):
        with pytest.raises(ValueError, match=r"400,000,000 pixels.*max_pixels="):
            tx.data.from_folder(str(bomb), "train", **kwargs)
    small = tmp_path / "small"
    make_tree(small, {"train/a/0.png": png_bytes(30, 30, 5), "train/a/1.gif": _gif(3, 30, 30)})
    with pytest.raises(ValueError, match=r"0\.png.*900 pixels"):
        tx.data.from_folder(str(small), "train", max_pixels=899, image_size=4)
    with pytest.raises(ValueError, match=r"1\.gif.*3 frames"):  # every frame is decoded
        tx.data.from_folder(str(small), "train", max_pixels=2000, image_size=4)
    ds = tx.data.from_folder(str(small), "train", max_pixels=2700, image_size=4)
    assert ds.num_examples == 2


def test_the_module_pixel_cap_is_read_at_each_call_as_pillows(tmp_path, monkeypatch):
    make_tree(tmp_path, {"train/a/0.png": png_bytes(30, 30, 5)})
    monkeypatch.setattr(folders, "MAX_IMAGE_PIXELS", 899)
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        tx.data.from_folder(str(tmp_path), "train")
    monkeypatch.setattr(folders, "MAX_IMAGE_PIXELS", None)  # no cap, as with Pillow
    assert tx.data.from_folder(str(tmp_path), "train").num_examples == 1


def test_a_fifo_or_device_named_like_an_image_is_refused_without_opening_it(tmp_path):
    make_tree(tmp_path, {"train/a/0.png": png_bytes(4, 4, 1)})
    fifo = tmp_path / "train" / "a" / "b.png"
    os.mkfifo(fifo)
    outcome = {}

    def call():
        try:
            tx.data.from_folder(str(tmp_path), "train")
        except Exception as e:  # noqa: BLE001 (the test inspects it)
            outcome["error"] = e

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(120)
    if thread.is_alive():  # unblock the reader stuck in open() before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail("from_folder hung on a FIFO named b.png")
    assert isinstance(outcome.get("error"), ValueError), outcome
    assert "b.png" in str(outcome["error"]) and "not a regular file" in str(outcome["error"])
    os.remove(fifo)
    os.symlink("/dev/zero", tmp_path / "train" / "a" / "z.png")  # a link to a device
    with pytest.raises(ValueError, match=r"z\.png.*not a regular file"):
        tx.data.from_folder(str(tmp_path), "train")
    os.remove(tmp_path / "train" / "a" / "z.png")
    os.symlink(tmp_path / "train" / "a" / "0.png", tmp_path / "train" / "a" / "l.png")
    assert tx.data.from_folder(str(tmp_path), "train").num_examples == 2  # a link to a file is fine


def test_hidden_entries_are_ignored_as_keras_does(tmp_path):
    png = png_bytes(4, 4, 1)
    make_tree(
        tmp_path,
        {
            "train/a/0.png": png,
            "train/b/0.png": png,
            "train/.ipynb_checkpoints/0-checkpoint.png": png,
            "train/a/.ipynb_checkpoints/0-checkpoint.png": png,
            "train/a/._0.png": b"macOS AppleDouble, not a PNG",
        },
    )
    ds = tx.data.from_folder(str(tmp_path), "train")
    assert ds.class_names == ["a", "b"] and ds.num_examples == 2
    keras_ds = keras.utils.image_dataset_from_directory(
        str(tmp_path / "train"), image_size=(4, 4), shuffle=False, verbose=False
    )
    assert keras_ds.class_names == ds.class_names


def test_bmp_and_gif_are_read_and_skipped_files_are_named(tmp_path):
    make_tree(
        tmp_path,
        {
            "train/a/0.bmp": _bmp(1, 1, 30),
            "train/b/0.gif": _gif(1),
            "train/b/0.tiff": b"II*\0",
            "train/b/labels.txt": b"x",
        },
    )
    with pytest.warns(UserWarning, match=r"Skipped 2 file\(s\).*0\.tiff"):
        ds = tx.data.from_folder(str(tmp_path), "train")
    items = [(x.numpy(), int(y)) for x, y in ds]
    assert [y for _, y in items] == [0, 1]
    np.testing.assert_array_equal(items[0][0], 30)
    assert folders.image_size(str(tmp_path / "train" / "a" / "0.bmp")) == (1, 1)
    assert folders.image_size(str(tmp_path / "train" / "b" / "0.gif")) == (1, 1)


def test_class_names_given_fix_the_labels_and_must_match_the_folders(tmp_path):
    png = png_bytes(4, 4, 1)
    make_tree(tmp_path, {"test/cat/0.png": png, "test/eel/0.png": png})
    ds = tx.data.from_folder(str(tmp_path), "test", class_names=["cat", "eel"])
    assert [int(y) for _, y in ds] == [0, 1]
    with pytest.raises(ValueError, match=r"no class folder.*\['dog'\]"):
        tx.data.from_folder(str(tmp_path), "test", class_names=["cat", "dog", "eel"])


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
