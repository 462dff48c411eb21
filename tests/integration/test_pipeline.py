"""PX + TraDy together, checkpoints and resume, loading bad files, TensorBoard summaries."""

import glob
import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, ROOT, data, small_cnn

SU = tx.sparse_update


def pruned_small_cnn(sparsity=0.6):
    masked = tx.pruning.wrap(small_cnn(), skip=["head"])
    tx.pruning.RandomPruner(seed=0).prune(masked, sparsity)
    return masked


def test_sparse_update_of_pruned_model_keeps_pruned_weights_zero():
    masked = pruned_small_cnn()
    _, _, ds = data()
    sparse = SU.wrap(masked, budget=300, layers=CANDIDATES, seed=2)
    sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS)
    before = {w.layer.name: w.kernel.numpy().copy() for w in SU.sparse_layers(sparse)}
    sparse.fit(ds, epochs=3, verbose=0, callbacks=[SU.ChannelResampler()])
    moved = 0
    for w in SU.sparse_layers(sparse):
        mask = w.kernel_mask.numpy()
        kernel = w.kernel.numpy()
        assert np.all(kernel[mask == 0] == 0), w.layer.name  # exactly zero, every epoch
        moved += int((kernel != before[w.layer.name]).sum())
    assert moved > 0
    # Frozen masked layers elsewhere keep their masks too; strip twice gives the same function.
    plain = tx.pruning.strip(SU.strip(sparse))
    x, _, _ = data(4)
    np.testing.assert_allclose(plain(x), sparse(x), rtol=1e-5, atol=1e-6)
    kept = tx.pruning.report(masked).kept
    assert (
        sum(
            int(np.count_nonzero(l.kernel))
            for l in plain.layers
            if hasattr(l, "kernel") and l.name != "head"
        )
        == kept
    )


def test_count_pruned_accounting():
    masked = pruned_small_cnn()
    table = SU.cost_table(masked)
    mask = np.asarray(masked.get_layer("masked_pw").masks[0]) != 0
    alive = mask.sum(axis=(0, 1, 3))
    np.testing.assert_array_equal(table["pw"].channel_units(False), alive + 36)
    np.testing.assert_array_equal(table["pw"].channel_units(True), np.full(8, 6 + 36))
    for count_pruned in (True, False):
        sparse = SU.wrap(masked, budget=300, layers=CANDIDATES, count_pruned=count_pruned, seed=4)
        e = SU.efficiency(sparse)
        assert e.units == (e.units_all_weights if count_pruned else e.units_unpruned_weights)
        assert e.units <= 300
        assert e.units_unpruned_weights <= e.units_all_weights
        chosen = SU.selection(sparse)
        assert e.units_unpruned_weights == sum(
            int(table[n].channel_units(False)[c].sum()) for n, c in chosen.items()
        )


def test_loading_a_file_with_bad_selection_or_mask_fails_clearly():
    sparse = SU.wrap(pruned_small_cnn(), budget=300, layers=CANDIDATES)
    path = os.path.join(tempfile.mkdtemp(), "m.keras")
    w = SU.sparse_layers(sparse)[1]
    w.channel_indices.assign(np.full(w.in_channels, 99, np.int32))  # out of range
    w.num_channels.assign(2)
    sparse.save(path)
    with pytest.raises(ValueError, match="stored channel selection is invalid"):
        keras.models.load_model(path)
    sparse = SU.wrap(pruned_small_cnn(), budget=300, layers=CANDIDATES)
    SU.sparse_layers(sparse)[0].kernel_mask.assign(
        np.full(SU.sparse_layers(sparse)[0].kernel_mask.shape, 0.5, np.float32)
    )
    sparse.save(path)
    with pytest.raises(ValueError, match="other than 0"):
        keras.models.load_model(path)
    # A stored selection of the wrong shape (weights of another architecture) names the layer.
    w = SU.sparse_layers(SU.wrap(small_cnn(), budget=300, layers=CANDIDATES))[2]
    before = w.get_channels()
    with pytest.raises(ValueError, match="sparse_update_pw.*shape \\(5,\\).*another model"):
        w.load_own_variables({"0": np.zeros(5, np.int32), "1": np.asarray(2, np.int32)})
    np.testing.assert_array_equal(w.get_channels(), before)
    with pytest.raises(ValueError, match="invalid"):  # out of range: refused before assigning
        w.load_own_variables({"0": np.full(8, 42, np.int32), "1": np.asarray(3, np.int32)})
    np.testing.assert_array_equal(w.get_channels(), before)
    good = SU.wrap(pruned_small_cnn(), budget=300, layers=CANDIDATES)
    good.save(path)
    loaded = keras.models.load_model(path)
    assert {k: v.tolist() for k, v in SU.selection(loaded).items()} == {
        k: v.tolist() for k, v in SU.selection(good).items()
    }


