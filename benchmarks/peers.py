"""tf_tradyx's pruners side by side with the PX authors' PyTorch code, one fresh process per run.

    python benchmarks/peers.py --peer_checkout=DIR --torch_python=PYTHON [--repeats=3]
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


def ours(method, data_path, rounds, density):
    """One pruning call of tf_tradyx, timed as the peer's is."""
    arrays = np.load(data_path)
    data = (arrays["x"], arrays["y"])
    keras.utils.set_random_seed(0)
    # The peer's model is built with its masks (lib.layers), before its clock starts: so is ours.
    masked = tx.pruning.wrap(tx.models.resnet20())
    ready = time.perf_counter()
    pruner = tx.pruning.get_pruner(method, rounds=rounds, verbose=False)
    report = pruner.prune(masked, 1 - density, data)
    prune_seconds = time.perf_counter() - ready
    return {
        "code": "tf_tradyx",
        "method": method,
        "rounds": rounds,
        "prune_seconds": prune_seconds,
        "process_seconds": time.perf_counter() - _STARTED,
        "density": float(report.density),
        "peak_rss_mb": _peak_mb(),
    }


def _run(argv):
    return _common.run_json(argv, " ".join(argv[:3]) + " ...")


def main(argv):
    del argv
    if FLAGS.child:
        method, path, rounds = FLAGS.child.split(",")
        print(json.dumps(ours(method, path, int(rounds), FLAGS.density)))
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
    data, source = _common.pruning_batch()
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
            rounds = ROUNDS[method]
            runs = {"tf_tradyx": [], "px-ntk-pruning": []}
            for _ in range(FLAGS.repeats):
                runs["tf_tradyx"].append(
                    _run(
                        [
                            sys.executable,
                            __file__,
                            f"--child={method},{path},{rounds}",
                            f"--density={FLAGS.density}",
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
                            f"--density={FLAGS.density}",
                            f"--threads={FLAGS.threads}",
                        ]
                    )
                )
            row = {"method": method, "rounds": rounds}
            for code, results in runs.items():
                key = "ours" if code == "tf_tradyx" else "theirs"
                for field in ("prune_seconds", "process_seconds", "peak_rss_mb"):
                    row[f"{key}_{field}"] = float(np.median([r[field] for r in results]))
                row[f"{key}_density"] = results[0]["density"]
            row["prune_ratio"] = row["ours_prune_seconds"] / row["theirs_prune_seconds"]
            row["process_ratio"] = row["ours_process_seconds"] / row["theirs_process_seconds"]
            row["runs"] = runs
            rows.append(row)
            print(
                f"  {method}: ours {row['ours_prune_seconds']:.2f} s, theirs "
                f"{row['theirs_prune_seconds']:.2f} s ({row['prune_ratio']:.2f} x)",
                flush=True,
            )
    print(
        f"\nResNet-20, {len(data[0])} CIFAR-10 images ({source}), {100 * (1 - FLAGS.density):.1f} % "
        f"sparsity; px-ntk-pruning at {commit}, torch {FLAGS.threads} threads; medians of "
        f"{FLAGS.repeats} fresh processes\n"
    )
    print(
        f"{'method':<9}{'rounds':>7}{'prune s ours':>14}{'theirs':>9}{'x':>7}"
        f"{'process s ours':>16}{'theirs':>9}{'x':>7}{'peak RSS MB ours':>18}{'theirs':>9}"
    )
    for r in rows:
        print(
            f"{r['method']:<9}{r['rounds']:>7}{r['ours_prune_seconds']:>14.2f}"
            f"{r['theirs_prune_seconds']:>9.2f}{r['prune_ratio']:>7.2f}"
            f"{r['ours_process_seconds']:>16.2f}{r['theirs_process_seconds']:>9.2f}"
            f"{r['process_ratio']:>7.2f}{r['ours_peak_rss_mb']:>18.0f}{r['theirs_peak_rss_mb']:>9.0f}"
        )
    out = _common.write_json(
        "peers.json",
        {
            "peer": {"repository": "iurada/px-ntk-pruning", "commit": commit},
            "data": source,
            "density": FLAGS.density,
            "repeats": FLAGS.repeats,
            "torch_threads": FLAGS.threads,
            "rows": rows,
        },
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    app.run(main)
