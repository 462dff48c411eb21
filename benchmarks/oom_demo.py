"""Under a memory cap, full fine-tuning runs out of memory where TraDy trains: a demonstration.

    sudo python benchmarks/oom_demo.py                 # cap 1,300 MB, MobileNetV2-w0.35, batch 256
    python benchmarks/oom_demo.py --cap_mb=1300 --batch=256 --steps=6

Each configuration (full fine-tuning, then TraDy at 27,946 units) trains the same pretrained
network at the same batch in its own process, inside a memory cgroup whose limit is the cap: the
kernel counts everything the process holds (TensorFlow, the model, tensors, tracing) and kills it
when the cap is exceeded, as a container limit (`docker run --memory`) or a small device would.
Creating the cgroup needs write access to the cgroup file system (root here); without it, run this
script inside a capped environment instead (`systemd-run --scope -p MemoryMax=1300M python
benchmarks/oom_demo.py --cap_mb=0`, or `docker run --memory=1300m ...`) and it trains both
uncapped and reports how each ended.

Prints both outcomes and writes benchmarks/results/oom_demo.json.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import tf_tradyx as tx  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("cap_mb", 1300, "Memory cap of each process, MB (0: no cgroup, see above).")
flags.DEFINE_integer("batch", 256, "Batch size (the same for both).")
flags.DEFINE_integer("steps", 6, "Training steps (2 epochs of steps/2; TraDy resamples each).")
flags.DEFINE_integer("budget", 27946, "TraDy's budget, memory units.")
flags.DEFINE_string("child", None, "(internal) full or tradi")

NET = "mbv2-w0.35"
RANKING = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "rankings", f"{NET}.json"
)


def train(strategy, batch, steps, budget):
    """One capped training run; prints its loss (the parent reads how the process ended)."""
    keras.utils.set_random_seed(0)
    model = tx.models.load_pretrained(NET, num_classes=10)
    kwargs = {"strategy": strategy, "seed": 0}
    if strategy == "tradi":
        layers = tx.sparse_update.LayerRanking.load(RANKING).top_k(0.97)
        kwargs.update(layers=layers, budget=budget)
    sparse = tx.sparse_update.wrap(model, **kwargs)
    sparse.compile(
        keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, 128, 128, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    history = sparse.fit(
        tf.data.Dataset.from_tensors((x, y)).repeat(),
        epochs=2,
        steps_per_epoch=max(steps // 2, 1),
        verbose=0,
        callbacks=[tx.sparse_update.ChannelResampler()],
    )
    print(json.dumps({"loss": [float(v) for v in history.history["loss"]]}))


def _cgroup(cap_mb):
    """A fresh memory cgroup limited to cap_mb (v2 or v1), or None when none can be made."""
    name = f"tf_tradyx_oom_demo_{uuid.uuid4().hex[:8]}"
    for root, marker, limit in (
        ("/sys/fs/cgroup", "cgroup.controllers", "memory.max"),  # cgroup v2
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.limit_in_bytes"),  # v1
    ):
        if not os.path.exists(os.path.join(root, marker)):
            continue
        path = os.path.join(root, name)
        try:
            os.mkdir(path)
            with open(os.path.join(path, limit), "w") as f:
                f.write(str(cap_mb * 2**20))
            swap = os.path.join(path, "memory.memsw.limit_in_bytes")  # no escape into swap
            if os.path.exists(swap):
                with open(swap, "w") as f:
                    f.write(str(cap_mb * 2**20))
            return path
        except OSError:
            if os.path.isdir(path):
                os.rmdir(path)
    return None


def _run(strategy, cgroup):
    argv = [
        sys.executable,
        __file__,
        f"--child={strategy}",
        f"--batch={FLAGS.batch}",
        f"--steps={FLAGS.steps}",
        f"--budget={FLAGS.budget}",
    ]

    if cgroup:  # the shell joins the capped cgroup, then becomes the training process
        procs = os.path.join(cgroup, "cgroup.procs")
        argv = ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv]
    start = time.perf_counter()
    proc = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    seconds = time.perf_counter() - start
    out = {"strategy": strategy, "returncode": proc.returncode, "seconds": round(seconds, 1)}
    if proc.returncode == 0:
        out["outcome"] = "trained"
        out["loss"] = json.loads(proc.stdout.strip().splitlines()[-1])["loss"]
    elif proc.returncode == -signal.SIGKILL:
        out["outcome"] = "killed: out of memory (the kernel's OOM killer, SIGKILL)"
    else:
        out["outcome"] = "failed"
        tail = proc.stderr.strip().splitlines()[-3:]
        out["error"] = " | ".join(tail)
        if any("memory" in line.lower() or "OOM" in line for line in tail):
            out["outcome"] = "failed: out of memory"
    return out


def main(argv):
    del argv
    if FLAGS.child:
        train(FLAGS.child, FLAGS.batch, FLAGS.steps, FLAGS.budget)
        return
    if not os.path.exists(RANKING):
        raise app.UsageError(f"{RANKING} is missing: run benchmarks/memory.py once to make it.")
    rows = []
    for strategy in ("full", "tradi"):
        cgroup = _cgroup(FLAGS.cap_mb) if FLAGS.cap_mb else None
        if FLAGS.cap_mb and cgroup is None:
            raise app.UsageError(
                "Cannot create a memory cgroup here (no write access to /sys/fs/cgroup). Run the "
                "script inside a capped environment with --cap_mb=0, e.g. systemd-run --scope -p "
                "MemoryMax=1300M python benchmarks/oom_demo.py --cap_mb=0."
            )
        try:
            rows.append(_run(strategy, cgroup))
        finally:
            if cgroup:
                os.rmdir(cgroup)
        r = rows[-1]
        loss = f", loss {r['loss'][0]:.3f} -> {r['loss'][-1]:.3f}" if "loss" in r else ""
        print(f"{'full fine-tuning' if strategy == 'full' else 'TraDy':<17} {r['outcome']}{loss}")
    path = _common.write_json(
        "oom_demo.json",
        {
            "network": NET,
            "cap_mb": FLAGS.cap_mb,
            "batch": FLAGS.batch,
            "steps": FLAGS.steps,
            "budget": FLAGS.budget,
            "rows": rows,
        },
    )
    print("wrote", path)


if __name__ == "__main__":
    app.run(main)
