"""How one PX scoring round grows with the number of pruning images and with the network.

    python benchmarks/px_scaling.py                          # about 10 minutes on 2 cores
    python benchmarks/px_scaling.py --resnet50_images=100,1000,10000   # + ~15 min per 1,000

ResNet-20 at 32 px (CIFAR) and ResNet-50 at 224 px (keras.applications, random weights, 1,000
classes: ImageNet's shape; the paper's ImageNet setting is 10 images per class, 10,000 images). The
images come from a tf.data pipeline that makes each batch when it is read (as decoding files would),
so nothing but the pipeline's own batch is in memory. Each configuration runs in a fresh process and
reports: the first round (tracing included), a second round (what each of the 100 rounds costs),
the process's peak RSS before scoring and after both rounds, and what holding the images in memory
would have cost (images x bytes per image), the old behaviour of the pruner. Writes
benchmarks/results/px_scaling.json and px_scaling.png (time and peak RSS against images).
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

import tf_tradyx as tx  # noqa: E402
from tf_tradyx.pruning.pruner import Session  # noqa: E402 (not public: one session, two rounds)

FLAGS = flags.FLAGS
flags.DEFINE_list("resnet20_images", ["100", "1000", "10000"], "Image counts for ResNet-20.")
flags.DEFINE_list("resnet50_images", ["100", "1000"], "Image counts for ResNet-50 (224 px).")
flags.DEFINE_string("child", None, "(internal) network,images")

NETWORKS = {  # input size, classes, batch size of the pruning pipeline
    "resnet20": ((32, 32, 3), 10, 100),
    "resnet50": ((224, 224, 3), 1000, 25),
}


def _peak_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def child(network, images):
    shape, classes, batch = NETWORKS[network]
    keras.utils.set_random_seed(0)
    if network == "resnet20":
        model = tx.models.resnet20()
    else:
        model = keras.applications.ResNet50(weights=None, input_shape=shape, classes=classes)
    masked = tx.pruning.wrap(model)

    def make(i):  # a batch made when read, as a decoding pipeline would
        return tf.random.stateless_normal((batch, *shape), seed=tf.stack([i, 0]))

    data = tf.data.Dataset.range(images // batch).map(make)
    pruner = tx.pruning.PXPruner(verbose=False)
    before = _peak_mb()
    start = time.perf_counter()
    session = Session(pruner, masked, data)
    pruner._checked_scores(session)  # first round: tracing included
    first = time.perf_counter() - start
    start = time.perf_counter()
    pruner._checked_scores(session)
    later = time.perf_counter() - start
    return {
        "network": network,
        "input": list(shape),
        "images": images,
        "batch": batch,
        "weights": int(sum(np.prod(v.shape) for v in masked.trainable_weights)),
        "first_round_s": first,
        "round_s": later,
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
        "images_in_memory_mb": images * float(np.prod(shape)) * 4 / 2**20,
    }


def plot(rows):
    """Round time and peak RSS against the number of images, one line per network."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (never switches the user's backend)

    fig = Figure(figsize=(9, 3.6))
    ax_time, ax_mem = fig.subplots(1, 2)
    for network in NETWORKS:
        pts = sorted((r["images"], r) for r in rows if r["network"] == network)
        if not pts:
            continue
        n = [p[0] for p in pts]
        ax_time.plot(n, [p[1]["round_s"] for p in pts], "o-", label=network)
        ax_mem.plot(n, [p[1]["peak_rss_mb"] for p in pts], "o-", label=f"{network}: streamed")
        ax_mem.plot(
            n,
            [p[1]["peak_rss_mb"] + p[1]["images_in_memory_mb"] for p in pts],
            "x--",
            label=f"{network}: + images held (before)",
        )
    for ax, title in ((ax_time, "seconds per PX round"), (ax_mem, "peak RSS, MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pruning images")
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv):
    del argv
    if FLAGS.child:
        network, images = FLAGS.child.split(",")
        print(json.dumps(child(network, int(images))))
        return
    rows = []
    for network, counts in (
        ("resnet20", FLAGS.resnet20_images),
        ("resnet50", FLAGS.resnet50_images),
    ):
        for images in map(int, counts):
            argv = [sys.executable, __file__, f"--child={network},{images}"]
            rows.append(_common.run_json(argv, f"{network} with {images} images"))
            r = rows[-1]
            print(
                f"  {network} {images:>6} images: round {r['round_s']:.2f} s, peak RSS "
                f"{r['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    print(
        f"\n{'network':<10}{'input':>13}{'images':>8}{'first round s':>15}{'round s':>9}"
        f"{'RSS before MB':>15}{'peak RSS MB':>13}{'images held MB':>16}"
    )
    for r in rows:
        size = "x".join(map(str, r["input"]))
        print(
            f"{r['network']:<10}{size:>13}{r['images']:>8}{r['first_round_s']:>15.2f}"
            f"{r['round_s']:>9.2f}{r['rss_before_mb']:>15.0f}{r['peak_rss_mb']:>13.0f}"
            f"{r['images_in_memory_mb']:>16.0f}"
        )
    path = _common.write_json("px_scaling.json", {"rows": rows})
    png = os.path.join(_common.RESULTS, "px_scaling.png")
    plot(rows).savefig(png + ".partial.png", dpi=120)
    os.replace(png + ".partial.png", png)
    print("wrote", path, "and", png)


if __name__ == "__main__":
    app.run(main)
