"""tf_tradyx's pruners side by side with the PX authors' PyTorch code, one fresh process per run.

    python benchmarks/peers.py --peer_checkout=DIR --torch_python=PYTHON [--repeats=3]

`--peer_checkout` is a local checkout of https://github.com/iurada/px-ntk-pruning (measured at
ed6c40e; nothing of it is copied here) and `--torch_python` an interpreter with torch (and tqdm)
installed: the authors' code runs there, through `_peer_px_ntk.py`, with their own pruner classes
and pruning loop. Both sides prune the same ResNet-20 (their `lottery_resnet.resnet20`, ours
`tx.models.resnet20`: the same network) on the same 100 CIFAR-10 training images (10 per class),
to 98.2 % sparsity: PX and SynFlow in 100 rounds (the authors' CIFAR-10 setting), SNIP in one.
Each run is a fresh process; the runs alternate (ours, theirs, ours, ...) so that a noisy machine
slows both alike; medians of `--repeats`. Reported per method: the whole pruning call (making the
pruner, every round, the masks), the whole process (imports included), the first round and the
median later round, and the process's peak RSS. Torch uses `--threads` threads (2 = this machine's
cores); TensorFlow its defaults.

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

FLAGS = flags.FLAGS
flags.DEFINE_string("peer_checkout", None, "Local checkout of iurada/px-ntk-pruning.")
flags.DEFINE_string("torch_python", None, "Python interpreter with torch and tqdm installed.")
flags.DEFINE_integer("repeats", 3, "Fresh processes per method and side (median reported).")
flags.DEFINE_integer("threads", 2, "Torch threads.")
flags.DEFINE_list("methods", ["px", "synflow", "snip"], "Methods to compare.")
flags.DEFINE_float("density", 0.018, "Fraction of weights kept (98.2 % sparsity).")
flags.DEFINE_string("child", None, "(internal) run our pruner: method,data.npz,rounds")

ROUNDS = {"px": 100, "synflow": 100, "snip": 1}
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_peer_px_ntk.py")


def _peak_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def ours(method, data_path, rounds, density):
    """One pruning call of tf_tradyx, timed as the peer's is."""
    arrays = np.load(data_path)
    data = (arrays["x"], arrays["y"])
    keras.utils.set_random_seed(0)
    model = tx.models.resnet20()
    ready = time.perf_counter()
    masked = tx.pruning.wrap(model)
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
    proc = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.child:
        method, path, rounds = FLAGS.child.split(",")
        print(json.dumps(ours(method, path, int(rounds), FLAGS.density)))
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
