"""MultiWorkerMirroredStrategy with two worker processes on localhost (TF_CONFIG): PX's masks and
TraDy's selections are the same on both workers and equal a one-process run.

Training itself is not run here: Keras 3's `model.fit` does not support this strategy
(keras-team/keras#20585, "Attempt to convert a value (PerReplica...)" for a plain Keras model as
well), so the part tf_tradyx controls, pruning and sampling, is what is tested.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.testing_utils import ROOT

pytestmark = pytest.mark.slow  # three subprocesses

SCRIPT = r"""
import json, sys
import tensorflow as tf
mode, out = sys.argv[1], sys.argv[2]
if mode == "multiworker":  # before any op runs: collectives are configured at program start
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
else:
    strategy = tf.distribute.get_strategy()
import keras, numpy as np
sys.path.insert(0, {root!r})
import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, data, small_cnn
x, y, _ = data(64)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
with strategy.scope():
    keras.utils.set_random_seed(0)
    masked = tx.pruning.wrap(small_cnn(), skip=["head"])
    tx.pruning.PXPruner(rounds=5, verbose=0).prune(masked, 0.6, data=ds.take(2))
    sparse = tx.sparse_update.wrap(masked, budget=300, layers=CANDIDATES, seed=None)
    selections = [tx.sparse_update.selection(sparse)]
    for _ in range(3):
        selections.append(tx.sparse_update.resample(sparse))
masks = [np.asarray(m) for w in tx.pruning.masked_layers(masked) for m in w.masks]
np.savez(out + ".npz", *masks)
with open(out + ".json", "w") as f:
    json.dump({{"replicas": strategy.num_replicas_in_sync,
               "selections": [{{k: v.tolist() for k, v in s.items()}} for s in selections]}}, f)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_workers_prune_and_sample_identically_and_like_one_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=ROOT))
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    procs = []
    for i in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        env = {**base, "TF_CONFIG": json.dumps(config)}
        cmd = [sys.executable, str(script), "multiworker", str(tmp_path / f"w{i}")]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    single = subprocess.run(
        [sys.executable, str(script), "single", str(tmp_path / "one")],
        env=base,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    runs = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("w0", "w1", "one")}
    assert runs["w0"]["replicas"] == 2 and runs["one"]["replicas"] == 1
    # seed=None follows Keras' global seed, set identically on every worker.
    assert runs["w0"]["selections"] == runs["w1"]["selections"] == runs["one"]["selections"]
    assert len({json.dumps(s) for s in runs["w0"]["selections"]}) == 4  # resampled each time
    masks = {n: np.load(tmp_path / f"{n}.npz") for n in ("w0", "w1", "one")}
    for key in masks["one"].files:
        np.testing.assert_array_equal(masks["w0"][key], masks["w1"][key])
        np.testing.assert_array_equal(masks["w0"][key], masks["one"][key])


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
