"""MirroredStrategy on two logical CPU devices: same masks, selections and weights as one device."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.testing_utils import ROOT

pytestmark = pytest.mark.slow  # two subprocesses

SCRIPT = r"""
import json, sys
import tensorflow as tf
mode, out = sys.argv[1], sys.argv[2]
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
sys.path.insert(0, {root!r})
import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, data, small_cnn
if mode == "mirrored":
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
    strategy = tf.distribute.get_strategy()
x, y, _ = data(64)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # global batch 16
with strategy.scope():
    keras.utils.set_random_seed(0)
    masked = tx.pruning.wrap(small_cnn(), skip=["head"])
    tx.pruning.PXPruner(rounds=5, verbose=0).prune(masked, 0.6, data=ds.take(2))
    masks = [np.asarray(m) for w in tx.pruning.masked_layers(masked) for m in w.masks]
    sparse = tx.sparse_update.wrap(masked, budget=300, layers=CANDIDATES, seed=3)
    sparse.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
selections, replicas_agree = [], []

class Record(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        selections.append({{k: v.tolist() for k, v in
                            tx.sparse_update.selection(self.model).items()}})
        for w in tx.sparse_update.sparse_layers(self.model):
            per_replica = getattr(w.channel_indices._value, "values", None)  # MirroredVariable
            values = [np.asarray(v) for v in per_replica] if per_replica else []
            replicas_agree.append(len(values) == strategy.num_replicas_in_sync and
                                  all(np.array_equal(values[0], v) for v in values))

sparse.fit(ds, epochs=3, verbose=0, callbacks=[tx.sparse_update.ChannelResampler(), Record()])
state = tx.sparse_update.sampler_of(sparse)
np.savez(out + ".npz", *[np.asarray(v) for v in sparse.weights], *masks)
with open(out + ".json", "w") as f:
    json.dump({{"replicas": strategy.num_replicas_in_sync, "selections": selections,
               "replicas_agree": replicas_agree, "resamples": state.resamples}}, f)
"""


def test_mirrored_strategy_matches_one_device(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=ROOT))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results = {}
    for mode in ("single", "mirrored"):
        proc = subprocess.run(
            [sys.executable, str(script), mode, str(tmp_path / mode)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[mode] = (
            json.loads((tmp_path / f"{mode}.json").read_text()),
            np.load(tmp_path / f"{mode}.npz"),
        )
    (single, w1), (mirrored, w2) = results["single"], results["mirrored"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    assert mirrored["selections"] == single["selections"]  # one sampling, broadcast
    # Each replica holds its own copy of the indices, and the copies are equal.
    assert all(mirrored["replicas_agree"]) and len(mirrored["replicas_agree"]) == 3 * 4
    assert mirrored["resamples"] == single["resamples"] == 1 + 3  # wrap + once per epoch
    assert len(w1.files) == len(w2.files)
    for k in w1.files:  # trained weights, then the PX masks
        np.testing.assert_allclose(w1[k], w2[k], rtol=1e-5, atol=1e-6, err_msg=k)


PX_SCRIPT = r"""
import json, sys
import tensorflow as tf
out = sys.argv[1]
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
sys.path.insert(0, {root!r})
import tf_tradyx as tx
x = np.random.default_rng(0).uniform(0, 1, (10, 32, 32, 3)).astype("float32")  # 5 per replica
y = np.arange(10) % 10
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = {{}}
for exact in (True, False):
    for mode in ("single", "mirrored"):
        keras.utils.set_random_seed(0)
        masked = tx.pruning.wrap(tx.models.resnet20(num_classes=10))
        pruner = tx.pruning.PXPruner(rounds=2, exact_data_term=exact, verbose=0)
        scope = strategy.scope() if mode == "mirrored" else tf.distribute.get_strategy().scope()
        with scope:
            scores = pruner.score(masked, (x, y))
            pruner.prune(masked, 0.9, (x, y))
        masks = [np.asarray(m) for w in tx.pruning.masked_layers(masked) for m in w.masks]
        key = f"{{mode}}-{{'exact' if exact else 'scaled'}}"
        np.savez(out + key + ".npz", *[scores[k] for k in sorted(scores)], *masks)
        results[key] = len(scores)
with open(out + ".json", "w") as f:
    json.dump(results, f)
"""


def test_px_scores_data_parallel_under_mirrored_strategy_as_on_one_device(tmp_path):
    """PX's data term is a sum over examples: under a MirroredStrategy each replica sums its
    share. In float64 (exact_data_term) the scores agree to round-off and the masks are the same;
    in the default scaled float32 data term each replica normalizes its own share, so scores
    differ by float32 round-off compounded over the 20 weighted layers of ResNet-20
    (<= 20 * 6e-8 ~ 1.2e-6 relative), checked at 1e-5 of each kernel's largest score."""
    script = tmp_path / "px.py"
    script.write_text(PX_SCRIPT.format(root=ROOT))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = json.loads((tmp_path / "r.json").read_text())["single-exact"]
    for term, rtol in (("exact", 1e-12), ("scaled", 1e-5)):
        one = np.load(tmp_path / f"rsingle-{term}.npz")
        two = np.load(tmp_path / f"rmirrored-{term}.npz")
        keys = sorted(one.files, key=lambda k: int(k.split("_")[1]))
        for k in keys[:n]:  # the scores of every kernel
            scale = np.abs(one[k]).max()
            assert scale > 0
            np.testing.assert_allclose(two[k], one[k], rtol=0, atol=rtol * scale, err_msg=k)
        if term == "exact":
            for k in keys[n:]:  # the masks after pruning to 90 %
                np.testing.assert_array_equal(two[k], one[k], err_msg=k)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
