"""Peak memory and step time of sparse-update training, measured, each in a fresh process.

    python benchmarks/memory.py            # both tables (about 35 minutes on 2 cores)
    python benchmarks/memory.py --user     # only the first: what a user sees (about 12 minutes)
    python benchmarks/memory.py --quick    # MobileNetV2, batch 64, four configurations

First, what a user sees: the whole-process peak RSS (VmHWM: TensorFlow's import, the model,
tracing, compilation and training together) of a plain `model.fit` (3 epochs of 4 steps, a
`ChannelResampler`) with TensorFlow's and Keras' default settings, MobileNetV2-w0.35 at 128 px, batch 64 and 256, for full fine-tuning, classifier
only, bias only, SU, TraDy, and `model.predict` as the floor; the same at batch 64 with
`jit_compile=True` (XLA, Keras' default on GPUs), where the RSS includes XLA's compiler. Each is a
fresh process; step time is the median of the later epochs' times over their 4 steps.

Then a controlled protocol, labelled as such. For every configuration a child process builds the wrapped pretrained network, traces the forward
and train functions, then resets the kernel's peak-RSS counter (/proc/self/clear_refs) and runs
forward-only steps (training=True, same batch) and then training steps. The training overhead is
peak RSS during training minus peak RSS during the forward-only steps; the same difference is
also taken from TensorFlow's own allocator statistics (BFC allocator on the CPU, exact tensor
bytes), which is free of malloc noise. Also reported: the mean
step time (a third process, TensorFlow's default threads and allocator) and the analytic units, and the bytes the traced backward pass retains
(tf_tradyx.sparse_update.memory). Writes benchmarks/results/memory.json.
"""

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_tradyx as tx  # noqa: E402

BUDGETS = {
    "mbv2-w0.35": [27946, 66592, 93696],
    "mcunet-in1": [15936, 64832, 112640],
    "proxyless-w0.3": [25984, 72960, 101376],
}
SCHEMES = {
    "mbv2-w0.35": "mbv2-w0.35/50kb",
    "mcunet-in1": "mcunet-in1/50kb",
    "proxyless-w0.3": "proxyless-w0.3/50kb",
}
OTHER_STRATEGIES = ("dynamic_full_random", "dynamic_det_rgn")  # memory only (--only adds them)
RANKINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "rankings")


def _peak_kb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _device():
    """The device whose allocator peak is read: the first GPU when there is one (where a user's
    training memory lives), else the CPU's BFC allocator."""
    return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"


def _tensor_peak():
    try:
        return tf.config.experimental.get_memory_info(_device())["peak"]
    except ValueError:
        return 0


def _reset_tensor_peak():
    try:
        tf.config.experimental.reset_memory_stats(_device())
    except ValueError:
        pass


