"""Transformers: TraDy next to what transformer users pick today (LoRA, classifier-only), one run.

    python benchmarks/transformers.py            # ViT and BERT, six setups each, batch 16 (6 minutes)
    python benchmarks/transformers.py --batch 16,64   # and batch 64: the table of docs/benchmarks.md
    python benchmarks/transformers.py --quick    # tiny models, four setups: a smoke run (2 minutes)
    python benchmarks/transformers.py --jit      # the same, compiled with jit_compile=True (XLA)
    python benchmarks/transformers.py --batch 32 --models vit --setups full,lora4,tradi2

Two small KerasHub models with random weights and a Dense head: a ViT (`ViTBackbone`, 64 x 64
images, patch 8, 4 blocks, 4 heads, width 128, MLP 512; the head reads the class token) and a
BERT (`BertBackbone`, vocabulary 1,000, 4 layers, 4 heads, width 128, feed-forward 512, 64 tokens,
dict inputs token_ids/segment_ids/padding_mask; the head reads `pooled_output`). For each, at
one batch size, these setups are trained on seeded synthetic data:

- full: full fine-tuning (every weight trains);
- classifier: classifier-only (`backbone.trainable = False`, only the head trains);
- lora4, lora8: KerasHub's `backbone.enable_lora(rank)` (the LoRA A/B matrices of the query and
  value projections, and those projections' biases, train; and the head);
- tradi2, tradi10: TraDy over every selectable sublayer of the blocks (`cost_table(model).names`)
  at 2 % and 10 % of full fine-tuning's memory units, `wrap(..., seed=0)` with its defaults
  (recompute="auto"), a `ChannelResampler` drawing new channels every epoch.

Each setup runs in a fresh process: build, `model.fit` (3 epochs of 5 steps, Adam 1e-3,
jit_compile=False unless --jit) and then, after the peak was read, the bytes the traced backward
pass retains (`tx.sparse_update.memory.retained_bytes`, which works on any Keras model). Reported:
trainable parameters (variables the optimizer holds) and the parameters one step updates (for
TraDy only the sampled input channels of the wrapped kernels, plus the head), retained activation
bytes (activations and masks; parameters the backward pass reads are in the JSON), whole-process
peak RSS (VmHWM: TensorFlow's import, the model, tracing and training together), the median step
time of the epochs after the first (each step synchronised on its loss), and the loss of the first
and the last epoch as a sanity check. Ratios are against full fine-tuning of the same model.
Writes benchmarks/results/transformers.json (transformers_quick.json with --quick).
"""

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402
import keras  # noqa: E402
import keras_hub  # noqa: E402  (the `hub` extra)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_tradyx as tx  # noqa: E402

sp = tx.sparse_update
SETUPS = ("full", "classifier", "lora4", "lora8", "tradi2", "tradi10")
QUICK_SETUPS = ("full", "classifier", "lora4", "tradi10")
MODELS = ("vit", "bert")
NUM_CLASSES = 10
SIZES = {  # the ViT's and BERT's configurations: the full run's and --quick's
    False: {
        "vit": {"image": 64, "patch": 8, "layers": 4, "heads": 4, "hidden": 128, "mlp": 512},
        "bert": {"vocab": 1000, "layers": 4, "heads": 4, "hidden": 128, "mlp": 512, "seq": 64},
    },
    True: {
        "vit": {"image": 32, "patch": 8, "layers": 1, "heads": 2, "hidden": 32, "mlp": 64},
        "bert": {"vocab": 100, "layers": 1, "heads": 2, "hidden": 32, "mlp": 64, "seq": 16},
    },
}
EPOCHS = {False: (3, 5), True: (2, 3)}  # (epochs, steps per epoch)


def _peak_kb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def build(name, size):
    """(model, backbone): a KerasHub backbone with random weights inside a Functional model with
    a Dense head."""
    keras.utils.set_random_seed(0)
    if name == "vit":
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(size["image"], size["image"], 3),
            patch_size=size["patch"],
            num_layers=size["layers"],
            num_heads=size["heads"],
            hidden_dim=size["hidden"],
            mlp_dim=size["mlp"],
        )
        inputs = keras.Input((size["image"], size["image"], 3), name="images")
        features = backbone(inputs)[:, 0]  # the class token
    else:
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=size["vocab"],
            num_layers=size["layers"],
            num_heads=size["heads"],
            hidden_dim=size["hidden"],
            intermediate_dim=size["mlp"],
            max_sequence_length=size["seq"],
        )
        inputs = {
            n: keras.Input((size["seq"],), dtype="int32", name=n)
            for n in ("token_ids", "segment_ids", "padding_mask")
        }
        features = backbone(inputs)["pooled_output"]
    outputs = keras.layers.Dense(NUM_CLASSES, name="head")(features)
    return keras.Model(inputs, outputs), backbone


