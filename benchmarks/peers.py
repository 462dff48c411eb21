"""tf_tradyx's pruners side by side with the PX authors' PyTorch code, one fresh process per run.

    python benchmarks/peers.py --peer_checkout=DIR --torch_python=PYTHON [--repeats=3]
    python benchmarks/peers.py --scale=imagenet --images=100 --prune_batch=25 --peer_checkout=DIR \
        --torch_python=PYTHON
    python benchmarks/peers.py --tradi --torch_python=PYTHON      # TraDy vs a PyTorch simulation

`--peer_checkout` is a local checkout of https://github.com/iurada/px-ntk-pruning (measured at
ed6c40e; nothing of it is copied here) and `--torch_python` an interpreter with torch (and tqdm)
installed: the authors' code runs there, through `_peer_px_ntk.py`, with their own pruner classes
and pruning loop. Both sides prune the same ResNet-20 (their `lottery_resnet.resnet20`, ours
`tx.models.resnet20`: the same network) on the same 100 CIFAR-10 training images (10 per class),
to 98.2 % sparsity: PX and SynFlow in 100 rounds (the authors' CIFAR-10 setting), SNIP in one.
Each run is a fresh process; the runs alternate (ours, theirs, ours, ...) so that a noisy machine
slows both alike; medians of `--repeats`. Reported per method: the whole pruning call (making the
pruner, every round, the masks; the masked model is built before, on both sides), the whole process (imports included), the first round and the
median later round, and the process's peak RSS. Torch uses `--threads` threads (2 = this machine's
cores); TensorFlow its defaults.

With `--scale=imagenet`: the paper's ImageNet network, ResNet-50 at 224 px with 1,000 classes
(their `imagenet_resnet.resnet50`, ours `resnet50_torchvision` below: the same torchvision-style
network, stride in the 3x3 convs, no conv biases), on `--images` CIFAR-10 training images resized
to 224 px (the same arrays on both sides), read in batches of `--prune_batch` on both sides; PX and
SynFlow in `--imagenet_rounds` rounds R to the density the paper's 100-round schedule reaches
after R rounds (0.018 ** (R / 100): 2 rounds to 7.7 % sparsity; 2 rounds to 98.2 % would empty
whole layers of ResNet-50, which our pruners refuse), SNIP in one to 98.2 %. Besides the whole call,
each side reports its first round and its median later round; the PX round at
`--extrapolate_images` images is estimated from them (a round's cost not spent on images, the
ranking and masking of 25.6 M weights, taken as the same side's SynFlow round; the rest scales with
the images, linear on both sides). Writes benchmarks/results/peers_imagenet.json.

With `--tradi`: a TraDy training step of tf_tradyx (MobileNetV2-w0.35 at 128 px, batch 64,
27,946 units, the RGN top-k layers, Keras' default compile) against TraDy as the paper ran it in
PyTorch (`_peer_tradi_torch.py`: the same network, batch and channel selection; a full backward pass,
then the kernel gradients masked), each in fresh processes: median step time and whole-process
peak RSS. Writes benchmarks/results/peers_tradi.json.

Writes benchmarks/results/peers.json and prints the table.
"""

import time

_STARTED = time.perf_counter()  # a child's process time includes its imports, as the peer's does

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import tf_tradyx as tx  # noqa: E402
from tf_tradyx._graph import steps as graph_steps  # noqa: E402 (the Keras graph, exported for PyTorch)

