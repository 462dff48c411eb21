"""Tests of tf_tradyx.data on the bundled sample and on archives the tests build themselves."""

import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tf_tradyx.data import archive, datasets, folders


def _png_bytes(h, w, value):
    return tf.io.encode_png(tf.fill((h, w, 3), tf.constant(value, tf.uint8))).numpy()


def _jpeg_bytes(h, w, value):
    return tf.io.encode_jpeg(tf.fill((h, w, 3), tf.constant(value, tf.uint8)), quality=100).numpy()


def _make_tree(root, spec):
    """spec: {relative path: bytes}."""
    for rel, data in spec.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _make_tar(path, spec, top="top"):
    with tarfile.open(path, "w:gz") as tar:
        for rel, data in sorted(spec.items()):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


SMALL = {
    "train/b_cls/1.png": _png_bytes(5, 7, 10),
    "train/b_cls/0.jpg": _jpeg_bytes(5, 7, 200),
    "train/a_cls/9.png": _png_bytes(5, 7, 50),
    "test/a_cls/0.png": _png_bytes(5, 7, 60),
    "test/b_cls/0.png": _png_bytes(5, 7, 70),
}


def test_image_size_reads_headers(tmp_path):
    _make_tree(tmp_path, {"a.png": _png_bytes(11, 13, 0), "b.jpg": _jpeg_bytes(17, 19, 0)})
    assert folders.image_size(tmp_path / "a.png") == (11, 13)
    assert folders.image_size(tmp_path / "b.jpg") == (17, 19)


def test_from_folder_directory_labels_follow_sorted_class_names(tmp_path):
    _make_tree(tmp_path, SMALL)
    ds = tx.data.from_folder(str(tmp_path), "train")
    assert ds.class_names == ["a_cls", "b_cls"]
    items = [(x.numpy(), int(y)) for x, y in ds]
    assert [y for _, y in items] == [0, 1, 1]  # a_cls/9.png, then b_cls/0.jpg, b_cls/1.png
    assert items[0][0].shape == (5, 7, 3) and items[0][0].dtype == np.uint8
    np.testing.assert_array_equal(items[0][0], 50)
    np.testing.assert_allclose(items[1][0], 200, atol=2)  # JPEG
    np.testing.assert_array_equal(items[2][0], 10)


def test_from_folder_archive_extracts_once_and_verifies_checksum(tmp_path):
    arch = tmp_path / "small.tar.gz"
    _make_tar(arch, SMALL)
    cache = tmp_path / "cache"
    digest = archive.sha256_of(arch)
    ds = tx.data.from_folder(str(arch), "test", sha256=digest, cache_dir=str(cache))
    assert [int(y) for _, y in ds] == [0, 1]
    extracted = os.listdir(cache / "extracted")
    assert len(extracted) == 1 and not extracted[0].startswith(".")
    marker = cache / "extracted" / extracted[0] / "marker"
    marker.write_text("reused")  # A second call must reuse, not re-extract.
    tx.data.from_folder(str(arch), "train", sha256=digest, cache_dir=str(cache))
    assert marker.read_text() == "reused"


def test_bad_checksum_raises_and_leaves_no_cache(tmp_path):
    arch = tmp_path / "small.tar.gz"
    _make_tar(arch, SMALL)
    cache = tmp_path / "cache"
    with pytest.raises(archive.ArchiveError, match="sha256"):
        tx.data.from_folder(str(arch), "train", sha256="0" * 64, cache_dir=str(cache))
    assert not (cache / "extracted").exists() or not os.listdir(cache / "extracted")


def test_truncated_archive_raises_and_leaves_no_half_cache(tmp_path):
    arch = tmp_path / "small.tar.gz"
    _make_tar(arch, {f"train/c{i}/{j}.png": os.urandom(4000) for i in range(3) for j in range(20)})
    data = arch.read_bytes()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(archive.ArchiveError, match="truncated"):
        tx.data.from_folder(str(broken), "train", cache_dir=str(cache))
    assert os.listdir(cache / "extracted") == []  # The partial folder was removed.


def test_not_an_archive(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"this is not a tar file at all" * 10)
    with pytest.raises(archive.ArchiveError):
        tx.data.from_folder(str(bogus), "train")


