"""Per-layer density profiles of every method on ResNet-20 at the paper's sparsities.

    python benchmarks/layer_profiles.py [--sparsities=0.8926,0.982] [--methods=px,synflow,...]

Prints one table per sparsity (density and connected output channels per layer), adds the
Synaptic-Flow implementation's SynFlow profile measured in tests/testdata for comparison, and
writes benchmarks/results/layer_profiles.{json,png}.
"""

import json
import os

import _common
import keras
import numpy as np
from absl import app, flags

import tf_tradyx as tx

FLAGS = flags.FLAGS
flags.DEFINE_list("sparsities", ["0.8926", "0.982"], "Target sparsities.")
flags.DEFINE_list("methods", ["px", "synflow", "snip", "grasp", "magnitude"], "Methods.")
flags.DEFINE_integer("rounds", 100, "Rounds for the iterative methods (px, synflow, itersnip).")

REFERENCE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "tests",
    "testdata",
    "synaptic_flow_synflow_resnet20.json",
)


def main(argv):
    del argv
    data, source = _common.pruning_batch()
    with open(REFERENCE) as f:
        reference = json.load(f)["profiles"]
    results = {}
    for sparsity in FLAGS.sparsities:
        profiles = {}
        for method in FLAGS.methods:
            keras.utils.set_random_seed(0)
            masked = tx.pruning.wrap(tx.models.resnet20())
            rounds = FLAGS.rounds if method in ("px", "synflow", "itersnip") else 1
            report = tx.pruning.get_pruner(method, rounds=rounds, verbose=False).prune(
                masked, float(sparsity), data
            )
            profiles[method] = report.rows
        names = [
            r["name"].replace("_conv/kernel", "").replace("/kernel", "")
            for r in profiles[FLAGS.methods[0]]
        ]
        ref = reference.get(sparsity, {}).get("mean")
        print(f"\nResNet-20, sparsity {sparsity}: density (connected output channels)\n")
        header = (
            f"{'layer':<26}"
            + "".join(f"{m:>16}" for m in FLAGS.methods)
            + (f"{'Synaptic-Flow':>15}" if ref else "")
        )
        print(header)
        for i, name in enumerate(names):
            cells = "".join(
                f"{profiles[m][i]['density']:>8.4f} ({profiles[m][i]['connected_outputs']:.2f})"
                for m in FLAGS.methods
            )
            print(f"{name:<26}{cells}" + (f"{ref[i]:>15.4f}" if ref else ""))
        results[sparsity] = {
            "layers": names,
            "synaptic_flow_synflow": ref,
            "profiles": {
                m: [{k: r[k] for k in ("density", "connected_outputs", "kept")} for r in rows]
                for m, rows in profiles.items()
            },
        }
        if ref and "synflow" in profiles:
            diff = np.abs(np.array([r["density"] for r in profiles["synflow"]]) - np.array(ref))
            print(f"SynFlow vs Synaptic-Flow: max |density difference| {diff.max():.4f}")
            results[sparsity]["synflow_max_abs_diff"] = float(diff.max())
    path = _common.write_json("layer_profiles.json", {"data": source, "results": results})
    print(f"\nwrote {path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(len(results), 1, figsize=(11, 3.6 * len(results)), squeeze=False)
    for ax, (sparsity, res) in zip(axes[:, 0], results.items()):
        for method, rows in res["profiles"].items():
            ax.plot([max(r["density"], 1e-4) for r in rows], "o-", ms=3, label=method)
        if res["synaptic_flow_synflow"]:
            ax.plot(res["synaptic_flow_synflow"], "k--", lw=1, label="SynFlow (Synaptic-Flow code)")
        ax.set_yscale("log")
        ax.set_ylim(8e-5, 1.2)
        ax.set_ylabel("density (empty = 1e-4)")
        ax.set_title(f"ResNet-20 per-layer density at sparsity {sparsity}", loc="left")
        ax.set_xticks(range(len(res["layers"])))
        ax.set_xticklabels(res["layers"], rotation=90, fontsize=7)
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    png = os.path.join(_common.RESULTS, "layer_profiles.png")
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


if __name__ == "__main__":
    app.run(main)
