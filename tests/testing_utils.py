"""Helpers shared by the test modules: small models and data for both methods, image trees and
archives for the data tests, a fit recorder, and the suite's autouse fixtures (registered by
tests/conftest.py). Test modules import from here, never from one another.

The brute-force path reference that checks PX lives beside this module, in tests/path_reference.py.
"""

import io
import os
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
TESTDATA = os.path.join(ROOT, "tests", "testdata")


# ----- fixtures (autouse through tests/conftest.py) -----


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test extracts archives into a fresh cache, never into the user's ~/.cache."""
    monkeypatch.setenv("TF_TRADYX_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


# ----- sparse update: a small CNN with every selectable layer kind -----

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CANDIDATES = ["c1", "dw", "pw", "fc"]


def small_cnn(seed=0):
    """conv (with BN) -> depthwise -> 1x1 conv -> GAP -> Dense -> head."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.ZeroPadding2D(1, name="dw_pad")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", name="dw")(x)
    x = keras.layers.Conv2D(6, 1, name="pw", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, name="fc", activation="relu")(x)
    out = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")  # Non-trivial BN statistics so inference mode matters.
    bn.set_weights([w + np.random.rand(*w.shape).astype("float32") for w in bn.get_weights()])
    return model


def data(n=64, seed=0):
    """(x, y, dataset of batches of 16) for `small_cnn`: 12x12 RGB inputs, 3 classes."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 12, 12, 3), np.float32)
    y = rng.integers(0, 3, n)
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def equal_cost_model():
    """Two Dense candidates whose input channels all cost 5 units (C' = 4, H W = 1)."""
    inp = keras.Input((6,))
    x = keras.layers.Dense(10, name="a")(inp)
    x = keras.layers.Dense(4, name="b")(x)
    x = keras.layers.Dense(4, name="b2")(x)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(x))


class Recorder(keras.callbacks.Callback):
    """Snapshots selection and weights at each epoch start (it runs after ChannelResampler)."""

    def __init__(self):
        super().__init__()
        self.selections, self.before, self.after, self.traces = [], [], [], []

    def _weights(self):
        return {v.path: v.numpy().copy() for v in self.model.variables}

    def on_epoch_begin(self, epoch, logs=None):
        self.selections.append(
            {k: v.tolist() for k, v in tx.sparse_update.selection(self.model).items()}
        )
        self.before.append(self._weights())

    def on_epoch_end(self, epoch, logs=None):
        self.after.append(self._weights())
        self.traces.append([w._traces for w in tx.sparse_update.sparse_layers(self.model)])


# ----- pruning: a small CNN with BN, pooling, a residual add and every prunable kernel kind -----


def pruning_cnn(seed=0, softmax=False, dtype="float32"):
    """conv-BN-ReLU-pool -> depthwise -> 1x1 conv + skip -> separable -> GAP -> Dense, 8x8 input."""
    keras.utils.set_random_seed(seed)
    # Both: layers take the global dtype policy, which Keras caches from floatx on first use, so
    # after any earlier model set_floatx alone would still build float32 layers.
    policy = keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        return _build_pruning_cnn(seed, softmax)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)


def _build_pruning_cnn(seed, softmax):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(x)
    y = keras.layers.Conv2D(8, 1, name="pw")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, activation="softmax" if softmax else None, name="fc")(x)
    model = keras.Model(inputs, out)
    # Non-trivial BN statistics, so inference-mode BN is not the identity.
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(seed)
    bn.set_weights(
        [
            rng.uniform(0.5, 1.5, 8),
            rng.normal(0, 0.1, 8),
            rng.normal(0, 0.1, 8),
            rng.uniform(0.5, 2, 8),
        ]
    )
    return model


def pruning_data(n=12, seed=0):
    """(x, y) for `pruning_cnn`: normal 8x8x3 inputs, 4 classes."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype(np.float32), rng.integers(0, 4, n)


# ----- data: image files, class-folder trees and archives built by the tests -----


def png_bytes(h, w, value):
    return tf.io.encode_png(tf.fill((h, w, 3), tf.constant(value, tf.uint8))).numpy()


def jpeg_bytes(h, w, value):
    return tf.io.encode_jpeg(tf.fill((h, w, 3), tf.constant(value, tf.uint8)), quality=100).numpy()


def make_tree(root, spec):
    """spec: {relative path: bytes}."""
    for rel, content in spec.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


def make_tar(path, spec, top="top"):
    with tarfile.open(path, "w:gz") as tar:
        for rel, content in sorted(spec.items()):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


# Two splits of two classes, PNG and JPEG, for from_folder on a directory or an archive.
SMALL_IMAGE_TREE = {
    "train/b_cls/1.png": png_bytes(5, 7, 10),
    "train/b_cls/0.jpg": jpeg_bytes(5, 7, 200),
    "train/a_cls/9.png": png_bytes(5, 7, 50),
    "test/a_cls/0.png": png_bytes(5, 7, 60),
    "test/b_cls/0.png": png_bytes(5, 7, 70),
}


def tiny_cnn(seed=0, softmax=False):
    """conv -> ReLU -> 1x1 conv -> GAP -> Dense -> head on 8x8x3 inputs (seeds Keras itself)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="fc")(x)
    out = keras.layers.Dense(3, name="head", activation="softmax" if softmax else None)(x)
    return keras.Model(inp, out)


def tiny_data(n=32, seed=0):
    """Batches of 8 random 8x8x3 images with labels in [0, 3), for `tiny_cnn`."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3), np.float32)
    return tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, n))).batch(8)


class SelectionRecord(keras.callbacks.Callback):
    """The selection at each epoch start (list it after ChannelResampler)."""

    def __init__(self):
        super().__init__()
        self.selections = []

    def on_epoch_begin(self, epoch, logs=None):
        self.selections.append(
            {k: v.tolist() for k, v in tx.sparse_update.selection(self.model).items()}
        )


def fit_with_resampler(model, epochs, callbacks):
    """Compile with plain SGD and fit `tiny_data` with a ChannelResampler first."""
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    model.fit(
        tiny_data(),
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=[tx.sparse_update.ChannelResampler(), *callbacks],
    )


# ----- TensorBoard: what the summary callbacks wrote, read back as TensorBoard reads it -----


def tensorboard_events(log_dir):
    """({tag: [(step, value), ...]}, {tag: plugin name}) of every summary in the event files of
    `log_dir` (one run), read with TensorBoard's own event reader: a numeric scalar as a float,
    anything else (histogram buckets, a graph) as its array. Skips the test without the
    `tensorboard` extra."""
    reader = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = reader.EventAccumulator(log_dir, size_guidance={reader.TENSORS: 0})
    run.Reload()
    events, plugins = {}, {}
    for tag in run.Tags()["tensors"]:
        plugins[tag] = run.SummaryMetadata(tag).plugin_data.plugin_name
        for event in run.Tensors(tag):
            value = tf.make_ndarray(event.tensor_proto)
            if value.ndim == 0 and value.dtype.kind in "fiu":
                value = float(value)
            events.setdefault(tag, []).append((event.step, value))
    return events, plugins