def child(config):
    # TensorFlow's BFC allocator on the CPU keeps exact statistics of tensor memory; TensorFlow
    # reads the switch from the environment, so the parent sets it for the child (_child_env).
    if config.get("allocator") == "bfc" and os.environ.get("TF_CPU_ALLOCATOR_USE_BFC") != "true":
        raise RuntimeError("the bfc child must run with TF_CPU_ALLOCATOR_USE_BFC=true")
    if config.get("allocator") != "default":
        # One inter-op thread: ops run one after another, so the peak reflects what is kept, not
        # which independent ops happened to overlap. Intra-op threads stay at their default.
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    net, batch = config["net"], config["batch"]
    model = tx.models.load_pretrained(net, num_classes=10)
    kwargs = {"strategy": config["strategy"], "seed": 0}
    if config["strategy"] == "su":
        kwargs["scheme"] = SCHEMES[net]
    if config["strategy"] == "tradi":
        ranking = tx.sparse_update.LayerRanking.load(os.path.join(RANKINGS, f"{net}.json"))
        kwargs.update(
            layers=ranking.top_k(0.97),
            budget=config["budget"],
            simulate=config.get("simulate", False),
        )
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (batch, 128, 128, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, batch))
    if config["strategy"] in ("dynamic_full_random", "dynamic_det_rgn"):
        # One step has one selection, so static and dynamic variants cost the same memory.
        kwargs["budget"] = config["budget"]
        if config["strategy"] == "dynamic_det_rgn":
            kwargs["data"] = (x.numpy(), y.numpy())
    sparse = tx.sparse_update.wrap(model, **kwargs)
    sparse.compile(
        keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    forward = tf.function(lambda t: sparse(t, training=True))
    forward(x)
    sparse.train_on_batch(x, y)  # traces the train function
    _reset_peak()
    _reset_tensor_peak()
    for _ in range(3):
        forward(x).numpy()
    peak_forward, tensors_forward = _peak_kb(), _tensor_peak()
    _reset_peak()
    _reset_tensor_peak()
    times = []
    for _ in range(4):
        start = time.perf_counter()
        sparse.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    peak_train, tensors_train = _peak_kb(), _tensor_peak()
    retained = (
        tx.sparse_update.memory.retained_bytes(sparse, batch_size=batch)
        if config.get("allocator") == "malloc"
        else {"activation": 0, "mask": 0}
    )
    eff = tx.sparse_update.efficiency(sparse)
    return {
        **config,
        "peak_forward_mb": peak_forward / 1024,
        "peak_train_mb": peak_train / 1024,
        "overhead_mb": (peak_train - peak_forward) / 1024,
        "tensor_device": _device(),  # whose allocator the tensor_* figures read
        "tensor_peak_forward_mb": tensors_forward / 2**20,
        "tensor_peak_train_mb": tensors_train / 2**20,
        "tensor_overhead_mb": (tensors_train - tensors_forward) / 2**20,
        "step_seconds": float(np.mean(times[1:])),
        "units": eff.units,
        "retained_activation_mb": retained["activation"] / 2**20,
        "retained_mask_mb": retained["mask"] / 2**20,
    }


USER_NET, USER_BUDGET = "mbv2-w0.35", 27946
USER_STRATEGIES = ("predict", "full", "classifier", "bias", "su", "tradi")


def user_child(config):
    """One `model.fit` as a user runs it; returns the process's peak RSS and step times."""
    keras.utils.set_random_seed(0)
    batch, strategy = config["batch"], config["strategy"]
    model = tx.models.load_pretrained(USER_NET, num_classes=10)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, 128, 128, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    # One batch in memory, repeated: the input pipeline costs every row the same.
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    if strategy == "predict":
        before = _peak_kb()
        images = data.map(lambda a, b: a)
        model.predict(images, steps=2, verbose=0)  # traces
        start = time.perf_counter()
        model.predict(images, steps=4, verbose=0)
        return {
            **config,
            "rss_before_mb": before / 1024,
            "peak_rss_mb": _peak_kb() / 1024,
            "step_seconds": (time.perf_counter() - start) / 4,
        }
    kwargs = {"strategy": strategy, "seed": 0}
    if strategy == "su":
        kwargs["scheme"] = SCHEMES[USER_NET]
    if strategy == "tradi":
        ranking = tx.sparse_update.LayerRanking.load(os.path.join(RANKINGS, f"{USER_NET}.json"))
        kwargs.update(layers=ranking.top_k(0.97), budget=USER_BUDGET)
    sparse = tx.sparse_update.wrap(model, **kwargs)
    compile_args = {"jit_compile": True} if config.get("xla") else {}  # else Keras' "auto"
    sparse.compile(
        keras.optimizers.SGD(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_args,
    )
    epoch_seconds = []

    class EpochClock(keras.callbacks.Callback):
        # Per epoch, not per step: Keras dispatches steps asynchronously, and an epoch's end
        # waits for its last step (its logs become numbers).
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.start)

    before = _peak_kb()
    _reset_tensor_peak()
    sparse.fit(
        data,
        epochs=3,
        steps_per_epoch=4,
        verbose=0,
        callbacks=[tx.sparse_update.ChannelResampler(), EpochClock()],
    )
    return {
        **config,
        "rss_before_mb": before / 1024,
        "peak_rss_mb": _peak_kb() / 1024,
        "tensor_device": _device(),
        "tensor_peak_mb": _tensor_peak() / 2**20,
        "step_seconds": float(np.median(epoch_seconds[1:])) / 4,  # after the tracing epoch
        "jit_compile": bool(getattr(sparse, "jit_compile", False)),
    }


def user_configs():
    out = [{"batch": b, "strategy": s} for b in (64, 256) for s in USER_STRATEGIES]
    out += [{"batch": 64, "strategy": s, "xla": True} for s in USER_STRATEGIES if s != "predict"]
    # Where TraDy's fixed overhead lives: the same fits on TensorFlow's own kernels (oneDNN off).
    out += [{"batch": 64, "strategy": s, "onednn": False} for s in ("full", "classifier", "tradi")]
    return out


def _mode(row):
    """A row's compile and kernel setting: the rows it is compared with share it."""
    return "XLA" if row.get("xla") else "no oneDNN" if row.get("onednn") is False else "default"


def user_rows():
    """The user-facing table: one fresh process per configuration, default environment."""
    ensure_rankings([USER_NET])
    rows = []
    for config in user_configs():
        env = _child_env("default")
        if config.get("onednn") is False:
            env["TF_ENABLE_ONEDNN_OPTS"] = "0"
        argv = [sys.executable, __file__, "--user-child", json.dumps(config)]
        rows.append(_common.run_json(argv, config, env=env))
        print(f"  {user_label(rows[-1])}: peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
    return user_figures(rows)


def user_figures(rows):
    """Adds to each row its RSS above classifier-only training, the share of full fine-tuning's
    extra memory (beyond classifier-only) it saves, and its step time over full's, each against
    the rows of its own batch and compile mode."""

    def same(row, strategy):
        return next(
            r
            for r in rows
            if r["strategy"] == strategy and (r["batch"], _mode(r)) == (row["batch"], _mode(row))
        )

    for row in rows:
        classifier, full = same(row, "classifier"), same(row, "full")
        row["above_classifier_mb"] = row["peak_rss_mb"] - classifier["peak_rss_mb"]
        extra = full["peak_rss_mb"] - classifier["peak_rss_mb"]
        row["saved_vs_full"] = 1 - row["above_classifier_mb"] / extra if extra > 0 else None
        row["time_vs_full"] = row["step_seconds"] / full["step_seconds"]
    return rows


def user_label(row):
    mode = _mode(row)
    return f"b{row['batch']}{'' if mode == 'default' else ' ' + mode} {_name(row)}"


def _name(row):
    return {
        "predict": "model.predict (floor)",
        "full": "full fine-tuning",
        "classifier": "classifier only",
        "bias": "bias only",
        "su": "SU (MCUNetV3 scheme)",
        "tradi": f"TraDy @ {USER_BUDGET:,}",
    }[row["strategy"]]


def print_user_table(rows):
    print("What a user sees: whole-process peak RSS of model.fit (default settings)")
    print(
        f"{'batch':>6} {'compile':<10} {'configuration':<24}{'peak RSS MB':>12}"
        f"{'vs classifier':>14}{'saved of full':>14}{'step s':>8}{'x full':>8}"
    )
    for r in rows:
        saved = "" if r["saved_vs_full"] is None else f"{100 * r['saved_vs_full']:.0f} %"
        print(
            f"{r['batch']:>6} {_mode(r):<10} "
            f"{_name(r):<24}"
            f"{r['peak_rss_mb']:>12.0f}"
            f"{r['above_classifier_mb']:>+14.0f}{saved:>14}{r['step_seconds']:>8.3f}"
            f"{r['time_vs_full']:>8.2f}"
        )


def ensure_rankings(nets):
    """RGN rankings (1 epoch on the bundled CIFAR-10 sample) for the TraDy layer sets."""
    os.makedirs(RANKINGS, exist_ok=True)
    todo = [n for n in nets if not os.path.exists(os.path.join(RANKINGS, f"{n}.json"))]
    if not todo:
        return
    train = tx.data.cifar10_sample("train", shuffle_files=True, seed=0)
    for net in todo:
        keras.utils.set_random_seed(0)
        ds = tx.data.prepare(train, 64, preprocess=tx.models.preprocess(net), cache=True)
        model = tx.models.load_pretrained(net, num_classes=10)
        ranking = tx.sparse_update.rank_layers(model, ds, epochs=1, verbose=0)
        ranking.info["data"] = "bundled CIFAR-10 sample (1,000 images), 1 epoch, SGD 0.01"
        ranking.save(os.path.join(RANKINGS, f"{net}.json"))


def configs(quick):
    out = []
    for net in BUDGETS:
        batches = [64, 128] if net == "mbv2-w0.35" else [64]
        if quick and net != "mbv2-w0.35":
            continue
        for batch in batches[:1] if quick else batches:
            base = [("full", None), ("classifier", None), ("bias", None), ("su", None)]
            budgets = BUDGETS[net] if net == "mbv2-w0.35" else BUDGETS[net][:1]
            runs = [{"net": net, "batch": batch, "strategy": s, "budget": b} for s, b in base]
            runs += [
                {"net": net, "batch": batch, "strategy": "tradi", "budget": b} for b in budgets
            ]
            runs.append(
                {
                    "net": net,
                    "batch": batch,
                    "strategy": "tradi",
                    "budget": budgets[0],
                    "simulate": True,
                }
            )
            if net == "mbv2-w0.35" and batch == 64:  # the other strategies of docs/RESULTS.md
                runs += [
                    {"net": net, "batch": batch, "strategy": s, "budget": budgets[0]}
                    for s in OTHER_STRATEGIES
                ]
            if quick:
                runs = [
                    r
                    for r in runs
                    if r["strategy"] in ("full", "classifier")
                    or (r["strategy"] == "tradi" and r["budget"] == budgets[0])
                ]
            out += runs
    return out


def _child_env(allocator):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if allocator == "malloc":
        # Peak RSS with glibc's mmap threshold fixed at 128 KiB: every large tensor is its own
        # mapping, returned to the system when freed, so RSS follows live memory instead of
        # malloc's caching.
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    elif allocator == "bfc":
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    return env


def _child_step_seconds(config):
    argv = [sys.executable, __file__, "--child", json.dumps({**config, "allocator": "default"})]
    return _common.run_json(argv, config, env=_child_env("default"))["step_seconds"]


def _full_reference(rows, row):
    """The full fine-tuning row of `row`'s network and batch: every ratio's denominator."""
    return next(
        x
        for x in rows
        if (x["net"], x["batch"]) == (row["net"], row["batch"]) and x["strategy"] == "full"
    )


def retime(only=None):
    """Step times again, one fresh process per configuration, nothing else running.

    With ``only`` (a set of strategies) just those rows are re-timed, each next to a fresh timing of
    its own full fine-tuning reference (same network and batch), so their ``time_vs_full`` is a
    side-by-side ratio; the stored full rows and every other row keep their times.
    """
    path = os.path.join(_common.RESULTS, "memory.json")
    with open(path) as f:
        payload = json.load(f)
    rows = payload["rows"]
    keys = ("net", "batch", "strategy", "budget", "simulate")
    config = lambda row: {k: row[k] for k in keys if k in row}
    if only:
        unknown = only - {r["strategy"] for r in rows}
        if unknown:
            raise ValueError(
                f"--only: strategies {sorted(unknown)} are not in {path}; measure "
                "their memory first (memory.py --only ...)"
            )
        references = {}
        for row in (r for r in rows if r["strategy"] in only):
            key = (row["net"], row["batch"])
            if key not in references:
                references[key] = _child_step_seconds(config(_full_reference(rows, row)))
                print(
                    f"  {key[0]} b{key[1]} full fine-tuning (reference): {references[key]:.3f} s",
                    flush=True,
                )
            row["step_seconds"] = _child_step_seconds(config(row))
            row["time_reference_seconds"] = references[key]
            row["time_vs_full"] = row["step_seconds"] / references[key]
            print(
                f"  {row['net']} b{row['batch']} {label(row)}: {row['step_seconds']:.3f} s "
                f"({row['time_vs_full']:.2f} x full)",
                flush=True,
            )
    else:
        for row in rows:
            row["step_seconds"] = _child_step_seconds(config(row))
            row.pop("time_reference_seconds", None)
            print(
                f"  {row['net']} b{row['batch']} {label(row)}: {row['step_seconds']:.3f} s",
                flush=True,
            )
        for row in rows:
            row["time_vs_full"] = row["step_seconds"] / _full_reference(rows, row)["step_seconds"]
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)


def _stored_user(path):
    with open(path) as f:
        return json.load(f).get("user", [])


def label(r):
    name = (
        "TraDy simulated"
        if r.get("simulate")
        else {"tradi": "TraDy"}.get(r["strategy"], r["strategy"])
    )
    return f"{name} @ {r['budget']:,}" if r["strategy"] == "tradi" else name


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--user-child")
    parser.add_argument(
        "--user", action="store_true", help="only the user-facing table (merged into memory.json)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        help="comma-separated strategies: measure just those rows' "
        "memory (no step time) and merge them into results/memory.json",
    )
    parser.add_argument(
        "--timing",
        action="store_true",
        help="re-measure only the step times of results/memory.json (idle "
        "machine); with --only, just those rows, each next to its full reference",
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.user_child:
        print(json.dumps(user_child(json.loads(args.user_child))))
        return
    path = os.path.join(_common.RESULTS, "memory.json")
    if args.user or not (args.quick or args.only or args.timing):
        user = user_rows()
        print_user_table(user)
        if args.user:
            with open(path) as f:
                payload = json.load(f)
            payload["user"] = user
            _common.write_json("memory.json", {k: v for k, v in payload.items() if k != "machine"})
            print("wrote", path)
            return
    if args.timing:
        try:
            retime(set(args.only.split(",")) if args.only else None)
        except ValueError as err:
            parser.error(str(err))
        return
    runs = configs(args.quick)
    kept = []
    if args.only:
        only = set(args.only.split(","))
        unknown = only - {r["strategy"] for r in runs}
        if unknown:
            parser.error(f"--only: unknown strategies {sorted(unknown)}")
        runs = [r for r in runs if r["strategy"] in only]
        with open(os.path.join(_common.RESULTS, "memory.json")) as f:
            kept = [r for r in json.load(f)["rows"] if r["strategy"] not in only]
    ensure_rankings(sorted({r["net"] for r in runs}))
    rows = []
    for r in runs:
        # Peak RSS from a process with a fixed mmap threshold (_child_env); a second process reads
        # TensorFlow's BFC allocator statistics. Step time comes from a third process with
        # TensorFlow's default setup, as users run it.
        result = {}
        for allocator in ("malloc", "bfc") if args.only else ("malloc", "bfc", "default"):
            argv = [sys.executable, __file__, "--child", json.dumps({**r, "allocator": allocator})]
            out = _common.run_json(argv, r, env=_child_env(allocator))
            if allocator == "malloc":
                result = out
            elif allocator == "bfc":
                result.update({k: v for k, v in out.items() if k.startswith("tensor_")})
            else:
                result["step_seconds"] = out["step_seconds"]
        if args.only:
            result["step_seconds"] = None  # not timed: --only runs next to other work
        result.pop("allocator", None)
        rows.append(result)
        print(
            f"  {rows[-1]['net']} b{rows[-1]['batch']} {label(rows[-1])}: RSS "
            f"{rows[-1]['overhead_mb']:.1f} MB, tensors {rows[-1]['tensor_overhead_mb']:.1f} MB",
            flush=True,
        )
    rows = kept + rows
    for row in rows:
        ref = _full_reference(rows, row)
        row["overhead_vs_full"] = row["overhead_mb"] / max(ref["overhead_mb"], 1e-9)
        row["tensor_overhead_vs_full"] = row["tensor_overhead_mb"] / max(
            ref["tensor_overhead_mb"], 1e-9
        )
        reference = row.get("time_reference_seconds") or ref["step_seconds"]  # see retime()
        row["time_vs_full"] = (
            None if row["step_seconds"] is None else row["step_seconds"] / reference
        )
    head = (
        f"{'network':<15}{'batch':>6}  {'configuration':<26}{'units':>10}{'RSS ovh MB':>11}"
        f"{'x full':>8}{'tensor ovh MB':>14}{'x full':>8}{'retained MB':>12}{'step s':>8}"
        f"{'x full':>8}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['net']:<15}{r['batch']:>6}  {label(r):<26}{r['units']:>10,}{r['overhead_mb']:>11.1f}"
            f"{r['overhead_vs_full']:>8.3f}{r['tensor_overhead_mb']:>14.1f}"
            f"{r['tensor_overhead_vs_full']:>8.3f}"
            f"{r['retained_activation_mb'] + r['retained_mask_mb']:>12.2f}"
            + (
                f"{r['step_seconds']:>8.3f}{r['time_vs_full']:>8.3f}"
                if r["step_seconds"]
                else f"{'-':>8}{'-':>8}"
            )
        )
    payload = {"rows": rows}
    if not args.quick:
        payload["user"] = user if not (args.only or args.timing) else _stored_user(path)
    path = _common.write_json("memory_quick.json" if args.quick else "memory.json", payload)
    print("wrote", path)


if __name__ == "__main__":
    main()
