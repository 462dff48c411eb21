"""Is PX's layer collapse on ResNet-20 an artefact of the BatchNorm statistics at initialization?

    python benchmarks/px_collapse.py [--sparsity=0.982] [--rounds=100]

Prunes ResNet-20 at initialization (no training) with PX and SynFlow, each twice: with the BN
moving statistics of a fresh network (mean 0, variance 1, so every BN path weight is ~1), and with
them set to the statistics of the pruning batch itself (what a data-aware BN would use). A PX run
with `min_density` shows the per-layer floor that prevents the collapse. Prints a table and writes
benchmarks/results/px_collapse.json, which docs/RESULTS.md quotes.
"""

import time

import _common
import keras
from absl import app, flags

import tf_tradyx as tx

FLAGS = flags.FLAGS
flags.DEFINE_float("sparsity", 0.982, "Target sparsity.")
flags.DEFINE_integer("rounds", 100, "Pruning rounds.")
flags.DEFINE_float("min_density", 0.005, "Per-layer floor of the guarded PX run.")

VARIANTS = [
    ("px", "init", 0.0),
    ("px", "calibrated", 0.0),
    ("synflow", "init", 0.0),
    ("synflow", "calibrated", 0.0),
    ("px", "init", None),
]


def calibrate_batch_norm(model, x):
    """Sets every BN layer's moving statistics to those of batch `x` (one forward pass in training
    mode with momentum 0); the momentum is restored afterwards."""
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 0.0
        model(x, training=True)
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m


def main(argv):
    del argv
    (x, y), source = _common.pruning_batch()
    rows = []
    for method, bn, floor in VARIANTS:
        floor = FLAGS.min_density if floor is None else floor
        keras.utils.set_random_seed(0)
        model = tx.models.resnet20(num_classes=10)
        if bn == "calibrated":
            calibrate_batch_norm(model, x)
        masked = tx.pruning.wrap(model)
        pruner = tx.pruning.get_pruner(
            method, rounds=FLAGS.rounds, min_density=floor, verbose=False
        )
        start = time.perf_counter()
        pruner.prune(masked, FLAGS.sparsity, data=(x, y))
        seconds = time.perf_counter() - start
        result = tx.pruning.report(masked)
        layers = result.rows
        empty = [name.split("/")[0] for name in result.collapsed]
        rows.append(
            {
                "method": method,
                "bn": bn,
                "min_density": floor,
                "empty": len(empty),
                "empty_layers": empty,
                "min_layer_density": round(min(r["density"] for r in layers), 4),
                "connected_outputs": round(
                    sum(r["connected_outputs"] for r in layers) / len(layers), 3
                ),
                "seconds": round(seconds, 1),
            }
        )
        print(rows[-1], flush=True)
    print(
        _common.table(
            rows,
            [
                "method",
                "bn",
                "min_density",
                "empty",
                "min_layer_density",
                "connected_outputs",
                "seconds",
            ],
        )
    )
    print(
        "wrote",
        _common.write_json(
            "px_collapse.json",
            {"data": source, "sparsity": FLAGS.sparsity, "rounds": FLAGS.rounds, "rows": rows},
        ),
    )


if __name__ == "__main__":
    app.run(main)
