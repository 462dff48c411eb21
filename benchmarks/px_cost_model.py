"""A cost model of PX pruning: time per round and peak memory against images, resolution, batch
and devices, fitted on small runs and extrapolated to the paper's ImageNet setting.

    nice -n 15 .venv/bin/python benchmarks/px_cost_model.py       # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/px_cost_model.py --replot         # the figure again, from the JSON

Every point is a fresh process that builds ResNet-50 (keras.applications, random weights, 1,000
classes) at one resolution, wraps it and runs `PXPruner(rounds=R).prune` to 90 % sparsity on
images a tf.data pipeline makes as they are read (streamed: one batch in memory at a time, as the
pruners read any dataset). With `devices` > 1 the CPU is split into that many logical devices
(`tf.config.set_logical_device_configuration`) and everything runs inside a MirroredStrategy's
scope: PX's data-parallel path, where each replica sums the data term of its share of a batch.
Measured per point: the whole `prune` call, its first round (tracing included), a later round
(the fastest of the rounds after the first: scores, ranking, masks), and the whole process's peak
RSS (VmHWM) before and after pruning. The point with batch 256 passes an unbatched dataset, so the
pruner batches it itself: 256 is what a user gets from arrays or an unbatched dataset.

The models, by least squares on the one-device points (pixels = height x width):

    round CPU seconds = a * images * pixels / devices + b * pixels + c
    peak RSS MB    = m0 + m1 * batch * pixels + m2 * pixels

The first is the data term (two forward passes per image: the real network for its gates, the
unit-weight one), the path term (one image of ones, forward and backward in float64) and the
ranking and masking of 25.6 M weights; the second is what the process holds whatever the data (the
interpreter, TensorFlow, the model, the masks' snapshot), one batch's activations, and the path
term's float64 activations. The largest point (224 px, the validation) is left out of the fit and
predicted. Time is fitted in CPU seconds (the process's user + system time): the machine is
shared, and a neighbour's load stretches wall time but not the CPU time a round needs; wall time
on an idle machine is CPU time over the parallelism of the least disturbed point. Writes benchmarks/results/px_cost_model.json and px_cost_model.png.
"""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import tf_tradyx as tx  # noqa: E402 (importing runs no op: logical devices can still be set)

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "points",
    "96:128:32:1,128:96:32:1,160:64:32:1,128:32:32:1,128:96:96:1,64:256:256:1,128:96:32:2",
    "resolution:images:batch:devices of each fitted point.",
)
flags.DEFINE_string("validate", "224:64:32:1", "A larger point, predicted by the fitted models.")
flags.DEFINE_integer("rounds", 4, "PX rounds per point (the first traces; the others are timed).")
flags.DEFINE_bool("replot", False, "Only redraw the figure from the JSON of the last run.")
flags.DEFINE_string("child", None, "(internal) resolution:images:batch:devices")

IMAGENET = {"resolution": 224, "images": 10_000, "rounds": 100, "batch": 256}


