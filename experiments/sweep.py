"""The experiment harness behind docs/RESULTS.md: resumable sweeps of PX and TraDy with baselines.

    python experiments/sweep.py px          # ResNet-20 / CIFAR-10 pruning sweep (hours)
    python experiments/sweep.py px --long   # 10-epoch runs of dense, SNIP, SynFlow, PX at 98.2 %
    python experiments/sweep.py tradi       # MobileNetV2-w0.35 / CIFAR-10 strategies (about 2.5 h)
    python experiments/sweep.py tradi --long  # TraDy vs SU, 30 epochs on 50,000 images (a day)
    python experiments/sweep.py px-pretrained  # prune pretrained MobileNetV2-w0.35, fine-tune (2 h)
    python experiments/sweep.py all         # everything, claims-first order (a day of CPU)
    python experiments/sweep.py px --smoke  # minutes: the bundled sample, tiny settings
    python experiments/sweep.py px-layers   # re-derive per-layer rows of finished PX cells
    python experiments/report.py            # docs/RESULTS.md and its plots, from the JSON only

Every cell (cells.py) runs in a fresh process and writes one JSON file under experiments/results/
(smoke runs under experiments/results/smoke/, not committed); a cell whose file exists is not run
again, so an interrupted sweep resumes where it stopped. Inside a cell, training resumes from the
last finished epoch (`<suite>/partial/<cell>/`, a keras.callbacks.BackupAndRestore directory, see
resumable.py; commit it to carry an unfinished cell to another machine). After the cells, the
sweep rewrites the report. The harness runs no git command: commit the results yourself.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout: experiments, and its tf_tradyx

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_tradyx as tx  # noqa: E402
from experiments import cells, report  # noqa: E402
from experiments.cells import (  # noqa: E402
    PX_VARIANTS,
    ROUNDS,
    TRADI_BUDGET,
    TRADI_TRAIN_PER_CLASS,
    backup_dir,
    cell_id,
    cell_path,
)
from experiments.resumable import fit_resumable  # noqa: E402

# The full CIFAR-10 JPEG archive when the machine has it next to the checkout (as in
# benchmarks/_common.py), else the bundled sample.
SHARED_CIFAR = os.path.join(cells.ROOT, "..", "shared", "data", "cifar10-jpeg.tar.gz")
SHARED_CIFAR_SHA256 = "5613ef7672478fbdd04ff9ba40b7635b4a6c51f1513bfd71b1fb3adfdfd45253"


@keras.saving.register_keras_serializable(package="tf_tradyx_experiments")
class CoupledSGD(keras.optimizers.SGD):
    """SGD with L2 weight decay added to the gradient before momentum (PyTorch's SGD
    `weight_decay`), on every trainable variable; Keras' own `weight_decay` is decoupled."""

    def __init__(self, l2=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.l2 = l2

    def apply(self, grads, trainable_variables=None):
        variables = (
            trainable_variables if trainable_variables is not None else self._trainable_variables
        )
        grads = [g if g is None else g + self.l2 * v for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def _data(smoke):
    if smoke or not os.path.exists(SHARED_CIFAR):
        return (
            tx.data.cifar10_sample("train", shuffle_files=True, seed=0),
            tx.data.cifar10_sample("test"),
            "bundled sample",
        )
    return (
        tx.data.from_folder(SHARED_CIFAR, "train", sha256=SHARED_CIFAR_SHA256),
        tx.data.from_folder(SHARED_CIFAR, "test", sha256=SHARED_CIFAR_SHA256),
        "CIFAR-10 (../shared archive)",
    )


def _pruned_resnet20(cell, train):
    """The cell's ResNet-20, pruned at initialization (deterministic in the cell's seed)."""
    norm = tx.data.normalization("resnet20")
    keras.utils.set_random_seed(cell["seed"])
    masked = tx.pruning.wrap(tx.models.resnet20(num_classes=10))
    out = {}
    if cell["method"] != "dense":
        prune_ds = tx.data.balanced_subset(train, 10, 10).map(lambda x, y: (norm(x), y))
        method, extra = PX_VARIANTS.get(cell["method"], (cell["method"], {}))
        rounds = ROUNDS.get(method, 1)
        rounds = min(5, rounds) if cell.get("smoke") else rounds
        pruner = tx.pruning.get_pruner(method, rounds=rounds, seed=cell["seed"], verbose=0, **extra)
        start = time.time()
        pruner.prune(masked, cell["sparsity"], data=prune_ds)
        out["scoring_seconds"] = time.time() - start
        out["rounds"] = rounds
    pruning = tx.pruning.report(masked)
    out["layers"] = pruning.as_dict()["layers"]
    out["density"] = pruning.density
    return masked, out


def _mask_rows(layers):
    """What a pruning report's layer rows say about the masks alone (not the weights' signs)."""
    return [(r["name"], r["kept"], r["connected_outputs"]) for r in layers]


def refresh_px_layers(smoke=False):
    """Re-prunes finished PX cells whose layer rows predate a report field (no training); the
    per-layer kept counts must come out identical, which also checks that pruning is reproducible."""
    train, _, _ = _data(smoke)
    for path in sorted(glob.glob(os.path.join(cells.results_dir(smoke), "px", "*.json"))):
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
        print("refreshed", os.path.relpath(path, cells.ROOT), flush=True)


def run_px_cell(cell):
    """Prune ResNet-20 at initialization, train with the fixed protocol, evaluate."""
    smoke = cell.get("smoke", False)
    train, test, source = _data(smoke)
    norm = tx.data.normalization("resnet20")
    masked, pruned = _pruned_resnet20(cell, train)
    out = {"cell": cell, "data": source, **pruned}
    train_ds = tx.data.prepare(
        train,
        128,
        preprocess=norm,
        augment=tx.data.cifar_augment,
        shuffle_buffer=50_000,
        seed=cell["seed"],
        cache=True,
    )
    test_ds = tx.data.prepare(test, 500, preprocess=norm, cache=True)
    steps = sum(1 for _ in train_ds)
    lr = keras.optimizers.schedules.CosineDecay(0.1, steps * cell["epochs"])
    masked.compile(
        CoupledSGD(l2=1e-4, learning_rate=lr, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def same_masks(model):  # the layer rows below describe this run's pruning, so must the masks
        if _mask_rows(tx.pruning.report(model).as_dict()["layers"]) != _mask_rows(out["layers"]):
            raise RuntimeError(
                f"{backup_dir(cell)} holds other masks than this run's pruning; "
                "delete it to train the cell from scratch."
            )

    history, out["train_seconds"] = fit_resumable(
        masked, train_ds, cell["epochs"], backup_dir(cell), cell, verify=same_masks, verbose=2
    )
    _, accuracy = masked.evaluate(test_ds, verbose=0)
    plain = tx.pruning.strip(masked)
    out["nonzero_after_training"] = int(
        sum(np.count_nonzero(np.asarray(l.kernel)) for l in plain.layers if hasattr(l, "kernel"))
    )
    out.update(test_accuracy=float(accuracy), train_loss=history["loss"])
    return out


def _ranking_data(train, smoke, pre):
    subset = tx.data.balanced_subset(train, 20 if smoke else TRADI_TRAIN_PER_CLASS, 10)
    return tx.data.prepare(subset, 64, preprocess=pre, shuffle_buffer=10_000, seed=0, cache=True)


def tradi_ranking(make_data, smoke):
    """The MobileNetV2-w0.35 RGN ranking: 2 epochs of full fine-tuning on the training subset
    (`make_data()` builds it, only when the ranking is not on disk yet)."""
    path = os.path.join(cells.results_dir(smoke), "tradi", "ranking_mbv2-w0.35.json")
    if os.path.exists(path):
        return tx.sparse_update.LayerRanking.load(path)
    train = make_data()
    keras.utils.set_random_seed(0)
    model = tx.models.load_pretrained("mbv2-w0.35", num_classes=10)
    ranking = tx.sparse_update.rank_layers(
        model, train, epochs=1 if smoke else 2, optimizer=keras.optimizers.SGD(0.0125), verbose=0
    )
    ranking.info["data"] = "CIFAR-10 training subset of the TraDy sweep"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ranking.save(path)
    ranking.plot(path.replace(".json", ".png"))
    return ranking


def _held_out(train, per_class, count=10):
    """`count` training images outside the class-balanced subset (the next image of each class in
    turn): Velocity's watched images, which the authors hold out of training."""
    seen, out = {}, []
    for image, label in train.as_numpy_iterator():
        k = int(label)
        seen[k] = seen.get(k, 0) + 1
        if seen[k] == per_class + 1:
            out.append(image)
            if len(out) == count:
                break
    return np.stack(out)


def _tradi_protocol_data(cell, train, test, smoke):
    """The TraDy sweep's fine-tuning data for `cell`: (training subset, batched train, test)."""
    per_class = cell.get("train_per_class", 20 if smoke else TRADI_TRAIN_PER_CLASS)
    # Every training image when the cell asks for the split's 5,000 per class: no subset to build.
    subset = train if per_class >= 5_000 else tx.data.balanced_subset(train, per_class, 10)
    pre = tx.models.preprocess("mbv2-w0.35")
    train_ds = tx.data.prepare(
        subset,
        cell.get("batch", 64),
        preprocess=pre,
        augment=tf.image.random_flip_left_right,
        shuffle_buffer=10 * per_class,
        seed=cell["seed"],
        cache=True,
    )
    test_ds = tx.data.prepare(test, 250, preprocess=pre, cache=True)
    return per_class * 10, train_ds, test_ds


def _tradi_protocol_compile(model, cell, steps):
    """SGD without momentum, peak 0.0125 after the cell's warm-up epochs (1 unless it says), cosine."""
    epochs = cell["epochs"]
    warmup = min(cell.get("warmup_epochs", 1), epochs - 1) * steps
    lr = (
        keras.optimizers.schedules.CosineDecay(
            0.0, epochs * steps - warmup, warmup_target=0.0125, warmup_steps=warmup
        )
        if warmup
        else keras.optimizers.schedules.CosineDecay(0.0125, epochs * steps)
    )
    model.compile(
        keras.optimizers.SGD(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def run_tradi_cell(cell):
    """Fine-tune the pretrained MobileNetV2-w0.35 under 27,946 units with one strategy."""
    smoke = cell.get("smoke", False)
    train, test, source = _data(smoke)
    train_images, train_ds, test_ds = _tradi_protocol_data(cell, train, test, smoke)
    # Layers are ranked once per architecture: every protocol uses the sweep's ranking.
    ranking = tradi_ranking(
        lambda: _ranking_data(train, smoke, tx.models.preprocess("mbv2-w0.35")), smoke
    )
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
    if cell["strategy"] == "velocity":  # its budget counts weights only, as the authors count it
        held_out = _held_out(train, 20 if smoke else TRADI_TRAIN_PER_CLASS)
        pre = tx.models.preprocess("mbv2-w0.35")
        kwargs["data"] = np.stack([pre(image).numpy() for image in held_out])
    sparse = tx.sparse_update.wrap(model, **kwargs)
    _tradi_protocol_compile(sparse, cell, sum(1 for _ in train_ds))
    # The resampler draws each epoch's channels from (seed, epoch), so a resumed run draws the same;
    # the selection itself is a set of non-trainable variables, restored with the weights.
    history, train_seconds = fit_resumable(
        sparse,
        train_ds,
        cell["epochs"],
        backup_dir(cell),
        cell,
        verbose=2,
        callbacks=[tx.sparse_update.ChannelResampler(), tx.sparse_update.EfficiencyLogger()],
    )
    _, accuracy = sparse.evaluate(test_ds, verbose=0)
    return {
        "cell": cell,
        "data": source,
        "train_images": train_images,
        "test_accuracy": float(accuracy),
        "train_seconds": train_seconds,
        "efficiency": tx.sparse_update.efficiency(sparse).as_dict(),
        "layers": kwargs.get("layers"),
        "history": history,
    }


def run_px_pretrained_cell(cell):
    """Prune the ImageNet-pretrained MobileNetV2-w0.35 (new 10-class head, kept dense), then
    fine-tune every unpruned weight with the TraDy sweep's protocol, evaluate."""
    smoke = cell.get("smoke", False)
    train, test, source = _data(smoke)
    train_images, train_ds, test_ds = _tradi_protocol_data(cell, train, test, smoke)
    pre = tx.models.preprocess("mbv2-w0.35")
    keras.utils.set_random_seed(cell["seed"])
    # The scorers multiply through the head: it needs nonzero weights while they score (a zero head
    # makes every path score 0). Fine-tuning then starts from a zero head, as the dense cell does.
    model = tx.models.load_pretrained(
        "mbv2-w0.35", num_classes=10, head_initializer="glorot_uniform"
    )
    masked = tx.pruning.wrap(model, skip=["classifier"])
    prune_ds = tx.data.balanced_subset(train, 10, 10).map(lambda x, y: (pre(x), y))
    rounds = ROUNDS.get(cell["method"], 1)
    rounds = min(5, rounds) if smoke else rounds
    pruner = tx.pruning.get_pruner(cell["method"], rounds=rounds, seed=cell["seed"], verbose=0)
    start = time.time()
    pruned = pruner.prune(masked, cell["sparsity"], data=prune_ds)
    scoring_seconds = time.time() - start
    head = masked.get_layer("classifier")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    _tradi_protocol_compile(masked, cell, sum(1 for _ in train_ds))
    history, train_seconds = fit_resumable(
        masked, train_ds, cell["epochs"], backup_dir(cell), cell, verbose=2
    )
    _, accuracy = masked.evaluate(test_ds, verbose=0)
    after = tx.pruning.report(masked)
    revived = [
        w.name
        for w in tx.pruning.masked_layers(masked)
        for k, m in zip(w.kernels, w.masks)
        if np.any(np.asarray(k)[np.asarray(m) == 0] != 0)
    ]
    if revived or _mask_rows(after.as_dict()["layers"]) != _mask_rows(pruned.as_dict()["layers"]):
        raise RuntimeError(f"Fine-tuning changed the masks or revived pruned weights: {revived}")
    return {
        "cell": cell,
        "data": source,
        "train_images": train_images,
        "rounds": rounds,
        "scoring_seconds": scoring_seconds,
        "density": pruned.density,
        "collapsed": pruned.collapsed,
        "connected": pruned.connected,  # 0.0: the output no longer depends on the input
        "layers": pruned.as_dict()["layers"],
        "test_accuracy": float(accuracy),
        "train_seconds": train_seconds,
        "history": history,
    }


RUNNERS = {"px": run_px_cell, "tradi": run_tradi_cell, "px_pretrained": run_px_pretrained_cell}


def run_cell(cell):
    """Runs one cell in this process and writes its JSON; then drops its epoch checkpoint."""
    out = RUNNERS[cell["suite"]](cell)
    path = cell_path(cell)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, path)  # a cell exists only once it is complete
    shutil.rmtree(backup_dir(cell), ignore_errors=True)
    return path


# --- driver ----------------------------------------------------------------------------------------


def run_cells(todo):
    """Runs every cell of `todo` that has no JSON yet, each in a fresh process; returns how many
    finished. A failed cell is reported and skipped."""
    done = 0
    for cell in todo:
        path = cell_path(cell)
        if os.path.exists(path):
            continue
        print(f"== {cell_id(cell)}", flush=True)
        start = time.time()
        proc = subprocess.run(
            [sys.executable, __file__, "cell", json.dumps(cell)],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if proc.returncode:
            print(f"   failed (exit {proc.returncode}); the sweep goes on", flush=True)
            continue
        done += 1
        print(
            f"   done in {time.time() - start:.0f} s -> {os.path.relpath(path, cells.ROOT)}",
            flush=True,
        )
    return done


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="The report alone: python experiments/report.py"
    )
    parser.add_argument(
        "what", choices=["px", "tradi", "px-pretrained", "all", "cell", "px-layers"]
    )
    parser.add_argument("payload", nargs="?", help="cell: the cell as JSON")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--long",
        action="store_true",
        help="px: the 10-epoch, 3-seed runs; tradi: TraDy and SU at 30 epochs on every image",
    )
    args = parser.parse_args()
    if args.what == "cell":
        run_cell(json.loads(args.payload))
        return
    if args.what == "px-layers":
        refresh_px_layers(args.smoke)
        return
    if args.what == "all":
        if args.smoke or args.long:
            parser.error("all takes neither --smoke nor --long (it includes the long runs)")
        todo = cells.all_cells()
    elif args.what == "px":
        todo = cells.px_cells(args.smoke, args.long)
    elif args.what == "px-pretrained":
        todo = cells.px_pretrained_cells(args.smoke)
    elif args.long:
        todo = cells.tradi_long_cells(args.smoke)
    else:
        todo = cells.tradi_cells(args.smoke)
    run_cells(todo)
    print("wrote", report.write(smoke=args.smoke))


if __name__ == "__main__":
    main()