FLAGS = flags.FLAGS
flags.DEFINE_string("peer_checkout", None, "Local checkout of iurada/px-ntk-pruning.")
flags.DEFINE_string("torch_python", None, "Python interpreter with torch and tqdm installed.")
flags.DEFINE_integer("repeats", 3, "Fresh processes per method and side (median reported).")
flags.DEFINE_integer("threads", 2, "Torch threads.")
flags.DEFINE_list("methods", ["px", "synflow", "snip"], "Methods to compare.")
flags.DEFINE_float("density", 0.018, "Fraction of weights kept (98.2 % sparsity).")
flags.DEFINE_string("child", None, "(internal) run our pruner: method,data.npz,rounds")
flags.DEFINE_bool("tradi", False, "Compare a TraDy step with a PyTorch simulation instead.")
flags.DEFINE_string("tradi_child", None, "(internal) time our TraDy step: batch,steps")
flags.DEFINE_integer("batch", 64, "TraDy comparison: batch size.")
flags.DEFINE_integer("steps", 12, "TraDy comparison: training steps per process.")
flags.DEFINE_enum(
    "scale", "cifar", ["cifar", "imagenet"], "ResNet-20 at 32 px or ResNet-50 at 224."
)
flags.DEFINE_integer("images", 1000, "--scale=imagenet: pruning images (a multiple of 10).")
flags.DEFINE_integer("prune_batch", 32, "--scale=imagenet: batch size of the pruning data.")
flags.DEFINE_integer("imagenet_rounds", 2, "--scale=imagenet: rounds of PX and SynFlow.")
flags.DEFINE_integer("extrapolate_images", 1000, "--scale=imagenet: images of the PX estimate.")

ROUNDS = {"px": 100, "synflow": 100, "snip": 1}
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_peer_px_ntk.py")
TORCH_TRADI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_peer_tradi_torch.py")
NET, BUDGET = "mbv2-w0.35", 27946
RANKING = os.path.join(_common.RESULTS, "rankings", f"{NET}.json")


def tradi_model():
    """The pretrained network wrapped for TraDy at BUDGET (draw 0 of seed 0)."""
    keras.utils.set_random_seed(0)
    model = tx.models.load_pretrained(NET, num_classes=10)
    layers = tx.sparse_update.LayerRanking.load(RANKING).top_k(0.97)
    return model, tx.sparse_update.wrap(
        model, strategy="tradi", layers=layers, budget=BUDGET, seed=0
    )