def synthetic(name, size, batch, batches=4):
    """Seeded synthetic data: `batches` distinct batches, repeated."""
    rng = np.random.default_rng(0)
    n = batch * batches
    if name == "vit":
        x = rng.uniform(-1, 1, (n, size["image"], size["image"], 3)).astype("float32")
    else:
        t = size["seq"]
        lengths = rng.integers(t // 4, t + 1, (n, 1))
        x = {
            "token_ids": rng.integers(0, size["vocab"], (n, t)).astype("int32"),
            "segment_ids": np.zeros((n, t), "int32"),
            "padding_mask": (np.arange(t)[None] < lengths).astype("int32"),
        }
    y = rng.integers(0, NUM_CLASSES, n).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()


def _size(v):
    return int(np.prod(v.shape))


def updated_per_step(model):
    """Parameters one step changes: every trainable variable, except that a wrapped kernel counts
    only its sampled input channels."""
    wrappers = sp.sparse_layers(model)
    sparse = {id(w.layer.kernel): w for w in wrappers}
    total = 0
    for v in model.trainable_variables:
        w = sparse.get(id(v))
        if w is None:
            total += _size(v)
        else:
            total += int(w.num_channels.numpy()) * _size(v) // w.in_channels
    return total


class StepClock(keras.callbacks.Callback):
    """Times every step, waiting for its loss (Keras dispatches steps asynchronously)."""

    def __init__(self):
        super().__init__()
        self.seconds = []  # per epoch, per step

    def on_epoch_begin(self, epoch, logs=None):
        self.seconds.append([])

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(keras.ops.convert_to_numpy((logs or {})["loss"]))
        self.seconds[-1].append(time.perf_counter() - self.start)


def child(config):
    name, setup, batch, quick = config["model"], config["setup"], config["batch"], config["quick"]
    size = SIZES[quick][name]
    model, backbone = build(name, size)
    out = {**config, "size": size}
    callbacks = []
    if setup == "classifier":
        backbone.trainable = False
    elif setup.startswith("lora"):
        backbone.enable_lora(int(setup[4:]))
    elif setup.startswith("tradi"):
        table = sp.cost_table(model)
        fraction = int(setup[5:]) / 100
        cheapest = min(r.units_per_channel for r in table)
        budget = max(int(fraction * table.full_units), cheapest)
        model = sp.wrap(model, budget=budget, layers=table.names, seed=0)
        callbacks.append(sp.ChannelResampler())
        out.update(
            budget=budget,
            full_units=table.full_units,
            layers=len(table.names),
            recompute=bool(sp.sampler_of(model).recompute),
        )
    elif setup != "full":
        raise ValueError(f"unknown setup {setup!r}")
    out["trainable_params"] = sum(_size(v) for v in model.trainable_variables)
    out["total_params"] = sum(_size(v) for v in model.weights)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=config["jit"],
    )
    epochs, steps = EPOCHS[quick]
    clock = StepClock()
    out["rss_before_fit_mb"] = _peak_kb() / 1024
    history = model.fit(
        synthetic(name, size, batch),
        epochs=epochs,
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[*callbacks, clock],
    )
    out["peak_rss_mb"] = _peak_kb() / 1024  # read before anything else traces
    later = [s for e in clock.seconds[1:] for s in e]
    out["step_seconds"] = float(np.median(later))
    out["step_min_seconds"] = float(np.min(later))  # the least disturbed by other load
    out["first_step_seconds"] = clock.seconds[0][0]  # tracing (and compiling, with --jit)
    out["loss"] = [float(v) for v in history.history["loss"]]
    out["updated_params"] = updated_per_step(model)
    if setup.startswith("tradi"):
        eff = sp.efficiency(model)
        out["efficiency"] = {
            k: getattr(eff, k)
            for k in ("units", "budget", "full_units", "channels", "layers_updated")
        }
        out["efficiency"]["weight_derivative_sparsity"] = float(eff.weight_derivative_sparsity)
    retained = sp.memory.retained_bytes(model, batch_size=batch)
    out["retained"] = retained
    out["retained_mb"] = (retained["activation"] + retained["mask"]) / 2**20
    return out


