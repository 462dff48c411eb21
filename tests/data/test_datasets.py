"""Named datasets through TFDS: unknown names, offline failures that name the alternatives, the
network probe, and what is passed to TFDS (mocked: the tests never download)."""

import socket
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tf_tradyx as tx
from tf_tradyx.data import datasets


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
    with socket.socket() as s:  # A loopback port that nobody listens on.
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not datasets.network_available(timeout=0.5, hosts=(("127.0.0.1", port),))


def test_load_through_tfds_returns_image_label_pairs(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "network_available", lambda timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=4):
        ds = tx.data.load("cifar10", "train", data_dir=str(tmp_path))
        items = list(ds.as_numpy_iterator())
    assert len(items) == 4
    image, label = items[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert 0 <= int(label) < 10


def test_load_passes_manual_dir_and_data_dir_through(tmp_path, monkeypatch):
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
    ds = tx.data.load(
        "caltech_birds2011", "train[:10%]", data_dir="/data/tfds", manual_dir="/data/manual"
    )
    assert seen == {
        "name": "caltech_birds2011",
        "data_dir": "/data/tfds",
        "manual_dir": "/data/manual",
        "split": "train[:10%]",
        "as_supervised": True,
    }
    assert len(list(ds)) == 2


def test_load_wraps_download_failures(tmp_path, monkeypatch):

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


def test_without_the_tfds_extra_loading_by_name_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if absent
    with pytest.raises(ImportError, match=r"pip install 'tf_tradyx\[tfds\]'"):
        tx.data.load("cifar10", "train")


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
