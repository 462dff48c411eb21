"""Prune a pretrained tinyML network with PX, then fine-tune it under a memory budget with TraDy.

    tf-tradyx-prune-finetune --model=mbv2-w0.35 --sparsity=0.5 --budget=27946 \
        --dataset=cifar10_sample --epochs=8 --out=out/prune_then_finetune

Steps: load the ImageNet-pretrained network with a new head -> PX scores on 10 images per class of
the downstream training data and prunes to --sparsity -> RGN layer ranking (or --layers_from) ->
TraDy fine-tuning of the pruned model under --budget (pruned weights stay exactly zero) ->
evaluation -> strip of both wrappers -> a plain .keras file. Prints one summary table and writes
summary.json next to the model.
"""

import os
import time

import keras
import numpy as np
from absl import flags

import tf_tradyx as tx
from tf_tradyx import _keras_compat
from tf_tradyx.cli import _program

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "model",
    "mbv2-w0.35",
    ["mbv2-w0.35", "mcunet-in1", "proxyless-w0.3"],
    "Pretrained tinyML network.",
)
flags.DEFINE_string("dataset", "cifar10_sample", "TFDS name, or cifar10_sample (bundled, offline).")
flags.DEFINE_string("data_dir", None, "Class-folder directory or .tar.gz (overrides --dataset).")
flags.DEFINE_float("sparsity", 0.5, "PX target sparsity of the conv and dense kernels, in [0, 1).")
flags.DEFINE_integer("rounds", 20, "PX rounds.")
flags.DEFINE_string(
    "budget", "27946", "TraDy memory budget: units, or bytes with a suffix (109KiB)."
)
flags.DEFINE_bool("count_pruned", False, "Charge a channel for its pruned weights too.")
flags.DEFINE_string("layers_from", None, "Layer-ranking JSON; default: rank on the training data.")
flags.DEFINE_integer("epochs", 8, "Fine-tuning epochs.")
flags.DEFINE_float("lr", 0.0125, "Peak learning rate (SGD, 1 warm-up epoch, cosine decay).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("max_train", None, "Use only the first N training images.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("out", "out/prune_then_finetune", "Output directory.")
flags.register_validator(
    "sparsity",
    lambda s: 0.0 <= s < 1.0,
    message="--sparsity must be in [0, 1) (0.5 keeps half of the weights).",
)
flags.register_validator("lr", lambda v: v > 0, message="--lr must be > 0.")
_program.require_at_least(1, "epochs", "rounds", "batch_size")
_program.require_at_least(1, "max_train", unset_ok=True)


flags.register_validator(
    "budget",
    _program.budget_is_readable,
    message="--budget must be positive memory units (27946) or bytes with a suffix (109KiB).",
)


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    model_file = f"{FLAGS.model}_pruned_finetuned.keras"
    outputs = tx.run_outputs.RunOutputs(
        FLAGS.out,
        ["ranking.json", model_file, "summary.json", "density.png"],
        inputs=_program.named_files(),
    )  # --out is checked now, outputs land together at the end
    with outputs:
        _run(outputs, model_file)


def _run(outputs, model_file):
    started = time.time()
    train, test, num_classes = tx.data.train_test(FLAGS.dataset, FLAGS.data_dir, FLAGS.seed)
    if FLAGS.max_train:
        train = train.take(FLAGS.max_train)
    pre = tx.models.preprocess(FLAGS.model)
    prune_data = tx.data.balanced_subset(train, per_class=10, num_classes=num_classes)
    prune_data = prune_data.map(lambda x, y: (pre(x), y))
    train_ds, test_ds = _program.fine_tuning_data(
        train, test, pre, FLAGS.batch_size, FLAGS.seed, test_batch_size=250
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # 1. Pretrained network, new head; PX on 10 images per class. The head stays dense.
    model = tx.models.load_pretrained(
        FLAGS.model, num_classes=num_classes, head_initializer="glorot_uniform"
    )
    masked = tx.pruning.wrap(model, skip=["classifier"])
    t = time.time()
    _keras_compat.print_msg(
        f"PX: pruning {FLAGS.model} to {FLAGS.sparsity:.0%} sparsity on 10 images per class...",
    )
    report = tx.pruning.PXPruner(rounds=FLAGS.rounds, seed=FLAGS.seed, verbose=1).prune(
        masked, FLAGS.sparsity, data=prune_data
    )
    try:
        title = f"PX on {FLAGS.model} at sparsity {FLAGS.sparsity}"
        tx.pruning.density_figure(report, title).savefig(outputs.path("density.png"), dpi=120)
    except ImportError:
        pass  # the plots extra is not installed
    prune_seconds = time.time() - t
    # PX needs a nonzero head (its path products run through it); fine-tuning starts from a zero
    # head, so the first loss is log(classes) rather than whatever random logits give.
    head = masked.get_layer("classifier")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    masked.compile(metrics=["accuracy"], loss=loss)
    _, acc_before = masked.evaluate(test_ds, verbose=0)

    # 2. Layers by RGN, then TraDy on the pruned model.
    if FLAGS.layers_from:
        ranking = tx.sparse_update.LayerRanking.load(FLAGS.layers_from)
    else:
        _keras_compat.print_msg("RGN: ranking layers with one epoch of full fine-tuning...")
        ranking = tx.sparse_update.rank_layers(masked, train_ds, epochs=1, loss=loss, verbose=1)
        ranking.save(outputs.path("ranking.json"))
    budget = tx.sparse_update.parse_budget(FLAGS.budget)
    sparse = tx.sparse_update.wrap(
        masked,
        budget=budget,
        layers=ranking.top_k(0.97),
        strategy="tradi",
        seed=FLAGS.seed,
        count_pruned=FLAGS.count_pruned,
    )
    steps = sum(1 for _ in train_ds)
    warmup = steps if FLAGS.epochs > 1 else 0
    lr = (
        keras.optimizers.schedules.CosineDecay(
            0.0, FLAGS.epochs * steps - warmup, warmup_target=FLAGS.lr, warmup_steps=warmup
        )
        if warmup
        else keras.optimizers.schedules.CosineDecay(FLAGS.lr, FLAGS.epochs * steps)
    )
    sparse.compile(keras.optimizers.SGD(lr), loss, metrics=["accuracy"])
    t = time.time()
    report_epoch = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: _keras_compat.print_msg(
            f"epoch {e + 1}/{FLAGS.epochs}: loss {logs['loss']:.3f}, test accuracy "
            f"{logs['val_accuracy']:.2%}, {int(logs['sparse_update/units']):,} units in "
            f"{int(logs['sparse_update/layers_updated'])} layers",
        )
    )
    history = sparse.fit(
        train_ds,
        epochs=FLAGS.epochs,
        validation_data=test_ds,
        verbose=0,
        callbacks=[
            tx.sparse_update.ChannelResampler(),
            tx.sparse_update.EfficiencyLogger(),
            report_epoch,
        ],
    )
    train_seconds = time.time() - t
    _, acc_after = sparse.evaluate(test_ds, verbose=0)
    eff = tx.sparse_update.efficiency(sparse)

    # 3. Strip both wrappers and export an ordinary Keras model.
    plain = tx.pruning.strip(tx.sparse_update.strip(sparse))
    path = outputs.final_path(model_file)
    plain.save(outputs.path(model_file))
    kernels = [
        l.kernel.numpy() for l in plain.layers if hasattr(l, "kernel") and l.name != "classifier"
    ]
    zeros = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    summary = {
        "method": "px+tradi",
        "sparsity": FLAGS.sparsity,
        "model": FLAGS.model,
        "data": FLAGS.data_dir or FLAGS.dataset,
        "sparsity_target": FLAGS.sparsity,
        "sparsity_after_finetuning": zeros,
        "accuracy_before_finetuning": float(acc_before),
        "accuracy_after": float(acc_after),
        "budget_units": budget,
        "units_used": eff.units,
        "units_all_weights": eff.units_all_weights,
        "units_unpruned_weights": eff.units_unpruned_weights,
        "full_units": eff.full_units,
        "activation_sparsity": eff.activation_sparsity,
        "weight_derivative_sparsity": eff.weight_derivative_sparsity,
        "px_seconds": prune_seconds,
        "finetune_seconds": train_seconds,
        "total_seconds": time.time() - started,
        "model_file": path,
        "val_accuracy": [float(v) for v in history.history["val_accuracy"]],
        "pruning_report": report.as_dict()["totals"],
    }
    outputs.write_json("summary.json", summary)
    rows = [
        ("network", f"{FLAGS.model} (ImageNet-pretrained, new {num_classes}-class head)"),
        (
            "PX pruning",
            f"{FLAGS.sparsity:.0%} target, {FLAGS.rounds} rounds, {prune_seconds:.1f} s",
        ),
        ("kernel sparsity after fine-tuning", f"{zeros:.2%} (pruned weights stayed exactly 0)"),
        ("accuracy before fine-tuning", f"{acc_before:.2%}"),
        (
            "accuracy after TraDy",
            f"{acc_after:.2%} ({_program.count(FLAGS.epochs, 'epoch')}, {train_seconds:.0f} s)",
        ),
        ("memory budget", f"{budget:,} units ({budget * 4 / 1024:.1f} KiB of float32)"),
        (
            "units used (last epoch)",
            f"{eff.units:,} ({'all' if FLAGS.count_pruned else 'unpruned'}"
            f" weights counted; {eff.units_all_weights:,} counting all)",
        ),
        (
            "activation / weight-derivative sparsity",
            f"{eff.activation_sparsity:.1%} / {eff.weight_derivative_sparsity:.1%}",
        ),
        ("plain Keras model", path),
        ("summary", os.path.join(FLAGS.out, "summary.json")),
    ]
    width = max(len(k) for k, _ in rows)
    _keras_compat.print_msg("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    assert np.isfinite(acc_after)


def run():
    """Entry point of the `tf-tradyx-prune-finetune` console script (and of examples/prune_then_finetune.py)."""
    _program.start(main, __name__)


if __name__ == "__main__":
    run()