def export_network(model, selection):
    """The layers of `model` in graph order, as `_peer_tradi_torch.py` reads them."""
    layers = []
    for step in graph_steps.op_steps(graph_steps.graph_steps(model)):
        op, ins, outs = step.op, step.inputs, step.outputs
        entry = {
            "name": op.name,
            "inputs": [str(i) for i in ins],
            "outputs": [str(o) for o in outs],
        }
        if isinstance(op, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            depthwise = isinstance(op, keras.layers.DepthwiseConv2D)
            c_in = int(op.kernel.shape[2]) * (1 if depthwise else int(getattr(op, "groups", 1)))
            entry.update(
                kind="conv",
                depthwise=depthwise,
                groups=int(getattr(op, "groups", 1)),
                kernel=int(op.kernel_size[0]),
                stride=int(op.strides[0]),
                padding=op.padding,
                bias=bool(op.use_bias),
                activation=keras.activations.serialize(op.activation),
                **{"in": c_in, "out": c_in if depthwise else int(op.filters)},
            )
        elif isinstance(op, keras.layers.Dense):
            entry.update(
                kind="dense",
                bias=bool(op.use_bias),
                activation=keras.activations.serialize(op.activation),
                **{"in": int(op.kernel.shape[0]), "out": int(op.units)},
            )
        elif isinstance(op, keras.layers.BatchNormalization):
            entry.update(kind="bn", channels=int(op.gamma.shape[0]))
        elif isinstance(op, keras.layers.ReLU):
            entry.update(kind="relu", max_value=op.max_value)
        elif isinstance(op, keras.layers.Add):
            entry.update(kind="add")
        elif isinstance(op, keras.layers.ZeroPadding2D):
            entry.update(kind="pad", padding=[list(p) for p in op.padding])
        elif isinstance(op, keras.layers.GlobalAveragePooling2D):
            entry.update(kind="gap")
        elif isinstance(op, (keras.layers.Dropout, keras.layers.Flatten)):
            entry.update(kind="identity")
        else:
            raise ValueError(f"export_network: no PyTorch counterpart for {type(op).__name__}.")
        for key in ("activation",):
            if entry.get(key) not in (None, "linear", "relu", "relu6"):
                raise ValueError(f"export_network: activation {entry[key]!r} of {op.name}.")
        layers.append(entry)
    return {
        "input": list(model.inputs[0].shape[1:]),
        "classes": int(model.outputs[0].shape[-1]),
        "layers": layers,
        "selection": {k: [int(c) for c in v] for k, v in selection.items()},
    }


def tradi_child(batch, steps):
    """Our TraDy step: median of train_on_batch (which waits for the step) after two warm-ups."""
    _, sparse = tradi_model()
    sparse.compile(
        keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, 128, 128, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = sparse.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {
        "code": "tf_tradyx",
        "step_seconds": float(np.median(times[2:])),
        "peak_rss_mb": _peak_mb(),
        "process_seconds": time.perf_counter() - _STARTED,
        "loss": float(loss),
        "trained_kernels": len(tx.sparse_update.selection(sparse)),
    }


def compare_tradi():
    model, sparse = tradi_model()
    spec = export_network(model, tx.sparse_update.selection(sparse))
    runs = {"tf_tradyx": [], "PyTorch simulation": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        for _ in range(FLAGS.repeats):
            runs["tf_tradyx"].append(
                _run([sys.executable, __file__, f"--tradi_child={FLAGS.batch},{FLAGS.steps}"])
            )
            runs["PyTorch simulation"].append(
                _run(
                    [
                        FLAGS.torch_python,
                        TORCH_TRADI,
                        f"--network={path}",
                        f"--batch={FLAGS.batch}",
                        f"--steps={FLAGS.steps}",
                        f"--threads={FLAGS.threads}",
                    ]
                )
            )
    row = {"network": NET, "batch": FLAGS.batch, "budget": BUDGET}
    for code, results in runs.items():
        key = "ours" if code == "tf_tradyx" else "torch"
        for field in ("step_seconds", "peak_rss_mb"):
            row[f"{key}_{field}"] = float(np.median([r[field] for r in results]))
    row["step_ratio"] = row["ours_step_seconds"] / row["torch_step_seconds"]
    row["rss_ratio"] = row["ours_peak_rss_mb"] / row["torch_peak_rss_mb"]
    print(
        f"\nTraDy @ {BUDGET:,} units, {NET}, batch {FLAGS.batch}, "
        f"{len(spec['selection'])} layers trained; medians of {FLAGS.repeats} fresh processes\n"
        f"{'':<22}{'step s':>8}{'peak RSS MB':>13}\n"
        f"{'tf_tradyx':<22}{row['ours_step_seconds']:>8.3f}{row['ours_peak_rss_mb']:>13.0f}\n"
        f"{'PyTorch simulation':<22}{row['torch_step_seconds']:>8.3f}{row['torch_peak_rss_mb']:>13.0f}\n"
        f"{'ratio':<22}{row['step_ratio']:>8.2f}{row['rss_ratio']:>13.2f}"
    )
    out = _common.write_json(
        "peers_tradi.json",
        {"repeats": FLAGS.repeats, "threads": FLAGS.threads, "row": row, "runs": runs},
    )
    print(f"\nwrote {out}")


def _peak_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def resnet50_torchvision(input_shape=(224, 224, 3), classes=1000):
    """The px-ntk-pruning authors' ImageNet ResNet-50 (torchvision's, "v1.5") in Keras: the stride
    of a downsampling bottleneck in its 3x3 conv, convolutions without biases, torch's explicit
    paddings and BatchNormalization epsilon, He-normal (fan-out) kernels. keras.applications'
    ResNet50 is the original v1 (stride in the first 1x1 conv, conv biases): 4 % fewer multiply-
    adds, another network."""
    he = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal", seed=0)

    def conv(x, filters, kernel, stride, name):
        if kernel > 1:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        x = keras.layers.Conv2D(
            filters, kernel, stride, use_bias=False, kernel_initializer=he, name=name
        )(x)
        return keras.layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)

    inputs = keras.Input(input_shape)
    x = keras.layers.ReLU()(conv(inputs, 64, 7, 2, "conv1"))
    x = keras.layers.ZeroPadding2D(1)(x)  # after a ReLU: zeros never win the max
    x = keras.layers.MaxPooling2D(3, 2)(x)
    channels = 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 1 else 1
            name = f"layer{stage}_{b}"
            y = keras.layers.ReLU()(conv(x, width, 1, 1, f"{name}_conv1"))
            y = keras.layers.ReLU()(conv(y, width, 3, stride, f"{name}_conv2"))
            y = conv(y, 4 * width, 1, 1, f"{name}_conv3")
            if stride != 1 or channels != 4 * width:
                x = conv(x, 4 * width, 1, stride, f"{name}_downsample")
            x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
            channels = 4 * width
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="resnet50_torchvision")


def ours(method, data_path, rounds, density, network="resnet20", batch=None):
    """One pruning call of tf_tradyx, timed as the peer's is."""
    arrays = np.load(data_path)
    data = (arrays["x"], arrays["y"])
    if batch:  # the peer's batches (arrays alone would be read in the pruner's batches of 256)
        data = tf.data.Dataset.from_tensor_slices(data).batch(batch)
    keras.utils.set_random_seed(0)
    # The peer's model is built with its masks (lib.layers), before its clock starts: so is ours.
    model = tx.models.resnet20() if network == "resnet20" else resnet50_torchvision()
    masked = tx.pruning.wrap(model)
    ready, ready_cpu = time.perf_counter(), time.process_time()
    pruner = tx.pruning.get_pruner(method, rounds=rounds, verbose=False)
    starts, starts_cpu = [], []
    scores = pruner._checked_scores  # each round begins with its scores: the rounds' clock

    def timed(session):
        starts.append(time.perf_counter())
        starts_cpu.append(time.process_time())
        return scores(session)

    pruner._checked_scores = timed
    report = pruner.prune(masked, 1 - density, data)
    end, end_cpu = time.perf_counter(), time.process_time()
    rounds_s = np.diff(starts + [end])
    rounds_cpu = np.diff(starts_cpu + [end_cpu])
    return {
        "code": "tf_tradyx",
        "method": method,
        "rounds": rounds,
        "prune_seconds": end - ready,
        "prune_cpu_seconds": end_cpu - ready_cpu,
        "process_seconds": time.perf_counter() - _STARTED,
        "first_round_seconds": float(starts[0] - ready + rounds_s[0]),
        "later_round_ms": 1000 * float(np.median(rounds_s[1:])) if rounds > 1 else None,
        "later_round_cpu_ms": 1000 * float(np.median(rounds_cpu[1:])) if rounds > 1 else None,
        "density": float(report.density),
        "weights": int(report.total),
        "peak_rss_mb": _peak_mb(),
    }


def _run(argv):
    return _common.run_json(argv, " ".join(argv[:3]) + " ...")


def main(argv):
    del argv
    if FLAGS.child:
        method, path, rounds, network, batch = FLAGS.child.split(",")
        print(json.dumps(ours(method, path, int(rounds), FLAGS.density, network, int(batch))))
        return
    if FLAGS.tradi_child:
        batch, steps = map(int, FLAGS.tradi_child.split(","))
        print(json.dumps(tradi_child(batch, steps)))
        return
    if FLAGS.tradi:
        if not FLAGS.torch_python:
            raise app.UsageError("--torch_python must name a Python interpreter with torch.")
        compare_tradi()
        return
    if not FLAGS.peer_checkout or not os.path.exists(
        os.path.join(FLAGS.peer_checkout, "lib", "pruners.py")
    ):
        raise app.UsageError(
            "--peer_checkout must name a local checkout of "
            "https://github.com/iurada/px-ntk-pruning (git clone it; it holds lib/pruners.py)."
        )
    if not FLAGS.torch_python:
        raise app.UsageError("--torch_python must name a Python interpreter with torch installed.")
    imagenet = FLAGS.scale == "imagenet"
    if imagenet:
        if FLAGS.images % 10:
            raise app.UsageError("--images must be a multiple of 10 (images per class).")
        data, source = imagenet_batch(FLAGS.images // 10)
        network, batch = "resnet50", FLAGS.prune_batch
        rounds_of = {"px": FLAGS.imagenet_rounds, "synflow": FLAGS.imagenet_rounds, "snip": 1}
    else:
        data, source = _common.pruning_batch()
        network, batch, rounds_of = "resnet20", 0, ROUNDS
    commit = subprocess.run(
        ["git", "-C", FLAGS.peer_checkout, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pruning.npz")
        np.savez(path, x=data[0], y=data[1])
        for method in FLAGS.methods:
            rounds = rounds_of[method]
            density = FLAGS.density
            if imagenet and rounds > 1:  # the first rounds of the 100-round schedule
                density = FLAGS.density ** (rounds / 100)
            runs = {"tf_tradyx": [], "px-ntk-pruning": []}
            for _ in range(FLAGS.repeats):
                runs["tf_tradyx"].append(
                    _run(
                        [
                            sys.executable,
                            __file__,
                            f"--child={method},{path},{rounds},{network},{batch}",
                            f"--density={density}",
                        ]
                    )
                )
                runs["px-ntk-pruning"].append(
                    _run(
                        [
                            FLAGS.torch_python,
                            PEER,
                            f"--checkout={FLAGS.peer_checkout}",
                            f"--method={method}",
                            f"--data={path}",
                            f"--rounds={rounds}",
                            f"--density={density}",
                            f"--threads={FLAGS.threads}",
                            f"--arch={network}",
                            f"--batch_size={batch or 128}",
                        ]
                    )
                )
            row = {"method": method, "rounds": rounds, "target_density": density}
            for code, results in runs.items():
                key = "ours" if code == "tf_tradyx" else "theirs"
                for field in (
                    "prune_seconds",
                    "prune_cpu_seconds",
                    "process_seconds",
                    "peak_rss_mb",
                    "first_round_seconds",
                    "later_round_ms",
                    "later_round_cpu_ms",
                ):
                    values = [r.get(field) for r in results]
                    if None not in values:
                        row[f"{key}_{field}"] = float(np.median(values))
                row[f"{key}_density"] = results[0]["density"]
                row[f"{key}_weights"] = results[0].get("weights")
            row["prune_ratio"] = row["ours_prune_seconds"] / row["theirs_prune_seconds"]
            row["process_ratio"] = row["ours_process_seconds"] / row["theirs_process_seconds"]
            if "ours_later_round_ms" in row and "theirs_later_round_ms" in row:
                row["round_ratio"] = row["ours_later_round_ms"] / row["theirs_later_round_ms"]
                row["round_cpu_ratio"] = (
                    row["ours_later_round_cpu_ms"] / row["theirs_later_round_cpu_ms"]
                )
            if "ours_prune_cpu_seconds" in row and "theirs_prune_cpu_seconds" in row:
                row["prune_cpu_ratio"] = (
                    row["ours_prune_cpu_seconds"] / row["theirs_prune_cpu_seconds"]
                )
            row["runs"] = runs
            rows.append(row)
            print(
                f"  {method}: ours {row['ours_prune_seconds']:.2f} s, theirs "
                f"{row['theirs_prune_seconds']:.2f} s ({row['prune_ratio']:.2f} x)",
                flush=True,
            )
    if imagenet:
        what = (
            f"ResNet-50 at 224 px, 1,000 classes, {len(data[0])} CIFAR-10 images resized to 224 px "
            f"({source}), batches of {batch}"
        )
    else:
        what = f"ResNet-20, {len(data[0])} CIFAR-10 images ({source})"
    sparsity = f"{100 * (1 - FLAGS.density):.1f} % sparsity"
    if imagenet:
        r = FLAGS.imagenet_rounds
        sparsity = (
            f"PX and SynFlow to {100 * (1 - FLAGS.density ** (r / 100)):.1f} % sparsity in {r} "
            f"rounds (the first {r} of the paper's 100 to {sparsity}), SNIP to {sparsity}"
        )
    print(
        f"\n{what}; {sparsity}; px-ntk-pruning at {commit}, torch {FLAGS.threads} threads; "
        f"medians of {FLAGS.repeats} fresh processes\n"
    )
    table = []
    for r in rows:
        entry = {
            "method": r["method"],
            "rounds": r["rounds"],
            "prune s ours": f"{r['ours_prune_seconds']:.2f}",
            "theirs": f"{r['theirs_prune_seconds']:.2f}",
            "x": f"{r['prune_ratio']:.2f}",
            "later round s ours": "",
            "theirs ": "",
            "x ": "",
            "round CPU s x": "",
            "prune CPU s x": f"{r['prune_cpu_ratio']:.2f}" if "prune_cpu_ratio" in r else "",
            "process s ours": f"{r['ours_process_seconds']:.2f}",
            "theirs  ": f"{r['theirs_process_seconds']:.2f}",
            "peak RSS MB ours": f"{r['ours_peak_rss_mb']:.0f}",
            "theirs   ": f"{r['theirs_peak_rss_mb']:.0f}",
        }
        if "round_ratio" in r:
            entry["later round s ours"] = f"{r['ours_later_round_ms'] / 1000:.2f}"
            entry["theirs "] = f"{r['theirs_later_round_ms'] / 1000:.2f}"
            entry["x "] = f"{r['round_ratio']:.2f}"
            entry["round CPU s x"] = f"{r['round_cpu_ratio']:.2f}"
        table.append(entry)
    print(_common.table(table, list(table[0])))
    payload = {
        "peer": {"repository": "iurada/px-ntk-pruning", "commit": commit},
        "data": source,
        "density": FLAGS.density,
        "repeats": FLAGS.repeats,
        "torch_threads": FLAGS.threads,
    }
    if imagenet:
        payload.update(
            network="ResNet-50 (torchvision layout), 224 px, 1,000 classes",
            images=len(data[0]),
            batch=batch,
            extrapolated=extrapolate(rows, len(data[0]), FLAGS.extrapolate_images),
        )
    payload["rows"] = rows
    out = _common.write_json("peers_imagenet.json" if imagenet else "peers.json", payload)
    print(f"\nwrote {out}")


def imagenet_batch(per_class):
    """`per_class` CIFAR-10 training images of each class, normalized and resized to 224 x 224 (the
    same float32 arrays for both sides); and the data source."""
    (x, y), source = _common.pruning_batch(per_class)
    x = np.concatenate(
        [tf.image.resize(x[i : i + 50], (224, 224)).numpy() for i in range(0, len(x), 50)]
    )
    return (x.astype("float32"), y), source


def extrapolate(rows, images, target):
    """PX's later round at `target` images, per side, from wall and from CPU time: the part of a
    round not spent on images (ranking and masking, one path pass), taken as that side's SynFlow
    round, plus the rest of the measured PX round scaled from `images` to `target` (both sides
    read every image once per round)."""
    by = {r["method"]: r for r in rows}
    if "px" not in by or "synflow" not in by or "round_ratio" not in by["px"]:
        return None
    out = {"images": target}
    for clock, field in (("wall", "later_round_ms"), ("cpu", "later_round_cpu_ms")):
        for side in ("ours", "theirs"):
            fixed = by["synflow"][f"{side}_{field}"] / 1000
            per_image = (by["px"][f"{side}_{field}"] / 1000 - fixed) / images
            out[f"{side}_{clock}_round_s"] = fixed + per_image * target
            out[f"{side}_{clock}_ms_per_image"] = 1000 * per_image
            out[f"{side}_{clock}_100_rounds_h"] = 100 * out[f"{side}_{clock}_round_s"] / 3600
        out[f"{clock}_round_ratio"] = out[f"ours_{clock}_round_s"] / out[f"theirs_{clock}_round_s"]
        print(
            f"\nPX at {target:,} images, estimated from {images} ({clock} time): a round "
            f"{out[f'ours_{clock}_round_s']:.0f} s ours, {out[f'theirs_{clock}_round_s']:.0f} s "
            f"theirs ({out[f'{clock}_round_ratio']:.2f} x); 100 rounds "
            f"{out[f'ours_{clock}_100_rounds_h']:.1f} h ours, "
            f"{out[f'theirs_{clock}_100_rounds_h']:.1f} h theirs"
        )
    return out


if __name__ == "__main__":
    app.run(main)
