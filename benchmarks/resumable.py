"""Epoch-level resume for the sweep's long cells.

A 10-epoch cell takes most of an hour on two cores, longer than what is left of many sessions. After
every epoch `fit_resumable` saves the model's weights (masks and BatchNorm statistics included), the
optimizer's variables (step counter, so the learning-rate schedule, and momentum), the epoch and the
history so far into one compressed `.npz`; a rerun of the same cell loads it and trains only the
remaining epochs. Commit the file to carry an unfinished cell to another machine.

What a resume does not restore: the position of the input pipeline's random streams (shuffle and
augmentation), so the batches after a restart are a different seeded draw than an uninterrupted run
would have seen.
"""

import json
import os
import time

import numpy as np


def _load(path, cell, model):
    with np.load(path, allow_pickle=False) as state:
        meta = json.loads(str(state["meta"]))
        if meta["cell"] != cell:
            raise ValueError(f"{path} holds a checkpoint of cell {meta['cell']}, not {cell}; delete it "
                             "to start this cell from scratch.")
        weights = [state[f"w{i}"] for i in range(meta["weights"])]
        slots = [state[f"o{i}"] for i in range(meta["optimizer"])]
    model.set_weights(weights)  # raises on a structure mismatch, before the optimizer is touched
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    if len(optimizer.variables) != len(slots):
        raise ValueError(f"{path}: the optimizer has {len(optimizer.variables)} variables, the "
                         f"checkpoint {len(slots)}; delete it to start this cell from scratch.")
    for variable, value in zip(optimizer.variables, slots):
        variable.assign(value)
    return meta


def _save(path, cell, model, epoch, history, seconds):
    weights = model.get_weights()
    slots = [np.asarray(v) for v in model.optimizer.variables]
    arrays = {f"w{i}": w for i, w in enumerate(weights)}
    arrays.update({f"o{i}": v for i, v in enumerate(slots)})
    meta = {"cell": cell, "epoch": epoch, "history": history, "seconds": seconds,
            "weights": len(weights), "optimizer": len(slots)}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)  # a checkpoint exists only once it is complete


def fit_resumable(model, data, epochs, path, cell, verify=None, **fit_kwargs):
    """`model.fit(data, epochs=epochs)` that resumes from `path` and saves there after every epoch.

    `model` must be compiled; `cell` (any JSON value) names the run, and a checkpoint of another
    cell is refused. `verify(model)`, if given, runs right after a checkpoint is loaded (before any
    training) and raises if the restored model does not fit what this run set up. Returns (history
    over all epochs as {metric: [values]}, seconds of training over all finished epochs). The
    caller deletes `path` once the cell's result is safely written.
    """
    import keras

    if os.path.exists(path):
        meta = _load(path, cell, model)
        if verify is not None:
            verify(model)
    else:
        meta = {"epoch": 0, "history": {}, "seconds": 0.0}
    history, seconds = meta["history"], meta["seconds"]

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            nonlocal seconds
            seconds += time.time() - self.start
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))
            _save(path, cell, model, epoch + 1, history, seconds)

    if meta["epoch"] < epochs:
        if meta["epoch"]:
            print(f"resuming from {path} after epoch {meta['epoch']}", flush=True)
        model.fit(data, epochs=epochs, initial_epoch=meta["epoch"],
                  callbacks=list(fit_kwargs.pop("callbacks", [])) + [Checkpoint()],
                  **fit_kwargs)  # last: it sees what the other callbacks add to the logs
    return history, seconds
