"""Bad input, tried on purpose at every public entry point: a clear error, and nothing modified."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, data, small_cnn

SU, PR = tx.sparse_update, tx.pruning


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(tf.reshape(x, (-1, 12 * 12 * 3)))


def _snapshot(model):
    return (
        [np.asarray(v).copy() for v in model.weights],
        [(l.name, l.trainable) for l in model.layers],
    )


def _unchanged(model, snap):
    weights, flags = _snapshot(model)
    assert flags == snap[1]
    assert len(weights) == len(snap[0])
    for a, b in zip(weights, snap[0]):
        np.testing.assert_array_equal(a, b)


def _nan_model():
    model = small_cnn()
    k = model.get_layer("pw").kernel
    k.assign(np.full(k.shape, np.nan, np.float32))
    return model


def _fit_with_resampler(model):
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    _, _, ds = data(16)
    model.fit(ds, epochs=1, verbose=0, callbacks=[SU.ChannelResampler()])


X, Y, DS = data(32)
X_INF = X.copy()
X_INF[0, 0, 0, 0] = np.inf

# (case id, model factory, call on that model, exception, message pattern)
CASES = [
    # --- pruning ---
    ("prune/wrap subclassed", lambda: Subclassed(), lambda m: PR.wrap(m), TypeError, "subclassed"),
    (
        "prune/wrap twice",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.wrap(m),
        ValueError,
        "already has masks",
    ),
    ("prune/wrap unknown skip", small_cnn, lambda m: PR.wrap(m, skip=["nope"]), ValueError, "skip"),
    (
        "prune/wrap nothing prunable",
        lambda: keras.Sequential([keras.Input((4,)), keras.layers.ReLU()]),
        lambda m: PR.wrap(m),
        ValueError,
        "no prunable layer",
    ),
    ("prune/strip unwrapped", small_cnn, lambda m: PR.strip(m), ValueError, "nothing to strip"),
    (
        "prune/unwrapped model",
        small_cnn,
        lambda m: PR.PXPruner().prune(m, 0.5, data=DS),
        ValueError,
        "no masks",
    ),
    *[
        (
            f"prune/sparsity {s!r}",
            lambda: PR.wrap(small_cnn()),
            (lambda s: lambda m: PR.RandomPruner().prune(m, s))(s),  # noqa: B023 - bound by the outer lambda
            ValueError,
            "sparsity",
        )
        for s in (1.0, -0.1, 1.5, float("nan"), "0.5")
    ],
    (
        "prune/no data",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.PXPruner().prune(m, 0.5),
        ValueError,
        "pass data=",
    ),
    (
        "prune/empty data",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.SNIPPruner().prune(m, 0.5, data=DS.take(0)),
        ValueError,
        "empty",
    ),
    (
        "prune/wrong shape",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.PXPruner(rounds=2).prune(m, 0.5, data=(X[:, :8, :8], Y)),
        ValueError,
        "does not fit",
    ),
    (
        "prune/wrong dtype",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.PXPruner(rounds=2).prune(m, 0.5, data=(X.astype(str), Y)),
        ValueError,
        "numeric",
    ),
    (
        "prune/mislabeled",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.SNIPPruner().prune(m, 0.5, data=(X, Y + 7)),
        ValueError,
        "Labels must lie",
    ),
    (
        "prune/unlabeled for SNIP",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.SNIPPruner().prune(m, 0.5, data=X),
        ValueError,
        "labels",
    ),
    (
        "prune/NaN weights",
        lambda: PR.wrap(_nan_model()),
        lambda m: PR.PXPruner(rounds=2).prune(m, 0.5, data=(X, Y)),
        FloatingPointError,
        "non-finite",
    ),
    (
        "prune/Inf inputs",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.PXPruner(rounds=2).prune(m, 0.5, data=(X_INF, Y)),
        ValueError,
        "holds NaN or Inf",
    ),
    (
        "prune/NaN inputs SNIP",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.SNIPPruner().prune(m, 0.5, data=(X * np.nan, Y)),
        ValueError,
        "holds NaN or Inf",
    ),
    (
        "prune/skip leaves nothing",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.MagnitudePruner(skip=[keras.layers.Layer], verbose=0).prune(m, 0.5),
        ValueError,
        "skip= leaves no prunable kernel",
    ),
    (
        "prune/skip leaves nothing to score",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.SNIPPruner(skip=["c1", "dw", "pw", "fc", "head"]).score(m, (X, Y)),
        ValueError,
        "skip= leaves no prunable kernel",
    ),
    (
        "prune/generator data",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.SNIPPruner(verbose=0).prune(m, 0.5, data=((X, Y) for _ in range(2))),
        TypeError,
        "from_generator",
    ),
    (
        "prune/iterator data",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.PXPruner(rounds=2, verbose=0).prune(m, 0.5, data=iter([(X, Y)])),
        TypeError,
        "read only once",
    ),
    (
        "prune/object data",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.SNIPPruner(verbose=0).prune(m, 0.5, data=({"x": X}, Y)),
        TypeError,
        "tf.data.Dataset",
    ),
    (
        "prune/wrap a sparse-update model",
        lambda: SU.wrap(small_cnn(), budget=300, layers=CANDIDATES),
        lambda m: PR.wrap(m),
        ValueError,
        r"tx.sparse_update.wrap\(tx.pruning.wrap\(model\)",
    ),
    (
        "prune/bad rounds",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.PXPruner(rounds=0).prune(m, 0.5, data=DS),
        ValueError,
        "rounds",
    ),
    (
        "prune/bad scope",
        lambda: PR.wrap(small_cnn()),
        lambda m: PR.RandomPruner(scope="nowhere").prune(m, 0.5),
        ValueError,
        "scope",
    ),
    (
        "prune/unknown method",
        small_cnn,
        lambda m: PR.get_pruner("prunemagic"),
        ValueError,
        "Unknown pruning method",
    ),
    # --- sparse update ---
    (
        "su/wrap subclassed",
        lambda: Subclassed(),
        lambda m: SU.wrap(m, budget=100, layers=["dense"]),
        TypeError,
        "subclassed",
    ),
    (
        "su/wrap twice",
        lambda: SU.wrap(small_cnn(), budget=300, layers=CANDIDATES),
        lambda m: SU.wrap(m, budget=300, layers=CANDIDATES),
        ValueError,
        "already wrapped",
    ),
    ("su/strip unwrapped", small_cnn, lambda m: SU.strip(m), ValueError, "nothing to strip"),
    *[
        (
            f"su/budget {b!r}",
            small_cnn,
            (lambda b: lambda m: SU.wrap(m, budget=b, layers=CANDIDATES))(b),  # noqa: B023 - bound by the outer lambda
            ValueError,
            "budget",
        )
        for b in (0, -10, 5, 12.5, "lots", True, None, float("inf"))
    ],
    (
        "su/unsupported layer",
        small_cnn,
        lambda m: SU.wrap(m, budget=300, layers=["bn"]),
        KeyError,
        "not a selectable layer",
    ),
    (
        "su/classifier as candidate",
        small_cnn,
        lambda m: SU.wrap(m, budget=300, layers=["head"]),
        KeyError,
        "not a selectable layer",
    ),
    (
        "su/unknown strategy",
        small_cnn,
        lambda m: SU.wrap(m, budget=300, layers=CANDIDATES, strategy="magic"),
        ValueError,
        "Unknown strategy",
    ),
    (
        "su/no layers for tradi",
        small_cnn,
        lambda m: SU.wrap(m, budget=300),
        ValueError,
        "needs layers=",
    ),
    (
        "su/ranking instead of names",
        small_cnn,
        lambda m: SU.wrap(m, budget=300, layers=SU.LayerRanking({"pw": 1.0})),
        TypeError,
        "top_k",
    ),
    (
        "su/Det RGN without data",
        small_cnn,
        lambda m: SU.wrap(m, budget=300, strategy="dynamic_det_rgn"),
        ValueError,
        "data=",
    ),
    (
        "su/Det RGN NaN weights",
        _nan_model,
        lambda m: SU.wrap(m, budget=300, strategy="dynamic_det_rgn", data=DS),
        ValueError,
        "NaN",
    ),
    (
        "su/bad SU scheme",
        small_cnn,
        lambda m: SU.wrap(m, strategy="su", scheme={"pw": 2.0}),
        ValueError,
        "fraction",
    ),
    (
        "su/resampler on plain model",
        small_cnn,
        _fit_with_resampler,
        ValueError,
        "no sparse-update sampler",
    ),
    (
        "su/rank wrong shape",
        small_cnn,
        lambda m: SU.rank_layers(m, (X[:, :8, :8], Y), verbose=0),
        ValueError,
        "does not fit",
    ),
    (
        "su/rank mislabeled",
        small_cnn,
        lambda m: SU.rank_layers(m, (X, Y + 3), verbose=0),
        ValueError,
        "Labels must lie",
    ),
    (
        "su/rank empty",
        small_cnn,
        lambda m: SU.rank_layers(m, DS.take(0), verbose=0),
        ValueError,
        "no batch",
    ),
    (
        "su/rank NaN weights",
        _nan_model,
        lambda m: SU.rank_layers(m, DS, verbose=0),
        ValueError,
        "NaN or Inf",
    ),
    (
        "su/cost table unknown size",
        lambda: keras.Sequential(
            [
                keras.Input((None, None, 3)),
                keras.layers.Conv2D(2, 3),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ]
        ),
        lambda m: SU.cost_table(m),
        ValueError,
        "unknown size",
    ),
    (
        "su/wrapper on channels_first conv",
        small_cnn,
        lambda m: SU.ChannelSparseUpdate(keras.layers.Conv2D(2, 3, data_format="channels_first")),
        ValueError,
        "Cannot sparse-update",
    ),
    (
        "su/wrapper on a Conv2DTranspose",
        small_cnn,
        lambda m: SU.ChannelSparseUpdate(keras.layers.Conv2DTranspose(4, 3)),
        ValueError,
        "Cannot sparse-update",
    ),
    (
        "su/wrapper on separable conv",
        small_cnn,
        lambda m: SU.ChannelSparseUpdate(keras.layers.SeparableConv2D(4, 3)),
        ValueError,
        "Cannot sparse-update",
    ),
    # --- data and models ---
    (
        "data/missing folder",
        small_cnn,
        lambda m: tx.data.from_folder("/nonexistent/dir", "train"),
        Exception,
        "nonexistent",
    ),
    (
        "data/balanced_subset per_class 0",
        small_cnn,
        lambda m: tx.data.balanced_subset(DS.unbatch(), per_class=0),
        ValueError,
        "per_class",
    ),
    (
        "models/unknown tinyML",
        small_cnn,
        lambda m: tx.models.load_pretrained("resnet-9000"),
        ValueError,
        "Unknown tinyML network",
    ),
    (
        "models/bad classes",
        small_cnn,
        lambda m: tx.models.load_pretrained("mbv2-w0.35", num_classes=0),
        ValueError,
        "num_classes",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(case):
    _, factory, call, error, pattern = case
    model = factory()
    if not model.built:
        model(np.zeros((1, 12, 12, 3), np.float32))
    snap = _snapshot(model)
    with pytest.raises(error, match=pattern):
        call(model)
    _unchanged(model, snap)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
