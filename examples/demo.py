"""The end-to-end demo behind `make demo`: prune ResNet-20 at initialization and train it.

Runs on the CIFAR-10 sample shipped with the package (no network, no ../shared): PX and the random
baseline prune ResNet-20 to 90 % sparsity using 10 images per class, then each network (and the
dense one) trains briefly with an ordinary `model.fit`. Prints PX's per-layer report and an
accuracy table; writes out/demo/demo.json and out/demo/px_density.png.
"""

import json
import os
import time

import keras
import numpy as np
from absl import app, flags

import tf_tradyx as tx

FLAGS = flags.FLAGS
flags.DEFINE_float("sparsity", 0.9, "Target sparsity.")
flags.DEFINE_integer("epochs", 4, "Training epochs on the 1,000-image sample.")
flags.DEFINE_string("out", "out/demo", "Output directory.")


def main(argv):
    del argv
    os.makedirs(FLAGS.out, exist_ok=True)
    train, test = tx.data.cifar10_sample("train"), tx.data.cifar10_sample("test")
    norm = tx.data.normalization("resnet20")
    prune_data = tx.data.balanced_subset(train, per_class=10).map(lambda x, y: (norm(x), y))
    train_ds = tx.data.prepare(
        train,
        64,
        preprocess=norm,
        augment=tx.data.cifar_augment,
        shuffle_buffer=1000,
        seed=0,
        cache=True,
    )
    test_ds = tx.data.prepare(test, 200, preprocess=norm, cache=True)

    results = []
    for method in ("dense", "px", "random"):
        keras.utils.set_random_seed(0)
        model = tx.models.resnet20(num_classes=10)
        start = time.time()
        if method == "dense":
            masked = tx.pruning.wrap(model)
        else:
            print(f"\n== {method}: pruning to sparsity {FLAGS.sparsity} ==")
            masked = tx.pruning.prune_at_init(
                model,
                method=method,
                sparsity=FLAGS.sparsity,
                data=prune_data,
                rounds=100 if method == "px" else 1,
            )
            if method == "px":
                print(masked.pruning_report)
                try:
                    tx.pruning.plot_layer_density(
                        masked.pruning_report, os.path.join(FLAGS.out, "px_density.png")
                    )
                except ImportError:
                    pass
        prune_s = time.time() - start
        masked.compile(
            keras.optimizers.SGD(0.05, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        start = time.time()
        masked.fit(train_ds, epochs=FLAGS.epochs, verbose=0)
        train_s = time.time() - start
        plain = tx.pruning.strip(masked)
        plain.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
        )
        _, accuracy = plain.evaluate(test_ds, verbose=0)
        density = tx.pruning.report(masked).density
        zeros_held = all(
            np.all(np.asarray(v)[np.asarray(m) == 0] == 0)
            for w in tx.pruning.masked_layers(masked)
            for v, m in zip(w.kernels, w.masks)
        )
        results.append(
            {
                "method": method,
                "density": round(density, 4),
                "test_accuracy": round(float(accuracy), 4),
                "pruned_weights_still_zero": zeros_held,
                "prune_s": round(prune_s, 1),
                "train_s": round(train_s, 1),
            }
        )
        print(results[-1], flush=True)

    print(
        f"\nResNet-20 on the bundled CIFAR-10 sample (1,000 train / 200 test images), "
        f"{FLAGS.epochs} epoch{'' if FLAGS.epochs == 1 else 's'}; a short run, so accuracies are "
        "low and close.\n"
    )
    print(
        f"{'method':<8} {'density':>8} {'test acc':>9} {'zeros held':>11} {'prune s':>8} {'train s':>8}"
    )
    for r in results:
        print(
            f"{r['method']:<8} {r['density']:>8.4f} {r['test_accuracy']:>9.4f} "
            f"{str(r['pruned_weights_still_zero']):>11} {r['prune_s']:>8.1f} {r['train_s']:>8.1f}"
        )
    with open(os.path.join(FLAGS.out, "demo.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {os.path.join(FLAGS.out, 'demo.json')}")


if __name__ == "__main__":
    app.run(main)