def test_pruning_masks_are_checked_on_load():
    masked = pruned_small_cnn()
    path = os.path.join(tempfile.mkdtemp(), "p.keras")
    layer = masked.get_layer("masked_pw")
    layer.masks[0].assign(np.full(layer.masks[0].shape, 2.0, np.float32))
    masked.save(path)
    with pytest.raises(ValueError, match="masked_pw.*other than 0"):
        keras.models.load_model(path)
    before = np.asarray(layer.masks[0]).copy()
    with pytest.raises(ValueError, match="shape"):
        layer.load_own_variables(
            {"0": np.asarray(layer.kernels[0]), "1": np.ones((3, 3), np.float32)}
        )
    np.testing.assert_array_equal(np.asarray(layer.masks[0]), before)


@pytest.mark.slow
def test_wrapped_pruned_model_loads_in_another_process(tmp_path):
    sparse = SU.wrap(pruned_small_cnn(), budget=300, layers=CANDIDATES, seed=6)
    path = str(tmp_path / "m.keras")
    sparse.save(path)
    x, _, _ = data(4)
    np.save(tmp_path / "x.npy", x)
    code = (
        f"import sys, json, numpy as np, keras; sys.path.insert(0, {ROOT!r}); import tf_tradyx as tx\n"
        f"m = keras.models.load_model({path!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(m(np.load({str(tmp_path / 'x.npy')!r}))))\n"
        "print(json.dumps({k: v.tolist() for k, v in tx.sparse_update.selection(m).items()}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        k: v.tolist() for k, v in SU.selection(sparse).items()
    }
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), sparse(x), rtol=1e-6, atol=1e-6)


def test_tensorboard_summaries(tmp_path):
    masked = pruned_small_cnn()
    sparse = SU.wrap(masked, budget=300, layers=CANDIDATES)
    sparse.compile(keras.optimizers.SGD(0.05), LOSS)
    _, _, ds = data()
    sparse.fit(
        ds,
        epochs=2,
        verbose=0,
        callbacks=[
            SU.ChannelResampler(),
            SU.SelectionSummaries(str(tmp_path / "su")),
            tx.pruning.PruningSummaries(str(tmp_path / "pr")),
        ],
    )
    masked_model = masked
    masked_model.compile(keras.optimizers.SGD(0.05), LOSS)
    masked_model.fit(
        ds, epochs=1, verbose=0, callbacks=[tx.pruning.PruningSummaries(str(tmp_path / "pr2"))]
    )

    def scalars(directory):
        out = {}
        for f in glob.glob(os.path.join(directory, "events.*")):
            for event in tf.compat.v1.train.summary_iterator(f):
                for v in event.summary.value:
                    arr = tf.make_ndarray(v.tensor)
                    if arr.dtype.kind in "SOU":  # the model graph Keras' TensorBoard writes
                        continue
                    out.setdefault(v.tag, []).append(
                        (event.step, float(arr) if arr.ndim == 0 else arr)
                    )
        return out

    # One step convention, the optimizer's: 4 batches per epoch.
    su = scalars(str(tmp_path / "su"))
    assert [s for s, _ in su["selected_channels/pw"]] == [0, 4]
    assert su["efficiency/units"][-1][1] <= 300
    # TFMOT's layout: a keras.callbacks.TensorBoard run, per-kernel sparsity in its train/ directory
    # at the optimizer step, beside the epoch losses.
    pr = scalars(str(tmp_path / "pr2" / "train"))
    sparsities = {k: v for k, v in pr.items() if k.endswith("/sparsity") or k == "sparsity/total"}
    report = tx.pruning.report(masked_model)
    assert abs(sparsities["sparsity/total"][-1][1] - (1 - report.density)) < 1e-6
    assert len(sparsities) == len(report.rows) + 1
    assert [s for s, _ in sparsities["sparsity/total"]] == [0, 4]
    assert "epoch_loss" in pr
    with pytest.raises(ValueError):
        tx.pruning.PruningSummaries(str(tmp_path), update_freq="batch")


