"""How much do the ImageNet features help? Classifier-only training on CIFAR-10 at 128 px.

    python benchmarks/linear_probe.py [--per_class=500] [--test_per_class=100]

For each tinyML network: pooled features of the pretrained network vs the same architecture with
random weights, and a logistic regression on raw pixels, all trained the same way (a Dense softmax
layer, Adam, full batch features). Prints a table, writes benchmarks/results/linear_probe.json.
"""

import time

import _common
import keras
import numpy as np
from absl import app, flags

import tf_tradyx as tx

FLAGS = flags.FLAGS
flags.DEFINE_integer("per_class", 500, "Training images per class.")
flags.DEFINE_integer("test_per_class", 100, "Test images per class.")
flags.DEFINE_integer("epochs", 100, "Epochs of classifier training.")
flags.DEFINE_list("networks", ["mbv2-w0.35", "mcunet-in1", "proxyless-w0.3"], "Networks.")


def _probe(features, labels, test_features, test_labels, epochs):
    keras.utils.set_random_seed(0)
    mean, std = features.mean(0), features.std(0) + 1e-6
    head = keras.Sequential([keras.Input(features.shape[1:]), keras.layers.Dense(10)])
    head.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    head.fit((features - mean) / std, labels, epochs=epochs, batch_size=256, verbose=0)
    return float(head.evaluate((test_features - mean) / std, test_labels, verbose=0)[1])


def main(argv):
    del argv
    train, source = _common.cifar10("train")
    test, _ = _common.cifar10("test")
    per_class = FLAGS.per_class if source == "shared archive" else min(FLAGS.per_class, 100)
    test_per_class = (
        FLAGS.test_per_class if source == "shared archive" else min(FLAGS.test_per_class, 20)
    )
    train = tx.data.balanced_subset(train, per_class, 10)
    test = tx.data.balanced_subset(test, test_per_class, 10)
    y_train = np.array([int(y) for _, y in train.as_numpy_iterator()])
    y_test = np.array([int(y) for _, y in test.as_numpy_iterator()])

    def pixels(ds):
        return np.stack([x.reshape(-1) / 255.0 for x, _ in ds.as_numpy_iterator()]).astype(
            np.float32
        )

    rows = [
        {
            "features": "raw pixels (32x32x3)",
            "dim": 3072,
            "accuracy": round(
                _probe(pixels(train), y_train, pixels(test), y_test, FLAGS.epochs), 4
            ),
            "extract_s": 0.0,
        }
    ]
    print(rows[-1], flush=True)
    for name in FLAGS.networks:
        pre = tx.models.preprocess(name)
        for weights in ("imagenet", "random"):
            keras.utils.set_random_seed(0)
            model = (
                tx.models.load_pretrained(name) if weights == "imagenet" else tx.models.tinyml(name)
            )
            extractor = keras.Model(model.input, model.get_layer("pool").output)

            def features(ds):
                batches = ds.map(lambda x, y: pre(x)).batch(250)  # noqa: B023 - used within this iteration
                return np.concatenate([extractor.predict_on_batch(b) for b in batches])  # noqa: B023

            start = time.time()
            f_train, f_test = features(train), features(test)
            elapsed = time.time() - start
            acc = _probe(f_train, y_train, f_test, y_test, FLAGS.epochs)
            rows.append(
                {
                    "features": f"{name} {weights}",
                    "dim": f_train.shape[1],
                    "accuracy": round(acc, 4),
                    "extract_s": round(elapsed, 1),
                }
            )
            print(rows[-1], flush=True)
    print(
        f"\nCIFAR-10 ({source}), {per_class} train / {test_per_class} test images per class, 128 px\n"
    )
    print(_common.table(rows, ["features", "dim", "accuracy", "extract_s"]))
    path = _common.write_json(
        "linear_probe.json",
        {"data": source, "per_class": per_class, "test_per_class": test_per_class, "rows": rows},
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    app.run(main)