def _peak_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def _rss_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def child(resolution, images, batch, devices, rounds):
    """One point, in a fresh process: the logical devices are set before any op runs."""
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices
        )
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])
    else:
        strategy = tf.distribute.get_strategy()
    starts = []

    class TimedPX(tx.pruning.PXPruner):
        def _checked_scores(self, session):
            starts.append((time.perf_counter(), time.process_time()))
            return super()._checked_scores(session)

    shape = (resolution, resolution, 3)
    if batch == 256:  # unbatched: the pruner batches it, at its default size

        def image(i):
            return tf.random.stateless_normal(shape, seed=tf.stack([i, 0]))

        data = tf.data.Dataset.range(images).map(image)
    else:

        def make(i):  # a batch made when read, as a decoding pipeline would
            return tf.random.stateless_normal((batch, *shape), seed=tf.stack([i, 0]))

        data = tf.data.Dataset.range(images // batch).map(make)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.applications.ResNet50(weights=None, input_shape=shape, classes=1000)
        masked = tx.pruning.wrap(model)
        before = _rss_mb()
        start, start_cpu = time.perf_counter(), time.process_time()
        TimedPX(rounds=rounds, verbose=0).prune(masked, 0.9, data=data)
        end, end_cpu = time.perf_counter(), time.process_time()
    wall, cpu = np.diff([s[0] for s in starts], axis=0), np.diff([s[1] for s in starts], axis=0)
    return {
        "resolution": resolution,
        "images": images,
        "batch": batch,
        "devices": devices,
        "replicas": strategy.num_replicas_in_sync,
        "rounds": rounds,
        "prune_s": end - start,
        "prune_cpu_s": end_cpu - start_cpu,
        "first_round_s": float(wall[0]),
        "first_round_cpu_s": float(cpu[0]),
        "round_s": float(wall[1:].min()),
        "round_cpu_s": float(cpu[1:].min()),
        "later_rounds_s": wall[1:].tolist(),
        "later_rounds_cpu_s": cpu[1:].tolist(),
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
    }


def _parse(point):
    resolution, images, batch, devices = map(int, point.split(":"))
    return resolution, images, batch, devices


def _time_features(r):
    pixels = r["resolution"] ** 2
    return [r["images"] * pixels / r["devices"], pixels, 1.0]


def _memory_features(r):
    pixels = r["resolution"] ** 2
    return [1.0, r["batch"] * pixels, pixels]


def fit(rows):
    """Least squares on the one-device rows: (time coefficients, in CPU seconds; memory
    coefficients, in MB)."""
    one = [r for r in rows if r["devices"] == 1]
    t_coef = np.linalg.lstsq(
        np.array([_time_features(r) for r in one]),
        np.array([r["round_cpu_s"] for r in one]),
        None,
    )[0]
    m_coef = np.linalg.lstsq(
        np.array([_memory_features(r) for r in one]),
        np.array([r["peak_rss_mb"] for r in one]),
        None,
    )[0]
    return t_coef, m_coef


def predict(t_coef, m_coef, r):
    """(CPU seconds of a later round, whole-process peak RSS in MB) at point `r`."""
    return float(np.dot(t_coef, _time_features(r))), float(np.dot(m_coef, _memory_features(r)))


def plot(rows):
    """Measured against predicted, a round's CPU time and the peak RSS; the validation marked."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (never switches the user's backend)

    fig = Figure(figsize=(9, 3.8))
    ax_t, ax_m = fig.subplots(1, 2)
    for ax, key, title in (
        (ax_t, "round_cpu_s", "CPU seconds per PX round"),
        (ax_m, "peak_rss_mb", "whole-process peak RSS, MB"),
    ):
        model = f"model_{key}"
        for group, marker in (("fit", "o"), ("devices", "s"), ("validation", "*")):
            pts = [r for r in rows if r["role"] == group]
            if pts:
                ax.plot(
                    [r[model] for r in pts],
                    [r[key] for r in pts],
                    marker,
                    ms=11 if marker == "*" else 6,
                    label=group,
                )
        values = [r[key] for r in rows] + [r[model] for r in rows]
        ax.plot([min(values), max(values)], [min(values), max(values)], "k:", lw=1)
        if key == "round_cpu_s":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("model")
        ax.set_ylabel("measured")
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main(argv):
    del argv
    if FLAGS.child:
        print(json.dumps(child(*_parse(FLAGS.child), FLAGS.rounds)))
        return
    png = os.path.join(_common.RESULTS, "px_cost_model.png")
    if FLAGS.replot:
        with open(os.path.join(_common.RESULTS, "px_cost_model.json")) as f:
            plot(json.load(f)["rows"]).savefig(png, dpi=110)
        print("wrote", png)
        return
    rows = []
    plan = [(p, "fit") for p in FLAGS.points] + [(FLAGS.validate, "validation")]
    for point, role in plan:
        resolution, images, batch, devices = _parse(point)
        rounds = FLAGS.rounds if role == "fit" else max(3, FLAGS.rounds - 1)
        argv = [sys.executable, __file__, f"--child={point}", f"--rounds={rounds}"]
        row = _common.run_json(argv, f"PX at {point}")
        row["role"] = "devices" if role == "fit" and devices > 1 else role
        rows.append(row)
        print(
            f"  {resolution} px, {images} images, batch {batch}, {devices} device(s): round "
            f"{row['round_s']:.2f} s ({row['round_cpu_s']:.2f} CPU s), first "
            f"{row['first_round_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    t_coef, m_coef = fit([r for r in rows if r["role"] == "fit"])
    for r in rows:
        r["model_round_cpu_s"], r["model_peak_rss_mb"] = predict(t_coef, m_coef, r)
    # The machine is shared: wall time counts other processes' load, CPU time does not. Wall time
    # on an idle machine = CPU time / the parallelism of the least disturbed point.
    parallelism = max(r["round_cpu_s"] / r["round_s"] for r in rows if r["devices"] == 1)
    trace_cpu = float(np.median([r["first_round_cpu_s"] - r["round_cpu_s"] for r in rows]))
    cpu_round, peak = predict(t_coef, m_coef, {**IMAGENET, "devices": 1})
    pixels = IMAGENET["resolution"] ** 2
    imagenet = {
        **IMAGENET,
        "round_cpu_s": cpu_round,
        "round_s": cpu_round / parallelism,
        "data_term_cpu_s": float(t_coef[0] * IMAGENET["images"] * pixels),
        "prune_cpu_h": (IMAGENET["rounds"] * cpu_round + trace_cpu) / 3600,
        "prune_h": (IMAGENET["rounds"] * cpu_round + trace_cpu) / parallelism / 3600,
        "peak_rss_mb": peak,
        "peak_rss_mb_batch_32": predict(t_coef, m_coef, {**IMAGENET, "batch": 32, "devices": 1})[1],
        "images_held_mb": IMAGENET["images"] * pixels * 3 * 4 / 2**20,
    }
    validation = [r for r in rows if r["role"] == "validation"]
    if validation:
        v = validation[0]
        # The data term measured at the validation point, scaled to ImageNet's images.
        fixed = t_coef[1] * pixels + t_coef[2]
        per_image = (v["round_cpu_s"] - fixed) / v["images"]
        imagenet["round_cpu_s_from_validation"] = fixed + per_image * IMAGENET["images"]
        imagenet["prune_h_from_validation"] = (
            IMAGENET["rounds"] * imagenet["round_cpu_s_from_validation"] / parallelism / 3600
        )
    pairs = {}
    for r in rows:
        if r["devices"] > 1:
            key = (r["resolution"], r["images"], r["batch"])
            same = [
                o
                for o in rows
                if o["devices"] == 1 and (o["resolution"], o["images"], o["batch"]) == key
            ]
            if same:
                pairs[":".join(map(str, key))] = {
                    "devices": r["devices"],
                    "one_device_round_s": same[0]["round_s"],
                    "round_s": r["round_s"],
                    "one_device_round_cpu_s": same[0]["round_cpu_s"],
                    "round_cpu_s": r["round_cpu_s"],
                    "one_device_peak_rss_mb": same[0]["peak_rss_mb"],
                    "peak_rss_mb": r["peak_rss_mb"],
                }

    print(
        f"\nWhat a user sees: PX on ResNet-50 at 224 px with the paper's 10,000 ImageNet images "
        f"and 100 rounds, data streamed in the pruner's default batches of 256, on this machine "
        f"({os.cpu_count()} cores, one device): about {imagenet['round_s'] / 60:.0f} min per round, "
        f"{imagenet['prune_h']:.0f} h in all ({imagenet['prune_cpu_h']:.0f} CPU hours); whole-process "
        f"peak RSS {peak / 1024:.1f} GB ({imagenet['peak_rss_mb_batch_32'] / 1024:.1f} GB in "
        f"batches of 32), where holding the images would add "
        f"{imagenet['images_held_mb'] / 1024:.1f} GB."
    )
    if validation:
        print(
            f"From the validation point's own data term (224 px, {validation[0]['images']} "
            f"images): {imagenet['round_cpu_s_from_validation'] / parallelism / 60:.0f} min per "
            f"round, {imagenet['prune_h_from_validation']:.0f} h in all."
        )
    print(
        f"\nround CPU s = {t_coef[0]:.3e} x images x pixels / devices + {t_coef[1]:.3e} x pixels "
        f"+ {t_coef[2]:.2f}   ({t_coef[0] * pixels * 1e3:.0f} CPU ms per image at 224 px)\n"
        f"peak MB = {m_coef[0]:.0f} + {m_coef[1]:.3e} x batch x pixels + {m_coef[2]:.3e} x pixels"
        f"   ({m_coef[1] * pixels:.1f} MB per image of a batch at 224 px)\n"
        f"wall = CPU / {parallelism:.2f} (the least disturbed point); tracing (first round minus a "
        f"later one), median: {trace_cpu:.1f} CPU s\n"
    )
    table = [
        {
            "role": r["role"],
            "px": r["resolution"],
            "images": r["images"],
            "batch": r["batch"],
            "devices": r["devices"],
            "first round s": f"{r['first_round_s']:.1f}",
            "round s": f"{r['round_s']:.2f}",
            "round CPU s": f"{r['round_cpu_s']:.2f}",
            "model": f"{r['model_round_cpu_s']:.2f}",
            "err %": f"{100 * (r['model_round_cpu_s'] / r['round_cpu_s'] - 1):+.0f}",
            "peak RSS MB": f"{r['peak_rss_mb']:.0f}",
            "model MB": f"{r['model_peak_rss_mb']:.0f}",
            "err % ": f"{100 * (r['model_peak_rss_mb'] / r['peak_rss_mb'] - 1):+.0f}",
        }
        for r in rows
    ]
    print(_common.table(table, list(table[0])))
    for key, p in pairs.items():
        print(
            f"\n{key} (px:images:batch) on {p['devices']} logical CPU devices: a round "
            f"{p['round_s']:.2f} s against {p['one_device_round_s']:.2f} s on one device "
            f"({p['round_cpu_s']:.2f} against {p['one_device_round_cpu_s']:.2f} CPU s), peak RSS "
            f"{p['peak_rss_mb']:.0f} against {p['one_device_peak_rss_mb']:.0f} MB"
        )
    path = _common.write_json(
        "px_cost_model.json",
        {
            "time_model_cpu_s": {
                "images_pixels_per_device": t_coef[0],
                "pixels": t_coef[1],
                "constant": t_coef[2],
            },
            "memory_model_mb": {
                "constant": m_coef[0],
                "batch_pixels": m_coef[1],
                "pixels": m_coef[2],
            },
            "parallelism": parallelism,
            "tracing_cpu_s": trace_cpu,
            "imagenet": imagenet,
            "devices": pairs,
            "rows": rows,
        },
    )
    plot(rows).savefig(png + ".partial.png", dpi=110)
    os.replace(png + ".partial.png", png)
    print("\nwrote", path, "and", png)


if __name__ == "__main__":
    app.run(main)
