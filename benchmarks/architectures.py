"""TraDy on the architectures users bring: retained bytes and step time, with and without
frozen-segment recomputation, side by side with full fine-tuning in one process.

    python benchmarks/architectures.py                 # every family (about 10 minutes on 2 cores)
    python benchmarks/architectures.py --only VGG16 --size 64 --batch 32

keras.applications models with random weights (no download), `--size` px inputs. TraDy runs at 2 %
of full fine-tuning's units over the layers `rank_layers` preselects. "retained" is what one
training step's backward pass keeps (`sp.memory.retained_bytes`, activations and masks, batch 2),
as a fraction of full fine-tuning's; step times are medians over `--steps` steps of `fit`'s
compiled train function with default compile settings, as ratios to full fine-tuning's.
Writes benchmarks/results/architectures.json.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_tradyx as tx  # noqa: E402

sp = tx.sparse_update
A = keras.applications
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
FAMILIES = {
    "MobileNetV2": ("ReLU6 inverted residuals", lambda **k: A.MobileNetV2(alpha=0.35, **k)),
    "ResNet50": ("residual ReLU", A.ResNet50),
    "DenseNet121": ("concatenation", A.DenseNet121),
    "VGG16": ("max pooling, fused ReLU", A.VGG16),
    "MobileNetV3Small": ("hard-swish + squeeze-excite", A.MobileNetV3Small),
    "EfficientNetB0": ("swish + squeeze-excite", A.EfficientNetB0),
    "ConvNeXtTiny": ("GELU + LayerNorm", A.ConvNeXtTiny),
}


def _retained(model):
    kept = sp.memory.retained_bytes(model, batch_size=2, loss=LOSS)
    return kept["activation"] + kept["mask"]


def _step_seconds(model, x, y, steps):
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)  # traces the train function
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(name, size, batch, steps):
    family, build = FAMILIES[name]
    keras.utils.set_random_seed(0)
    model = build(input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    layers = sp.rank_layers(model, (x[:8], y[:8]), epochs=1, verbose=0).top_k(0.97)
    budget = sp.cost_table(model).full_units // 50
    variants = {
        "tradi": sp.wrap(model, budget, strategy=sp.TraDy(layers), recompute=False),
        "tradi_recompute": sp.wrap(model, budget, strategy=sp.TraDy(layers), recompute=True),
    }
    full = _retained(model)
    row = {"model": name, "family": family, "budget_units": budget, "full_retained_bytes": full}
    for key, wrapped in variants.items():
        row[f"{key}_retained"] = round(_retained(wrapped) / full, 4)
    full_time = _step_seconds(model, x, y, steps)
    row["full_step_s"] = round(full_time, 4)
    for key, wrapped in variants.items():
        row[f"{key}_step_vs_full"] = round(_step_seconds(wrapped, x, y, steps) / full_time, 3)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name in args.only:
        rows.append(measure(name, args.size, args.batch, args.steps))
        print(f"{name}: done", flush=True)
    columns = [
        "model",
        "family",
        "tradi_retained",
        "tradi_recompute_retained",
        "full_step_s",
        "tradi_step_vs_full",
        "tradi_recompute_step_vs_full",
    ]
    print(_common.table(rows, columns))
    settings = {"size": args.size, "batch": args.batch, "steps": args.steps}
    print("wrote", _common.write_json("architectures.json", {"settings": settings, "rows": rows}))


if __name__ == "__main__":
    main()
