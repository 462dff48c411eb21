"""Are PX and SynFlow scores bit-identical across a change? Saves or compares them.

    python benchmarks/scores_identical.py save before.npz     # on the old commit
    python benchmarks/scores_identical.py compare before.npz  # on the new one; exit 1 if any differ

On ResNet-20 (32 px), MobileNetV2 (alpha 0.35) and EfficientNetB0 (both 64 px, random weights):
PX scores with the scaled and the exact data term, SynFlow scores, and the masks of a 2-round PX
prune to 50 %, all on a fixed batch of 8 random images. A refactoring of the graph interpreter or
the layer registry must leave every array bit for bit as it was.
"""

import sys

import keras
import numpy as np
import tensorflow as tf

import tf_tradyx as tx


def _models():
    yield "resnet20", lambda: tx.models.resnet20(num_classes=10), 32
    yield (
        "mobilenetv2",
        lambda: keras.applications.MobileNetV2(
            input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10
        ),
        64,
    )
    yield (
        "efficientnetb0",
        lambda: keras.applications.EfficientNetB0(
            input_shape=(64, 64, 3), weights=None, classes=10
        ),
        64,
    )


def arrays():
    """{name: array} of every score and mask of the check."""
    out = {}
    for name, build, size in _models():
        keras.utils.set_random_seed(0)
        model = tx.pruning.wrap(build())
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255 if name != "resnet20" else 1, (8, size, size, 3)).astype("float32")
        data = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 10, 8))).batch(4)
        pruners = [
            ("px", tx.pruning.PXPruner(rounds=2, seed=0, verbose=0), data),
            (
                "px_exact",
                tx.pruning.PXPruner(rounds=2, exact_data_term=True, seed=0, verbose=0),
                data,
            ),
            ("synflow", tx.pruning.SynFlowPruner(rounds=2, seed=0, verbose=0), None),
        ]
        for pname, pruner, pdata in pruners:
            for kernel, score in pruner.score(model, pdata).items():
                out[f"{name}/{pname}/score/{kernel}"] = np.asarray(score)
        keras.utils.set_random_seed(0)
        tx.pruning.PXPruner(rounds=2, seed=0, verbose=0).prune(model, 0.5, data)
        for layer in tx.pruning.masked_layers(model):
            for kernel, mask in zip(layer.kernel_names, layer.masks):
                out[f"{name}/pxmask/{kernel}"] = np.asarray(mask)
        print(name, "done", flush=True)
    return out


def main(argv):
    if len(argv) != 3 or argv[1] not in ("save", "compare"):
        sys.exit(__doc__)
    out = arrays()
    if argv[1] == "save":
        np.savez(argv[2], **out)
        print(f"saved {len(out)} arrays to {argv[2]}")
        return 0
    ref = np.load(argv[2])
    differing = [k for k in ref.files if k not in out or not np.array_equal(ref[k], out[k])]
    new = [k for k in out if k not in ref.files]
    print(f"{len(ref.files)} arrays compared; differing: {len(differing)}; new: {len(new)}")
    for k in differing[:20]:
        print("  differs:", k)
    return 1 if differing or new else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
