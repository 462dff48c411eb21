"""MultiWorkerMirroredStrategy with two worker processes on localhost (TF_CONFIG): PX's masks and
TraDy's selections are the same on both workers and equal a one-process run, and `model.fit` trains
a plain Keras model once `tx.multi_worker.enable_multi_worker_fit` has mended the two
statements of Keras 3.15's TensorFlow trainer that keras-team/keras#20585 trips over; a job whose
worker dies mid-epoch, restarted, resumes through `keras.callbacks.BackupAndRestore` to the weights
of a job never interrupted.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.testing_utils import ROOT

pytestmark = pytest.mark.slow  # three subprocesses per test

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


FIT_SCRIPT = r"""
import json, sys
import tensorflow as tf
mode, out = sys.argv[1], sys.argv[2]
if mode == "multiworker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
else:
    strategy = tf.distribute.get_strategy()
import keras, numpy as np
sys.path.insert(0, {root!r})
import tf_tradyx as tx
tx.multi_worker.enable_multi_worker_fit()
rng = np.random.RandomState(0)
x = rng.rand(64, 4).astype("float32")
y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # global batch 16: 8 per worker
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse", metrics=["mae"])
history = model.fit(ds, epochs=2, validation_data=ds, verbose=0)
evaluated = model.evaluate(ds, verbose=0)
predicted = model.predict(ds, verbose=0)
np.savez(out + ".npz", *[np.asarray(v) for v in model.weights], predicted)
with open(out + ".json", "w") as f:
    json.dump({{"replicas": strategy.num_replicas_in_sync, "history": history.history,
               "evaluated": evaluated}}, f)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_workers_prune_and_sample_identically_and_like_one_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=ROOT))
    base = _run_two_workers(tmp_path, script)
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


def _run_two_workers(tmp_path, script):
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
    return base


def test_two_workers_fit_a_plain_keras_model_like_one_process(tmp_path):
    """keras-team/keras#20585 with the fix: fit (with validation), evaluate and predict run on both
    workers; the workers end bit-identical (the all-reduced gradient is the same tensor on both)
    and equal one process with the same global batch up to float32 rounding: each step's
    gradient is the mean of two half-batch means instead of one full-batch mean, a different
    summation order, so the weights may differ in the last bits (rtol 1e-5 over 8 SGD steps)."""
    script = tmp_path / "fit.py"
    script.write_text(FIT_SCRIPT.format(root=ROOT))
    start = time.perf_counter()
    base = _run_two_workers(tmp_path, script)
    single = subprocess.run(
        [sys.executable, str(script), "single", str(tmp_path / "one")],
        env=base,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    print(f"two workers and one process: {time.perf_counter() - start:.1f} s")
    runs = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("w0", "w1", "one")}
    assert runs["w0"]["replicas"] == 2 and runs["one"]["replicas"] == 1
    assert runs["w0"] == runs["w1"]  # the same logs, metrics reduced over both workers
    assert set(runs["w0"]["history"]) == {"loss", "mae", "val_loss", "val_mae"}
    assert runs["w0"]["history"]["loss"][1] < runs["w0"]["history"]["loss"][0]  # it trained
    for key in ("loss", "mae", "val_loss", "val_mae"):
        np.testing.assert_allclose(
            runs["w0"]["history"][key], runs["one"]["history"][key], rtol=1e-5
        )
    arrays = {n: np.load(tmp_path / f"{n}.npz") for n in ("w0", "w1", "one")}
    for key in arrays["one"].files:  # the weights, then the predictions
        np.testing.assert_array_equal(arrays["w0"][key], arrays["w1"][key])
        np.testing.assert_allclose(arrays["w0"][key], arrays["one"][key], rtol=1e-5, atol=1e-6)