def _git():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = lambda *a: subprocess.run(  # noqa: E731
        ["git", *a], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    dirty = run("status", "--porcelain", "--", "tf_tradyx")
    return {"commit": run("rev-parse", "HEAD"), "library_uncommitted_changes": bool(dirty)}


def ratios(rows):
    """Each row against full fine-tuning and classifier-only training of its own model and batch."""
    for row in rows:
        if "error" in row:
            continue
        key = (row["model"], row["batch"])
        ref = {r["setup"]: r for r in rows if (r["model"], r["batch"]) == key and "error" not in r}
        full, clf = ref.get("full"), ref.get("classifier")
        if full:
            row["trainable_vs_full"] = row["trainable_params"] / full["trainable_params"]
            row["updated_vs_full"] = row["updated_params"] / full["updated_params"]
            row["retained_vs_full"] = row["retained_mb"] / full["retained_mb"]
            row["time_vs_full"] = row["step_seconds"] / full["step_seconds"]
        if clf:
            row["above_classifier_mb"] = row["peak_rss_mb"] - clf["peak_rss_mb"]
            if full:
                extra = full["peak_rss_mb"] - clf["peak_rss_mb"]
                row["saved_of_full"] = 1 - row["above_classifier_mb"] / extra if extra > 0 else None
    return rows


LABELS = {
    "full": "full fine-tuning",
    "classifier": "classifier only",
    "lora4": "LoRA r=4",
    "lora8": "LoRA r=8",
    "tradi2": "TraDy 2 %",
    "tradi10": "TraDy 10 %",
}


def _fmt(v, spec, suffix=""):
    return "-" if v is None else f"{v:{spec}}{suffix}"


def printable(rows):
    out = []
    for r in rows:
        base = {
            "model": r["model"],
            "batch": r["batch"],
            "setup": LABELS.get(r["setup"], r["setup"]),
        }
        if "error" in r:
            out.append({**base, "trainable": "FAILED", "updated/step": r["error_line"][:60]})
            continue
        rec = r.get("recompute")
        out.append(
            {
                **base,
                "trainable": f"{r['trainable_params']:,}",
                "updated/step": f"{r['updated_params']:,}",
                "upd x full": _fmt(r.get("updated_vs_full"), ".4f"),
                "retained MB": f"{r['retained_mb']:.2f}",
                "ret x full": _fmt(r.get("retained_vs_full"), ".3f"),
                "peak RSS MB": f"{r['peak_rss_mb']:.0f}",
                "vs clf MB": _fmt(r.get("above_classifier_mb"), "+.0f"),
                "saved of full": _fmt(
                    None if r.get("saved_of_full") is None else 100 * r["saved_of_full"],
                    ".0f",
                    " %",
                ),
                "step s": f"{r['step_seconds']:.3f}",
                "step x full": _fmt(r.get("time_vs_full"), ".2f"),
                "min step s": f"{r['step_min_seconds']:.3f}",
                "loss first->last": f"{r['loss'][0]:.3f}->{r['loss'][-1]:.3f}",
                "recompute": "" if rec is None else ("yes" if rec else "no"),
            }
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny models, four setups")
    parser.add_argument("--batch", default="16", help="batch size(s), comma-separated")
    parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--setups", default=None, help=f"comma-separated, of {', '.join(SETUPS)}")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    models = args.models.split(",")
    setups = args.setups.split(",") if args.setups else QUICK_SETUPS if args.quick else SETUPS
    unknown = (set(models) - set(MODELS)) | (set(setups) - set(SETUPS))
    if unknown:
        parser.error(f"unknown models or setups: {sorted(unknown)}")
    batches = [int(b) for b in args.batch.split(",")]
    rows = []
    for model, batch, setup in itertools.product(models, batches, setups):
        config = {
            "model": model,
            "setup": setup,
            "batch": batch,
            "jit": args.jit,
            "quick": args.quick,
        }
        argv = [sys.executable, __file__, "--child", json.dumps(config)]
        start = time.perf_counter()
        try:
            row = _common.run_json(argv, config)
        except RuntimeError as err:  # reported, not fatal: the other setups still run
            lines = [x for x in str(err).splitlines() if x.strip()]
            row = {**config, "error": str(err), "error_line": lines[-1] if lines else ""}
        row["process_seconds"] = time.perf_counter() - start
        rows.append(row)
        status = (
            f"FAILED: {row['error_line']}"
            if "error" in row
            else f"peak RSS {row['peak_rss_mb']:.0f} MB, step {row['step_seconds']:.3f} s"
        )
        print(f"  {model} b{batch} {LABELS[setup]}: {status}", flush=True)
    ratios(rows)
    table = printable(rows)
    columns = list(dict.fromkeys(k for r in table for k in r))
    for r in table:
        for c in columns:
            r.setdefault(c, "")
    print(f"\njit_compile={args.jit}; ratios against full fine-tuning of the same model and batch")
    print(_common.table(table, columns))
    payload = {
        "command": " ".join(["benchmarks/transformers.py", *sys.argv[1:]]),
        "git": _git(),
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_hub": keras_hub.__version__,
        },
        "batches": batches,
        "jit_compile": args.jit,
        "epochs_steps": EPOCHS[args.quick],
        "rows": rows,
    }
    name = "transformers_quick.json" if args.quick else "transformers.json"
    if args.jit:
        name = name.replace(".json", "_jit.json")
    print("wrote", _common.write_json(name, payload))


if __name__ == "__main__":
    main()