def test_missing_folder_missing_split_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tx.data.from_folder(str(tmp_path / "nope"), "train")
    _make_tree(tmp_path / "d", SMALL)
    with pytest.raises(FileNotFoundError, match="No split folder 'validation'"):
        tx.data.from_folder(str(tmp_path / "d"), "validation")
    os.makedirs(tmp_path / "e" / "train" / "cls")
    (tmp_path / "e" / "train" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="No images"):
        tx.data.from_folder(str(tmp_path / "e"), "train")


def test_mixed_sizes_need_image_size(tmp_path):
    _make_tree(tmp_path, {"train/a/0.png": _png_bytes(4, 4, 1), "train/a/1.png": _png_bytes(6, 5, 1)})
    with pytest.raises(ValueError, match="image_size"):
        tx.data.from_folder(str(tmp_path), "train")
    ds = tx.data.from_folder(str(tmp_path), "train", image_size=(8, 9))
    shapes = {tuple(x.shape) for x, _ in ds}
    assert shapes == {(8, 9, 3)}


def test_bundled_sample_is_balanced_and_deterministic():
    train = tx.data.cifar10_sample("train")
    test = tx.data.cifar10_sample("test")
    assert train.num_examples == 1000 and test.num_examples == 200
    assert train.class_names[0] == "airplane" and train.class_names[-1] == "truck"
    labels = np.array([y for _, y in train.as_numpy_iterator()])
    np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
    first = next(iter(train))[0].numpy()
    again = next(iter(tx.data.cifar10_sample("train")))[0].numpy()
    np.testing.assert_array_equal(first, again)
    assert first.std() > 10  # A real photo, not a constant image.
    with pytest.raises(ValueError, match="splits"):
        tx.data.cifar10_sample("validation")


def test_balanced_subset_takes_first_n_per_class_in_order():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0])
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    sub = list(tx.data.balanced_subset(ds, per_class=2, num_classes=3).as_numpy_iterator())
    assert [int(x.ravel()[0]) for x, _ in sub] == [0, 1, 2, 3, 4, 6]
    assert [int(y) for _, y in sub] == [0, 1, 0, 2, 1, 2]
    with pytest.raises(ValueError, match="fewer than 5"):
        tx.data.balanced_subset(ds, per_class=5)
    with pytest.raises(ValueError, match="no examples"):
        tx.data.balanced_subset(ds, per_class=1, num_classes=4)
    with pytest.raises(ValueError, match="per_class"):
        tx.data.balanced_subset(ds, per_class=0)


def test_cifar_augment_is_a_shifted_crop_or_flip():
    image = tf.reshape(tf.range(32 * 32 * 3) % 251, (32, 32, 3))
    image = tf.cast(image, tf.uint8)
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    seen_flip = seen_shift = False
    for s in range(20):
        out = tx.data.cifar_augment(image, seed=tf.constant([s, 7])).numpy()
        assert out.shape == (32, 32, 3)
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if np.array_equal(out, (lambda c: c[:, ::-1] if f else c)(
                       padded[dy:dy + 32, dx:dx + 32]))]
        assert matches, "output is not a crop (optionally flipped) of the padded image"
        seen_flip |= any(f for _, _, f in matches) and not any(not f for _, _, f in matches)
        seen_shift |= all((dy, dx) != (4, 4) for dy, dx, _ in matches)
    assert seen_flip and seen_shift


def test_normalizations():
    img = tf.constant([[[0, 127, 255]]], tf.uint8)
    np.testing.assert_allclose(tx.data.scale_to_symmetric(img).numpy(), [[[-1, 127 / 127.5 - 1, 1]]],
                               rtol=1e-6)
    cifar = tx.data.normalization("resnet20")(img).numpy()
    expected = (np.array([0, 127, 255]) / 255 - np.array(tx.data.CIFAR10_MEAN)) / np.array(
        tx.data.CIFAR10_STD)
    np.testing.assert_allclose(cifar[0, 0], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="No normalization"):
        tx.data.normalization("alexnet")
    resized = tx.data.resize(tf.zeros((32, 32, 3), tf.uint8), 128)
    assert resized.shape == (128, 128, 3)


