"""The experiment harness behind docs/RESULTS.md: resumable sweeps of PX and TraDy with baselines.

    python benchmarks/sweep.py px              # ResNet-20 / CIFAR-10 pruning sweep (hours)
    python benchmarks/sweep.py px --long       # 10-epoch runs of dense, SNIP, SynFlow, PX at 98.2 %
    python benchmarks/sweep.py tradi           # MobileNetV2-w0.35 / CIFAR-10 strategies (about 2.5 h)
    python benchmarks/sweep.py all             # everything, claims-first order (a day of CPU)
    python benchmarks/sweep.py report          # docs/RESULTS.md and its plots, from the JSON only
    python benchmarks/sweep.py px --smoke      # minutes: the bundled sample, tiny settings
    python benchmarks/sweep.py px-layers       # re-derive per-layer rows of finished PX cells

Every cell runs in a fresh process and writes one JSON file under benchmarks/results/sweep/ (smoke
runs under benchmarks/results/smoke/, not committed); a cell whose file exists is not run again, so
an interrupted sweep resumes where it stopped. Inside a cell, training resumes from the last finished
epoch (`<suite>/partial/<cell>.npz`, see resumable.py; commit it to carry an unfinished cell to
another machine). `--commit` commits each finished cell's JSON.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

PX_METHODS = ["dense", "random", "magnitude", "snip", "grasp", "synflow", "itersnip", "px"]
# Variants beyond the methods: name -> (pruner, keyword arguments). "px_floor" is PX with a
# per-layer floor, the remedy for the residual-branch collapse that RESULTS.md reports.
PX_VARIANTS = {"px_floor": ("px", {"min_density": 0.005})}
ITERATIVE = {"synflow", "itersnip", "px"}
PX_SPARSITIES = [0.8926, 0.982, 0.7379, 0.956]  # the last two "if time allows"
LONG_METHODS = ["px", "synflow", "snip", "dense"]
TRADI_STRATEGIES = ["full", "classifier", "bias", "su", "static_full_random", "dynamic_full_random",
                    "static_topk_random", "tradi", "dynamic_det_rgn"]
TRADI_TWO_SEEDS = {"tradi", "su", "static_topk_random", "full"}
TRADI_BUDGET = 27_946
TRADI_TRAIN_PER_CLASS = 1_000   # 10,000 images, class-balanced, fixed
TRADI_EPOCHS = 9                # ~2.4 h of training for the 13 runs on 2 cores (6 epochs measured 1.5 h)


def results_dir(smoke):
    return os.path.join(HERE, "results", "smoke" if smoke else "sweep")


# --- cells -----------------------------------------------------------------------------------------

def px_cells(smoke, long_runs):
    if smoke:
        return [{"suite": "px", "method": m, "sparsity": 0.9, "seed": 0, "epochs": 1, "smoke": True}
                for m in ("dense", "random", "synflow", "px")]
    if long_runs:  # The claim compares PX, SynFlow and SNIP over seeds; dense is the reference.
        order = [(m, s) for s in (0, 1, 2) for m in LONG_METHODS if m != "dense"]
        order += [("dense", s) for s in (0, 1, 2)]
        return [{"suite": "px", "method": m, "sparsity": 0.982, "seed": s, "epochs": 10}
                for m, s in order]
    cells = [{"suite": "px", "method": "dense", "sparsity": 0.0, "seed": 0, "epochs": 3}]
    # The claims are judged at the highest sparsity: its cells run first, PX and SynFlow leading.
    order = ["px", "synflow", "snip", "random", "magnitude", "itersnip", "grasp"]
    for sparsity in sorted(PX_SPARSITIES, key=lambda s: s != 0.982):
        cells += [{"suite": "px", "method": m, "sparsity": sparsity, "seed": 0, "epochs": 3}
                  for m in order]
        if sparsity == 0.8926:  # Both required sparsities are done: the variants, at 98.2 %.
            cells += [{"suite": "px", "method": m, "sparsity": 0.982, "seed": 0, "epochs": 3}
                      for m in PX_VARIANTS]
    return cells


def tradi_cells(smoke):
    if smoke:
        return [{"suite": "tradi", "strategy": s, "seed": 0, "epochs": 1, "smoke": True}
                for s in ("classifier", "su", "tradi")]
    cells = [{"suite": "tradi", "strategy": s, "seed": 0, "epochs": TRADI_EPOCHS}
             for s in TRADI_STRATEGIES]
    cells += [{"suite": "tradi", "strategy": s, "seed": 1, "epochs": TRADI_EPOCHS}
              for s in TRADI_STRATEGIES if s in TRADI_TWO_SEEDS]
    return cells


def all_cells():
    """Every cell of RESULTS.md in the order that settles the claims soonest: the PX sweep at the
    two required sparsities, the TraDy sweep, the 10-epoch PX runs, then the optional sparsities."""
    px = px_cells(False, False)
    required = [c for c in px if c["sparsity"] in (0.0, 0.982, 0.8926)]
    optional = [c for c in px if c not in required]
    return required + tradi_cells(False) + px_cells(False, True) + optional


def cell_id(cell):
    if cell["suite"] == "px":
        return f"{cell['method']}_s{cell['sparsity']:.4f}_seed{cell['seed']}_e{cell['epochs']}"
    return f"{cell['strategy']}_seed{cell['seed']}_e{cell['epochs']}"


def cell_path(cell):
    return os.path.join(results_dir(cell.get("smoke", False)), cell["suite"], cell_id(cell) + ".json")


def partial_path(cell):
    """The epoch checkpoint of an unfinished cell (deleted once its JSON is written)."""
    return os.path.join(results_dir(cell.get("smoke", False)), cell["suite"], "partial",
                        cell_id(cell) + ".npz")


def _data(smoke):
    import tf_tradyx as tx
    from _common import SHARED_CIFAR, SHARED_CIFAR_SHA256
    if smoke or not os.path.exists(SHARED_CIFAR):
        return tx.data.cifar10_sample("train", shuffle_files=True, seed=0), \
            tx.data.cifar10_sample("test"), "bundled sample"
    return (tx.data.from_folder(SHARED_CIFAR, "train", sha256=SHARED_CIFAR_SHA256),
            tx.data.from_folder(SHARED_CIFAR, "test", sha256=SHARED_CIFAR_SHA256),
            "CIFAR-10 (../shared archive)")


def _pruned_resnet20(cell, train):
    """The cell's ResNet-20, pruned at initialization (deterministic in the cell's seed)."""
    import keras

    import tf_tradyx as tx
    norm = tx.data.normalization("resnet20")
    keras.utils.set_random_seed(cell["seed"])
    masked = tx.pruning.wrap(tx.models.resnet20(num_classes=10))
    out = {}
    if cell["method"] != "dense":
        prune_ds = tx.data.balanced_subset(train, 10, 10).map(lambda x, y: (norm(x), y))
        method, extra = PX_VARIANTS.get(cell["method"], (cell["method"], {}))
        rounds = (5 if cell.get("smoke") else 100) if method in ITERATIVE else 1
        pruner = tx.pruning.get_pruner(method, rounds=rounds, seed=cell["seed"], verbose=0, **extra)
        start = time.time()
        pruner.prune(masked, cell["sparsity"], data=prune_ds)
        out["scoring_seconds"] = time.time() - start
        out["rounds"] = rounds
    report = tx.pruning.report(masked)
    out["layers"] = report.as_dict()["layers"]
    out["density"] = report.density
    return masked, out


def _mask_rows(layers):
    """What a pruning report's layer rows say about the masks alone (not the weights' signs)."""
    return [(r["name"], r["kept"], r["connected_outputs"]) for r in layers]


def refresh_px_layers(smoke=False):
    """Re-prunes finished PX cells whose layer rows predate a report field (no training); the
    per-layer kept counts must come out identical, which also checks that pruning is reproducible."""
    train, _, _ = _data(smoke)
    for path in sorted(glob.glob(os.path.join(results_dir(smoke), "px", "*.json"))):
        with open(path) as f:
            out = json.load(f)
        if out["cell"]["method"] == "dense" or all("kept_positive" in r for r in out["layers"]):
            continue
        _, fresh = _pruned_resnet20(out["cell"], train)
        if _mask_rows(fresh["layers"]) != _mask_rows(out["layers"]):
            raise RuntimeError(f"{path}: re-pruning gave different masks; not updated.")
        out["layers"] = fresh["layers"]
        with open(path + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(path + ".tmp", path)
        print("refreshed", os.path.relpath(path, ROOT), flush=True)


def run_px_cell(cell):
    """Prune ResNet-20 at initialization, train with the fixed protocol, evaluate."""
    import keras
    import numpy as np

    import tf_tradyx as tx
    from _common import CoupledSGD
    from resumable import fit_resumable

    smoke = cell.get("smoke", False)
    train, test, source = _data(smoke)
    norm = tx.data.normalization("resnet20")
    masked, pruned = _pruned_resnet20(cell, train)
    out = {"cell": cell, "data": source, **pruned}
    train_ds = tx.data.prepare(train, 128, preprocess=norm, augment=tx.data.cifar_augment,
                               shuffle_buffer=50_000, seed=cell["seed"], cache=True)
    test_ds = tx.data.prepare(test, 500, preprocess=norm, cache=True)
    steps = sum(1 for _ in train_ds)
    lr = keras.optimizers.schedules.CosineDecay(0.1, steps * cell["epochs"])
    masked.compile(CoupledSGD(l2=1e-4, learning_rate=lr, momentum=0.9),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])

    def same_masks(model):  # the layer rows below describe this run's pruning, so must the masks
        if _mask_rows(tx.pruning.report(model).as_dict()["layers"]) != _mask_rows(out["layers"]):
            raise RuntimeError(f"{partial_path(cell)} holds other masks than this run's pruning; "
                               "delete it to train the cell from scratch.")

    history, out["train_seconds"] = fit_resumable(masked, train_ds, cell["epochs"], partial_path(cell),
                                                  cell, verify=same_masks, verbose=2)
    _, accuracy = masked.evaluate(test_ds, verbose=0)
    plain = tx.pruning.strip(masked)
    out["nonzero_after_training"] = int(sum(np.count_nonzero(np.asarray(l.kernel))
                                            for l in plain.layers if hasattr(l, "kernel")))
    out.update(test_accuracy=float(accuracy), train_loss=history["loss"])
    return out


def tradi_ranking(train, smoke):
    """The MobileNetV2-w0.35 RGN ranking: 2 epochs of full fine-tuning on the training subset."""
    import keras

    import tf_tradyx as tx
    path = os.path.join(results_dir(smoke), "tradi", "ranking_mbv2-w0.35.json")
    if os.path.exists(path):
        return tx.sparse_update.LayerRanking.load(path)
    keras.utils.set_random_seed(0)
    model = tx.models.load_pretrained("mbv2-w0.35", num_classes=10)
    ranking = tx.sparse_update.rank_layers(model, train, epochs=1 if smoke else 2,
                                           optimizer=keras.optimizers.SGD(0.0125), verbose=0)
    ranking.info["data"] = "CIFAR-10 training subset of the TraDy sweep"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ranking.save(path)
    ranking.plot(path.replace(".json", ".png"))
    return ranking


def run_tradi_cell(cell):
    """Fine-tune the pretrained MobileNetV2-w0.35 under 27,946 units with one strategy."""
    import keras

    import tf_tradyx as tx
    from resumable import fit_resumable

    smoke = cell.get("smoke", False)
    train, test, source = _data(smoke)
    per_class = 20 if smoke else TRADI_TRAIN_PER_CLASS
    subset = tx.data.balanced_subset(train, per_class, 10)
    pre = tx.models.preprocess("mbv2-w0.35")
    flip = lambda x: __import__("tensorflow").image.random_flip_left_right(x)  # noqa: E731
    train_ds = tx.data.prepare(subset, 64, preprocess=pre, augment=flip, shuffle_buffer=10_000,
                               seed=cell["seed"], cache=True)
    test_ds = tx.data.prepare(test, 250, preprocess=pre, cache=True)
    # The subset is in class order (the folder's): the ranking run must shuffle it like training.
    ranking = tradi_ranking(tx.data.prepare(subset, 64, preprocess=pre, shuffle_buffer=10_000, seed=0,
                                            cache=True), smoke)
    keras.utils.set_random_seed(cell["seed"])
    model = tx.models.load_pretrained("mbv2-w0.35", num_classes=10)
    kwargs = {"strategy": cell["strategy"], "seed": cell["seed"]}
    if cell["strategy"] in ("tradi", "static_topk_random"):
        kwargs["layers"] = ranking.top_k(0.97)
    if cell["strategy"] == "su":
        kwargs["scheme"] = "mbv2-w0.35/50kb"
    elif cell["strategy"] not in ("full", "classifier", "bias"):
        kwargs["budget"] = TRADI_BUDGET
    if cell["strategy"] == "dynamic_det_rgn":
        kwargs["data"] = train_ds
    sparse = tx.sparse_update.wrap(model, **kwargs)
    steps = sum(1 for _ in train_ds)
    epochs = cell["epochs"]
    warmup = min(1, epochs - 1) * steps
    lr = (keras.optimizers.schedules.CosineDecay(0.0, epochs * steps - warmup, warmup_target=0.0125,
                                                 warmup_steps=warmup) if warmup
          else keras.optimizers.schedules.CosineDecay(0.0125, epochs * steps))
    sparse.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    # The resampler draws each epoch's channels from (seed, epoch), so a resumed run draws the same.
    history, train_seconds = fit_resumable(
        sparse, train_ds, epochs, partial_path(cell), cell, verbose=2,
        callbacks=[tx.sparse_update.ChannelResampler(), tx.sparse_update.EfficiencyLogger()])
    _, accuracy = sparse.evaluate(test_ds, verbose=0)
    return {"cell": cell, "data": source, "train_images": per_class * 10,
            "test_accuracy": float(accuracy), "train_seconds": train_seconds,
            "efficiency": tx.sparse_update.efficiency(sparse).as_dict(),
            "layers": kwargs.get("layers"),
            "history": history}


# --- driver ----------------------------------------------------------------------------------------

def run_cells(cells, commit):
    done = 0
    for cell in cells:
        path = cell_path(cell)
        if os.path.exists(path):
            continue
        print(f"== {cell_id(cell)}", flush=True)
        start = time.time()
        proc = subprocess.run([sys.executable, __file__, "cell", json.dumps(cell)],
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if proc.returncode:
            print(f"   failed (exit {proc.returncode}); the sweep goes on", flush=True)
            continue
        done += 1
        print(f"   done in {time.time() - start:.0f} s -> {os.path.relpath(path, ROOT)}", flush=True)
        if commit:
            paths = [path]
            if subprocess.run(["git", "ls-files", "--error-unmatch", partial_path(cell)], cwd=ROOT,
                              capture_output=True).returncode == 0:
                paths.append(partial_path(cell))  # a committed checkpoint: commit its removal too
            subprocess.run(["git", "add", "-A", "--", *paths], cwd=ROOT)
            subprocess.run(["git", "commit", "-q", "-m", f"Sweep cell {cell['suite']}/{cell_id(cell)}",
                            "--", *paths], cwd=ROOT)
    return done


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["px", "tradi", "all", "report", "cell", "px-layers"])
    parser.add_argument("payload", nargs="?")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--long", action="store_true", help="px: the 10-epoch, 3-seed runs")
    parser.add_argument("--commit", action="store_true", help="git-commit each finished cell")
    args = parser.parse_args()
    if args.what == "cell":
        cell = json.loads(args.payload)
        out = run_px_cell(cell) if cell["suite"] == "px" else run_tradi_cell(cell)
        path = cell_path(cell)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, path)  # a cell exists only once it is complete
        if os.path.exists(partial_path(cell)):
            os.remove(partial_path(cell))
        return
    if args.what == "px-layers":
        refresh_px_layers(args.smoke)
        return
    if args.what == "report":
        import results_report
        print("wrote", results_report.write(smoke=args.smoke))
        return
    if args.what == "all":
        if args.smoke or args.long:
            parser.error("all takes neither --smoke nor --long (it includes the long runs)")
        cells = all_cells()
    else:
        cells = px_cells(args.smoke, args.long) if args.what == "px" else tradi_cells(args.smoke)
    run_cells(cells, args.commit)
    import results_report
    print("wrote", results_report.write(smoke=args.smoke))


if __name__ == "__main__":
    main()