RESUME_SCRIPT = r"""
import json, os, sys
import keras, numpy as np, tensorflow as tf
sys.path.insert(0, {root!r})
import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, LOSS, data, small_cnn
mode, backup, out, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
keras.utils.set_random_seed(0)
_, _, ds = data()
initial_epoch = 0
ckpts = sorted(os.listdir(backup)) if mode == "tradi_ckpt" and os.path.isdir(backup) else []
if ckpts:  # resume from the last ModelCheckpoint file: load, give it its sampler back, go on
    model = keras.models.load_model(os.path.join(backup, ckpts[-1]))
    tx.sparse_update.attach(model, budget=300, strategy="tradi", seed=9)
    initial_epoch = int(ckpts[-1][2:4])
    callbacks = [tx.sparse_update.ChannelResampler()]
elif mode.startswith("tradi"):
    model = tx.sparse_update.wrap(small_cnn(), budget=300, layers=CANDIDATES, seed=9)
    callbacks = [tx.sparse_update.ChannelResampler()]
else:
    model = tx.pruning.wrap(small_cnn(), skip=["head"])
    tx.pruning.RandomPruner(seed=1).prune(model, 0.7)
    callbacks = []
if not ckpts:
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == kill_after:
            os._exit(3)

class Log(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if mode.startswith("tradi"):
            with open(out + ".sel", "a") as f:
                f.write(json.dumps([epoch, {{k: v.tolist() for k, v in
                                            tx.sparse_update.selection(self.model).items()}}]) + "\n")

if mode == "tradi_ckpt":
    store = keras.callbacks.ModelCheckpoint(os.path.join(backup, "ep{{epoch:02d}}.keras"))
else:
    store = keras.callbacks.BackupAndRestore(backup)
extra = [store, Log()] + ([Kill()] if kill_after else [])
model.fit(ds.shuffle(64, seed=0, reshuffle_each_iteration=False), epochs=4, verbose=0,
          callbacks=callbacks + extra, initial_epoch=initial_epoch)
np.savez(out, *[v.numpy() for v in model.weights])
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tradi", "px", "tradi_ckpt"])
def test_interrupted_runs_resume_to_the_same_weights(tmp_path, mode):
    """BackupAndRestore (TraDy, PX masks) and ModelCheckpoint + attach (TraDy)."""
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(root=ROOT))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def run(backup, out, kill_after):
        return subprocess.run(
            [sys.executable, str(script), mode, str(backup), str(out), str(kill_after)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    straight = run(tmp_path / "b1", tmp_path / "straight", 0)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run(tmp_path / "b2", tmp_path / "resumed", 2)
    assert killed.returncode == 3, killed.stderr[-2000:]
    assert not (tmp_path / "resumed.npz").exists()
    resumed = run(tmp_path / "b2", tmp_path / "resumed", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert len(a.files) == len(b.files)
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
    if mode.startswith("tradi"):

        def selections(name):
            lines = (tmp_path / f"{name}.sel").read_text().splitlines()
            return {json.dumps(json.loads(line)) for line in lines}

        # The resumed run drew, at epochs 2 and 3, what the uninterrupted run drew.
        assert selections("resumed") == selections("straight")


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
