"""Shared helpers for the benchmark scripts: output files and the CIFAR-10 source."""

import json
import os
import platform
import subprocess

import keras
import numpy as np

import tf_tradyx as tx

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SHARED_CIFAR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "cifar10-jpeg.tar.gz"
)
SHARED_CIFAR_SHA256 = "5613ef7672478fbdd04ff9ba40b7635b4a6c51f1513bfd71b1fb3adfdfd45253"


def cifar10(split):
    """The full CIFAR-10 JPEG archive when ../shared has it, else the bundled sample."""
    if os.path.exists(SHARED_CIFAR):
        return tx.data.from_folder(
            SHARED_CIFAR, split, sha256=SHARED_CIFAR_SHA256
        ), "shared archive"
    return tx.data.cifar10_sample(split), "bundled sample"


def pruning_batch(per_class=10):
    """The pruning split for ResNet-20: the first `per_class` CIFAR-10 training images of each
    class, normalized, as numpy arrays (x, y); and the data source."""
    train, source = cifar10("train")
    norm = tx.data.normalization("resnet20")
    subset = tx.data.balanced_subset(train, per_class, 10)
    x, y = zip(*[(norm(a).numpy(), b) for a, b in subset.as_numpy_iterator()])
    return (np.stack(x), np.array(y)), source


def run_json(argv, what, env=None):
    """Runs a benchmark's child process (a fresh interpreter per measurement) and returns the JSON
    object it printed last; a failed child raises with the end of its stderr."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"} if env is None else env
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_json(name, payload):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    payload = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, **payload}
    partial = f"{path}.partial"  # written whole, then renamed: never a half-written result
    with open(partial, "w") as f:
        json.dump(
            payload,
            f,
            indent=1,
            default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o),
        )
    os.replace(partial, path)
    return path


def table(rows, columns):
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(r[c]).rjust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


@keras.saving.register_keras_serializable(package="tf_tradyx_benchmarks")
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