def test_prepare_batches_and_preprocesses():
    ds = tx.data.cifar10_sample("test")
    batches = list(tx.data.prepare(ds, 64, preprocess=tx.data.scale_to_symmetric,
                                   augment=tx.data.cifar_augment))
    assert [b[0].shape[0] for b in batches] == [64, 64, 64, 8]
    assert batches[0][0].dtype == tf.float32
    assert float(tf.reduce_min(batches[0][0])) >= -1 and float(tf.reduce_max(batches[0][0])) <= 1
    with pytest.raises(ValueError, match="batch_size"):
        tx.data.prepare(ds, 0)


def test_load_rejects_unknown_name():
    with pytest.raises(ValueError, match="Unknown dataset 'not_a_dataset_xyz'"):
        tx.data.load("not_a_dataset_xyz")


def test_load_offline_fails_fast_with_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "network_available", lambda timeout=3.0: False)
    with pytest.raises(datasets.DatasetUnavailableError, match="from_folder"):
        tx.data.load("cifar10", data_dir=str(tmp_path))
    with pytest.raises(datasets.DatasetUnavailableError, match="download=False"):
        tx.data.load("cifar100", data_dir=str(tmp_path), download=False)


def test_network_probe_reports_unreachable_host():
    import socket
    with socket.socket() as s:  # A loopback port that nobody listens on.
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not datasets.network_available(timeout=0.5, hosts=(("127.0.0.1", port),))


def test_load_through_tfds_returns_image_label_pairs(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds
    monkeypatch.setattr(datasets, "network_available", lambda timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=4):
        ds = tx.data.load("cifar10", "train", data_dir=str(tmp_path))
        items = list(ds.as_numpy_iterator())
    assert len(items) == 4
    image, label = items[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert 0 <= int(label) < 10


def test_load_passes_manual_dir_and_data_dir_through(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds
    seen = {}

    class FakeBuilder:
        data_dir = str(tmp_path)

        def is_prepared(self):
            return False

        def download_and_prepare(self, download_config=None):
            seen["manual_dir"] = download_config.manual_dir

        def as_dataset(self, split, as_supervised, shuffle_files):
            seen.update(split=split, as_supervised=as_supervised)
            return tf.data.Dataset.from_tensor_slices((np.zeros((2, 4, 4, 3), np.uint8), [0, 1]))

    def fake_builder(name, data_dir=None):
        seen.update(name=name, data_dir=data_dir)
        return FakeBuilder()

    monkeypatch.setattr(tfds, "builder", fake_builder)
    # With manual_dir there is no network probe: the files are local.
    monkeypatch.setattr(datasets, "network_available", lambda timeout=3.0: pytest.fail("probed"))
    ds = tx.data.load("caltech_birds2011", "train[:10%]", data_dir="/data/tfds",
                      manual_dir="/data/manual")
    assert seen == {"name": "caltech_birds2011", "data_dir": "/data/tfds",
                    "manual_dir": "/data/manual", "split": "train[:10%]", "as_supervised": True}
    assert len(list(ds)) == 2


def test_load_wraps_download_failures(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    class FailingBuilder:
        data_dir = str(tmp_path)

        def is_prepared(self):
            return False

        def download_and_prepare(self, download_config=None):
            raise ConnectionError("connection reset")

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: FailingBuilder())
    monkeypatch.setattr(datasets, "network_available", lambda timeout=3.0: True)
    with pytest.raises(datasets.DatasetUnavailableError, match="connection reset.*from_folder"):
        tx.data.load("food101")


def test_archive_cache_is_shared_with_and_without_checksum(tmp_path):
    arch = tmp_path / "small.tar.gz"
    _make_tar(arch, SMALL)
    cache = tmp_path / "cache"
    tx.data.from_folder(str(arch), "train", cache_dir=str(cache))
    tx.data.from_folder(str(arch), "train", sha256=archive.sha256_of(arch), cache_dir=str(cache))
    assert len(os.listdir(cache / "extracted")) == 1
    with pytest.raises(archive.ArchiveError, match="sha256"):
        tx.data.from_folder(str(arch), "train", sha256="1" * 64, cache_dir=str(cache))
