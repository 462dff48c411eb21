"""Scoring time per round and for 100 rounds, PX and every baseline, ResNet-20, 100 CIFAR-10 images.

    python benchmarks/pruning_speed.py [--rounds=100] [--sparsity=0.982]

All methods run in one process, one after another, so the ratios are comparable on a noisy machine.
Prints a table and writes benchmarks/results/pruning_speed.json.
"""

import time

import _common
import keras
import numpy as np
from absl import app, flags

import tf_tradyx as tx
from tf_tradyx.pruning.pruner import Session  # not public: one scoring session reused across passes

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 100, "Rounds for the full pruning runs.")
flags.DEFINE_float("sparsity", 0.982, "Target sparsity of the full pruning runs.")
flags.DEFINE_integer("repeats", 10, "Scoring passes timed per method (median reported).")
flags.DEFINE_list(
    "methods",
    ["px", "synflow", "snip", "itersnip", "grasp", "magnitude", "random"],
    "Methods to time.",
)


def main(argv):
    del argv
    data, source = _common.pruning_batch()
    rows = []
    for method in FLAGS.methods:
        keras.utils.set_random_seed(0)
        masked = tx.pruning.wrap(tx.models.resnet20())
        pruner = tx.pruning.get_pruner(method, rounds=FLAGS.rounds, verbose=False)
        session = Session(pruner, masked, data)
        start = time.perf_counter()
        pruner._checked_scores(session)  # First pass: includes tracing.
        first = time.perf_counter() - start
        times = []
        for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            pruner._checked_scores(session)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        try:
            report = pruner.prune(masked, FLAGS.sparsity, data)
            total, density, refused = round(time.perf_counter() - start, 2), report.density, ""
        except ValueError as err:  # a pruner may refuse a round (e.g. GraSP's zero scores)
            total, density, refused = None, None, str(err).split(":")[1].strip()
        rows.append(
            {
                "method": method,
                "first_pass_s": round(first, 3),
                "score_pass_ms": round(1000 * float(np.median(times)), 1),
                f"prune_{FLAGS.rounds}_rounds_s": total,
                "density": None if density is None else round(density, 5),
                "refused": refused,
            }
        )
        print(rows[-1], flush=True)
    base = {r["method"]: r for r in rows}
    if "px" in base and "synflow" in base:
        key = f"prune_{FLAGS.rounds}_rounds_s"
        for r in rows:
            r["vs_synflow"] = None if r[key] is None else round(r[key] / base["synflow"][key], 2)
    columns = list(rows[0].keys())
    print(f"\nResNet-20, {len(data[0])} CIFAR-10 images ({source}), sparsity {FLAGS.sparsity}\n")
    print(_common.table(rows, columns))
    path = _common.write_json(
        "pruning_speed.json",
        {"rounds": FLAGS.rounds, "sparsity": FLAGS.sparsity, "data": source, "rows": rows},
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    app.run(main)
