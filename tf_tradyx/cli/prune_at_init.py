"""Prune a network at initialization, train it, evaluate it, and write the report as JSON.

    tf-tradyx-prune --model=resnet20 --dataset=cifar10 --method=px \
        --sparsity=0.982 --rounds=100 --epochs=160 --out=out/px_resnet20

Data: --dataset names a TFDS dataset (cifar10, cifar100, ...) or "cifar10_sample" (the 1,200-image
sample shipped with the package, no network needed); --data_dir reads the class-folder layout
root/{train,test}/<class>/*.jpg from a directory or a .tar.gz you have (a JPEG copy of CIFAR-10,
say) instead. The default is the bundled sample, so the script runs offline.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import flags, logging

import tf_tradyx as tx
from tf_tradyx import _keras_compat
from tf_tradyx.cli import _program

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "resnet20", ["resnet20", "vgg16_bn"], "Network to prune.")
flags.DEFINE_string(
    "dataset", "cifar10_sample", "TFDS name, or cifar10_sample (bundled, offline; the default)."
)
flags.DEFINE_string("data_dir", None, "Class-folder directory or .tar.gz (overrides --dataset).")
flags.DEFINE_enum(
    "method",
    "px",
    [*tx.pruning.PRUNERS, "dense"],
    "Pruning method (dense: no pruning).",
)
flags.DEFINE_float("sparsity", 0.9, "Fraction of prunable weights to remove, in [0, 1).")
flags.DEFINE_integer(
    "rounds",
    None,
    "Pruning rounds (default: the method's own: 100 for PX, SynFlow and iterative "
    "SNIP, 20 for NTK-SAP, else 1).",
)
flags.DEFINE_integer("prune_per_class", 10, "Pruning data: the first N training images per class.")
flags.DEFINE_integer("epochs", 160, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_float(
    "lr", 0.1, "Peak learning rate (SGD, momentum 0.9, drops x0.1 at 50 % and 75 %)."
)
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay.")
flags.DEFINE_integer("max_train", None, "Use only the first N training images (quick runs).")
flags.DEFINE_integer("seed", 0, "Seed for weights, pruning and data order.")
flags.DEFINE_string("out", "out/prune_at_init", "Output directory for report.json (and a plot).")
flags.DEFINE_bool("plot", True, "Write a per-layer density PNG when matplotlib is installed.")
flags.register_validator(
    "sparsity",
    lambda s: 0.0 <= s < 1.0,
    message="--sparsity must be in [0, 1) (0.9 keeps 10 % of the weights).",
)
flags.register_validator("lr", lambda v: v > 0, message="--lr must be > 0.")
_program.require_at_least(1, "epochs", "batch_size", "prune_per_class")
_program.require_at_least(0, "weight_decay")
_program.require_at_least(1, "rounds", "max_train", unset_ok=True)


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    outputs = tx.run_outputs.RunOutputs(
        FLAGS.out, ["report.json", "density.png"], inputs=_program.named_files()
    )  # --out is checked now; files the flags name are never removed
    with outputs:
        _run(outputs)


def _normalization(image_shape, num_classes):
    """CIFAR statistics for 3-channel images; for others (e.g. grayscale) a plain [-1, 1] scale."""
    if image_shape[-1] == 3:
        return tx.data.normalization(FLAGS.model, "cifar100" if num_classes == 100 else "cifar10")
    return lambda image: tf.cast(image, tf.float32) / 127.5 - 1.0


def _run(outputs):
    train, test, num_classes = tx.data.train_test(FLAGS.dataset, FLAGS.data_dir, FLAGS.seed)
    if FLAGS.max_train:
        train = train.take(FLAGS.max_train)
    # The network is built for the data's image size and channels (e.g. 28x28 grayscale).
    image_shape = tuple(int(d) for d in train.element_spec[0].shape)
    norm = _normalization(image_shape, num_classes)
    model = tx.models.get(FLAGS.model, num_classes=num_classes, input_shape=image_shape)

    result = {
        "model": FLAGS.model,
        "dataset": FLAGS.data_dir or FLAGS.dataset,
        "method": FLAGS.method,
        "sparsity": FLAGS.sparsity,
        "seed": FLAGS.seed,
        "image_shape": list(image_shape),
    }
    start = time.time()
    if FLAGS.method == "dense":
        masked = tx.pruning.wrap(model)
    else:
        prune_ds = tx.data.balanced_subset(train, FLAGS.prune_per_class, num_classes)
        prune_ds = prune_ds.map(lambda x, y: (norm(x), y))
        pruner = tx.pruning.get_pruner(FLAGS.method, rounds=FLAGS.rounds, seed=FLAGS.seed)
        masked = tx.pruning.wrap(model)
        report = pruner.prune(masked, FLAGS.sparsity, data=prune_ds)
        _keras_compat.print_msg(report)
        if FLAGS.plot:
            try:
                tx.pruning.density_figure(report).savefig(outputs.path("density.png"), dpi=120)
            except ImportError as e:
                logging.warning("%s", e)
    result["prune_seconds"] = round(time.time() - start, 2)

    train_ds = tx.data.prepare(
        train,
        FLAGS.batch_size,
        preprocess=norm,
        augment=tx.data.cifar_augment,
        shuffle_buffer=10_000,
        seed=FLAGS.seed,
        cache=True,
    )
    test_ds = tx.data.prepare(test, 500, preprocess=norm, cache=True)
    steps = sum(1 for _ in train_ds)
    boundaries = [int(steps * FLAGS.epochs * 0.5), int(steps * FLAGS.epochs * 0.75)]
    lr = keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [FLAGS.lr, FLAGS.lr * 0.1, FLAGS.lr * 0.01]
    )
    masked.compile(
        keras.optimizers.SGD(lr, momentum=0.9, weight_decay=FLAGS.weight_decay),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.time()
    history = masked.fit(train_ds, epochs=FLAGS.epochs, validation_data=test_ds, verbose=2)
    result["train_seconds"] = round(time.time() - start, 2)
    plain = tx.pruning.strip(masked)
    plain.compile(
        metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    _, accuracy = plain.evaluate(test_ds, verbose=0)
    final = tx.pruning.report(masked)
    result.update(
        {
            "test_accuracy": float(accuracy),
            "density": final.density,
            "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "report": final.as_dict(),
        }
    )
    nonzero = sum(
        int(np.count_nonzero(np.asarray(w.kernel))) for w in plain.layers if hasattr(w, "kernel")
    )
    result["nonzero_kernel_weights_after_training"] = nonzero
    outputs.write_json("report.json", result)
    _keras_compat.print_msg(
        f"{FLAGS.method} {FLAGS.model}: density {final.density:.4f}, test accuracy "
        f"{accuracy:.4f}, report in {os.path.join(FLAGS.out, 'report.json')}"
    )


def run():
    """Entry point of the `tf-tradyx-prune` console script (and of examples/prune_at_init.py)."""
    _program.start(main, __name__)


if __name__ == "__main__":
    run()