PIPELINE_SCRIPT = r"""
import json, sys
import tensorflow as tf
mode, out = sys.argv[1], sys.argv[2]
if mode == "multiworker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
else:
    strategy = tf.distribute.get_strategy()
import keras, numpy as np
sys.path.insert(0, {root!r})
import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, data, small_cnn
tx.multi_worker.enable_multi_worker_fit()
x, y, _ = data(64)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # global batch 16: 8 per worker
sp = tx.sparse_update
with strategy.scope():
    keras.utils.set_random_seed(0)
    masked = tx.pruning.wrap(small_cnn(), skip=["head"])
    tx.pruning.PXPruner(rounds=3, verbose=0).prune(masked, 0.6, data=ds.take(2))
    masked.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
masked.fit(ds, epochs=1, verbose=0)
with strategy.scope():
    dynamic = sp.wrap(masked, budget=300, layers=CANDIDATES, seed=3)
    dynamic.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
selections = []
class Record(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        selections.append({{k: v.tolist() for k, v in sp.selection(self.model).items()}})
dynamic.fit(ds, epochs=2, verbose=0, callbacks=[sp.ChannelResampler(), Record()])
with strategy.scope():
    static = sp.wrap(masked, budget=300, strategy="static_full_random", seed=3)
    static.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
static_before = {{k: v.tolist() for k, v in sp.selection(static).items()}}
static.fit(ds, epochs=2, verbose=0, callbacks=[sp.ChannelResampler()])
static_after = {{k: v.tolist() for k, v in sp.selection(static).items()}}
pruned_nonzero = sum(
    int(np.count_nonzero(np.asarray(k)[np.asarray(m) == 0]))
    for w in tx.pruning.masked_layers(dynamic) for k, m in zip(w.kernels, w.masks)
)
np.savez(out + ".npz", *[np.asarray(v) for v in dynamic.trainable_weights])
with open(out + ".json", "w") as f:
    json.dump({{"replicas": strategy.num_replicas_in_sync, "selections": selections,
               "static_kept": static_before == static_after, "pruned_nonzero": pruned_nonzero}}, f)
"""


def test_the_readme_pipeline_runs_on_two_workers_like_one_process(tmp_path):
    """PX prune (data term summed over workers) -> fit -> TraDy fit with a resampler, and a static
    strategy, all through `model.fit` on two workers: the workers agree bit for bit, draw the
    one-process selections, keep pruned weights at exactly 0, and a static selection stays put."""
    script = tmp_path / "pipeline.py"
    script.write_text(PIPELINE_SCRIPT.format(root=ROOT))
    base = _run_two_workers(tmp_path, script)
    single = subprocess.run(
        [sys.executable, str(script), "single", str(tmp_path / "one")],
        env=base,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    runs = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("w0", "w1", "one")}
    assert runs["w0"]["replicas"] == 2
    assert runs["w0"]["selections"] == runs["w1"]["selections"] == runs["one"]["selections"]
    assert len(runs["w0"]["selections"]) == 2
    for n in ("w0", "w1", "one"):
        assert runs[n]["static_kept"] and runs[n]["pruned_nonzero"] == 0
    weights = {n: np.load(tmp_path / f"{n}.npz") for n in ("w0", "w1", "one")}
    for key in weights["one"].files:
        np.testing.assert_array_equal(weights["w0"][key], weights["w1"][key], err_msg=key)
    # Not equal to one process: small_cnn's BatchNormalization normalizes each worker's half
    # batch with that half's statistics (synchronized=False), so the steps differ by more than
    # round-off; without BatchNormalization they agree (test_two_workers_fit_a_plain_...).
    first = weights["one"].files[0]
    assert not np.allclose(weights["w0"][first], weights["one"][first], rtol=1e-5, atol=0)


RESTART_SCRIPT = r"""
import json, os, sys
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras, numpy as np
sys.path.insert(0, {root!r})
import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, data, small_cnn
backup, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3]
worker = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
tx.multi_worker.enable_multi_worker_fit()
x, y, _ = data(64)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # global batch 16: 8 per worker
sp = tx.sparse_update
with strategy.scope():  # a restarted job builds the same model, then BackupAndRestore restores it
    keras.utils.set_random_seed(0)
    masked = tx.pruning.wrap(small_cnn(), skip=["head"])
    tx.pruning.PXPruner(rounds=3, verbose=0).prune(masked, 0.6, data=ds.take(2))
    sparse = sp.wrap(masked, budget=300, layers=CANDIDATES, seed=3)
    sparse.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)

class Record(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        with open(out + ".sel", "a") as f:
            f.write(json.dumps([epoch, sp.draws(self.model), {{k: v.tolist() for k, v in
                                sp.selection(self.model).items()}}]) + "\n")

    def on_train_batch_end(self, batch, logs=None):
        if [self.epoch, batch] == json.loads(kill_at) and worker == 1:
            os._exit(3)  # as a preempted machine: no exception, no callback, no cleanup

# One backup directory per worker: Keras' BackupAndRestore writes from every worker.
backup = keras.callbacks.BackupAndRestore(os.path.join(backup, f"worker{{worker}}"))
sparse.fit(ds, epochs=3, verbose=0, callbacks=[sp.ChannelResampler(), backup, Record()])
np.savez(out + ".npz", *[np.asarray(v) for v in sparse.weights],
         *[np.asarray(v) for v in sparse.optimizer.variables])
"""


