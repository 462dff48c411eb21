"""Fine-tune a pretrained tinyML network under a memory budget (TraDy or a baseline strategy).

    tf-tradyx-finetune --model=mbv2-w0.35 --data_dir=cifar10-jpeg.tar.gz \
        --budget=27946 --strategy=tradi --epochs=20 --out=out/tradi_mbv2

Data: --dataset names a TFDS dataset or "cifar10_sample" (bundled, offline); --data_dir reads the
class-folder layout root/{train,test}/<class>/*.jpg from a directory or a .tar.gz. --budget takes
memory units (27946) or bytes (109KiB, 111784B). Layers for "tradi"/"static_topk_random" come from
--layers_from (a ranking JSON); without it, a ranking is computed on the training data first and
saved as ranking.json in --out. Writes results.json with accuracy and efficiency per epoch.
"""

import os
import time

import keras
from absl import flags

import tf_tradyx as tx
from tf_tradyx import _keras_compat
from tf_tradyx.cli import _program

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model",
    "mbv2-w0.35",
    "mbv2-w0.35, mcunet-in1, proxyless-w0.3, or a .keras file (inputs in [-1, 1]).",
)
flags.DEFINE_string(
    "dataset", "cifar10_sample", "TFDS name, or cifar10_sample for the bundled sample."
)
flags.DEFINE_string("data_dir", None, "Class-folder directory or .tar.gz (overrides --dataset).")
flags.DEFINE_string("budget", "27946", "Memory budget: units, or bytes with a suffix (109KiB).")
flags.DEFINE_enum(
    "strategy",
    "tradi",
    list(tx.sparse_update.STRATEGIES),
    "Selection strategy.",
)
flags.DEFINE_string(
    "scheme", None, "For --strategy=su: a paper scheme name (default: the model's)."
)
flags.DEFINE_string("layers_from", None, "Layer-ranking JSON (tx.sparse_update.LayerRanking).")
flags.DEFINE_float("coverage", 0.97, "Share of total RGN the preselected layers must hold.")
flags.DEFINE_integer("rank_epochs", 1, "Epochs of the ranking run when --layers_from is not given.")
flags.DEFINE_integer("epochs", 10, "Fine-tuning epochs.")
flags.DEFINE_integer("warmup_epochs", 5, "Linear warm-up epochs (capped below --epochs).")
flags.DEFINE_float("lr", 0.0125, "Peak learning rate (SGD without momentum, cosine decay).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("input_size", 128, "Input resolution (multiple of 32).")
flags.DEFINE_integer("max_train", None, "Use only the first N training images (quick runs).")
flags.DEFINE_integer("max_test", None, "Evaluate on the first N test images only.")
flags.DEFINE_integer("seed", 0, "Seed for the head, the channel sampler and the data order.")
flags.DEFINE_string("out", "out/finetune_under_budget", "Output directory.")
_program.require_at_least(1, "epochs", "rank_epochs", "batch_size")
_program.require_at_least(0, "warmup_epochs")
_program.require_at_least(1, "max_train", "max_test", unset_ok=True)
flags.register_validator("lr", lambda v: v > 0, message="--lr must be > 0.")
flags.register_validator(
    "coverage", lambda c: 0.0 < c <= 1.0, message="--coverage must lie in (0, 1]."
)
flags.register_validator(
    "input_size",
    lambda n: n >= 32 and n % 32 == 0,
    message="--input_size must be a multiple of 32 (>= 32).",
)

flags.register_validator(
    "budget",
    _program.budget_is_readable,
    message="--budget must be positive memory units (27946) or bytes with a suffix (109KiB, "
    "111784B, 0.1MB).",
)

DEFAULT_SCHEMES = {
    "mbv2-w0.35": "mbv2-w0.35/50kb",
    "mcunet-in1": "mcunet-in1/50kb",
    "proxyless-w0.3": "proxyless-w0.3/50kb",
}


def _model(num_classes):
    if FLAGS.model.endswith(".keras"):
        model = keras.models.load_model(FLAGS.model)
        if tx.sparse_update.sparse_layers(model):
            model = tx.sparse_update.strip(model)
        return model, "loaded"
    return tx.models.load_pretrained(
        FLAGS.model, num_classes=num_classes, input_size=FLAGS.input_size
    ), FLAGS.model


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    outputs = tx.run_outputs.RunOutputs(
        FLAGS.out, ["ranking.json", "results.json"], inputs=_program.named_files()
    )  # --out is checked now; files the flags name are never removed
    with outputs:
        _run(outputs)


def _run(outputs):
    train, test, num_classes = tx.data.train_test(FLAGS.dataset, FLAGS.data_dir, FLAGS.seed)
    if FLAGS.max_train:
        train = train.take(FLAGS.max_train)
    if FLAGS.max_test:
        test = test.take(FLAGS.max_test)
    model, name = _model(num_classes)
    size = int(model.inputs[0].shape[1])
    pre = tx.models.preprocess(name if name != "loaded" else "mbv2-w0.35", input_size=size)
    train_ds, test_ds = _program.fine_tuning_data(
        train, test, pre, FLAGS.batch_size, FLAGS.seed, test_batch_size=256
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    costs = tx.sparse_update.cost_table(model)
    budget = tx.sparse_update.parse_budget(FLAGS.budget)
    result = {
        "model": FLAGS.model,
        "dataset": FLAGS.data_dir or FLAGS.dataset,
        "strategy": FLAGS.strategy,
        "budget_units": budget,
        "full_units": costs.full_units,
        "seed": FLAGS.seed,
        "epochs": FLAGS.epochs,
        "lr": FLAGS.lr,
    }

    kwargs = {"strategy": FLAGS.strategy, "seed": FLAGS.seed}
    if FLAGS.strategy in ("tradi", "static_topk_random"):
        if FLAGS.layers_from:
            ranking = tx.sparse_update.LayerRanking.load(FLAGS.layers_from)
        else:
            start = time.time()
            _keras_compat.print_msg(
                "Ranking layers by RGN (once per architecture; --layers_from skips this):"
            )
            ranking = tx.sparse_update.rank_layers(
                model, train_ds, epochs=FLAGS.rank_epochs, loss=loss, verbose=1
            )
            ranking.save(outputs.path("ranking.json"))
            result["ranking_seconds"] = round(time.time() - start, 2)
        ranking.check_model(model)
        kwargs["layers"] = ranking.top_k(coverage=FLAGS.coverage)
        result["layers"] = kwargs["layers"]
    if FLAGS.strategy in ("dynamic_det_rgn", "static_det_rgn"):
        kwargs["data"] = train_ds
    if FLAGS.strategy == "su":
        kwargs["scheme"] = FLAGS.scheme or DEFAULT_SCHEMES.get(name)
    if FLAGS.strategy not in ("su", "full", "classifier", "bias"):
        kwargs["budget"] = budget
    sparse = tx.sparse_update.wrap(model, **kwargs)

    steps = sum(1 for _ in train_ds)
    warmup = min(FLAGS.warmup_epochs, FLAGS.epochs - 1) * steps
    total = FLAGS.epochs * steps
    if warmup:
        lr = keras.optimizers.schedules.CosineDecay(
            0.0, total - warmup, warmup_target=FLAGS.lr, warmup_steps=warmup
        )
    else:
        lr = keras.optimizers.schedules.CosineDecay(FLAGS.lr, total)
    sparse.compile(keras.optimizers.SGD(lr), loss, metrics=["accuracy"])
    start = time.time()
    history = sparse.fit(
        train_ds,
        epochs=FLAGS.epochs,
        validation_data=test_ds,
        verbose=2,
        callbacks=[tx.sparse_update.ChannelResampler(), tx.sparse_update.EfficiencyLogger()],
    )
    result["train_seconds"] = round(time.time() - start, 2)
    _, accuracy = sparse.evaluate(test_ds, verbose=0)
    eff = tx.sparse_update.efficiency(sparse)
    result.update(
        {
            "test_accuracy": float(accuracy),
            "efficiency": eff.as_dict(),
            "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        }
    )
    outputs.write_json("results.json", result)
    _keras_compat.print_msg(
        f"{FLAGS.strategy} on {FLAGS.model}: test accuracy {accuracy:.4f}; last selection "
        f"{eff.units:,} units ({eff.units / eff.full_units:.1%} of full fine-tuning), activation "
        f"sparsity {eff.activation_sparsity:.1%}, weight-derivative sparsity "
        f"{eff.weight_derivative_sparsity:.1%}; results in {os.path.join(FLAGS.out, 'results.json')}"
    )


def run():
    """Entry point of the `tf-tradyx-finetune` console script (and of examples/finetune_under_budget.py)."""
    _program.start(main, __name__)


if __name__ == "__main__":
    run()