def test_a_job_killed_mid_epoch_resumes_with_backup_and_restore_to_the_uninterrupted_weights(
    tmp_path,
):
    """Two workers train a PX-pruned, TraDy-wrapped model with `ChannelResampler` and
    `keras.callbacks.BackupAndRestore` (saved at every epoch's end). Worker 1 dies in the middle of
    epoch 1 (after its second step); the job is stopped and started again with the same TF_CONFIG
    and backup directories, as a cluster manager restarts it. The restarted job restores the
    weights, masks, channel selection, draw counter and optimizer state of epoch 0's end, redoes
    epoch 1 from its start with the same draw, and ends bit-identical to a job never interrupted:
    every step reads the same values in the same order (the two-worker all-reduce adds two
    tensors, a + b = b + a exactly), so no rounding difference can arise."""
    script = tmp_path / "restart.py"
    script.write_text(RESTART_SCRIPT.format(root=ROOT))
    start = time.perf_counter()
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    straight = _start_two_workers(script, workers, tmp_path / "b0", tmp_path / "straight", "[-1]")
    for p in straight:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    killed = _start_two_workers(script, workers, tmp_path / "b1", tmp_path / "resumed", "[1, 1]")
    _, err = killed[1].communicate(timeout=600)
    assert killed[1].returncode == 3, err[-3000:]
    killed[0].kill()  # worker 0 waits in the next all-reduce for a peer that is gone
    killed[0].communicate(timeout=60)
    assert not (tmp_path / "resumed_w0.npz").exists()
    for i in range(2):  # epoch 0 ended and was saved; epoch 1 was under way
        saved = json.loads((tmp_path / "b1" / f"worker{i}" / "training_metadata.json").read_text())
        assert saved["epoch"] == 1
    restarted = _start_two_workers(script, workers, tmp_path / "b1", tmp_path / "resumed", "[-1]")
    for p in restarted:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    print(f"three two-worker jobs: {time.perf_counter() - start:.1f} s")

    def records(name):
        lines = (tmp_path / f"{name}.sel").read_text().splitlines()
        return [json.loads(line) for line in lines]

    for i in range(2):
        whole, resumed = records(f"straight_w{i}"), records(f"resumed_w{i}")
        assert [r[:2] for r in whole] == [[0, 1], [1, 2], [2, 3]]  # one draw per epoch
        # Epochs 0 and 1 began before the kill; the restart begins at epoch 1 again, with the
        # draw counter restored (2 would be the third draw, not the second's repeat).
        assert resumed == whole[:2] + whole[1:]
        assert len({json.dumps(r[2]) for r in whole}) == 3
    arrays = {n: np.load(tmp_path / f"{n}.npz") for n in ("straight_w0", "straight_w1")}
    arrays.update({n: np.load(tmp_path / f"{n}.npz") for n in ("resumed_w0", "resumed_w1")})
    reference = arrays["straight_w0"]
    for name, got in arrays.items():  # weights, masks, selections, then the optimizer's state
        assert got.files == reference.files
        for key in reference.files:
            np.testing.assert_array_equal(got[key], reference[key], err_msg=f"{name} {key}")


def _start_two_workers(script, workers, backup, out, kill_at):
    base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    procs = []
    for i in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        cmd = [sys.executable, str(script), str(backup), f"{out}_w{i}", kill_at]
        env = {**base, "TF_CONFIG": json.dumps(config)}
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    return procs


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
