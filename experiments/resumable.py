"""Epoch-level resume for the sweep's long cells, through `keras.callbacks.BackupAndRestore`.

A 10-epoch cell takes most of an hour on two cores, longer than what is left of many sessions.
After every epoch Keras' BackupAndRestore writes `<backup_dir>/latest.weights.h5`
(`Model.save_weights`: every variable of every layer, so the pruning masks and the sparse-update
channel selection, which are non-trainable variables, and the BatchNorm statistics; and the
optimizer's variables, so its step counter, hence the learning-rate schedule, and momentum) and the
number of finished epochs; a rerun of the same cell restores them and trains only the remaining
epochs. It keeps the previous epoch's copy too (`double_checkpoint`), used if the latest file was
cut short by the interruption.

What Keras does not keep, `<backup_dir>/epochs.json` does: the cell the directory belongs to (a
directory of another cell is refused) and every finished epoch's logs and training seconds, so that
a resumed cell reports the history of all its epochs. Commit the directory to carry an unfinished
cell to another machine.

What a resume does not restore: the position of the input pipeline's random streams (shuffle and
augmentation), so the batches after a restart are a different seeded draw than an uninterrupted run
would have seen.
"""

import json
import os
import time

import keras

EPOCHS_FILE = "epochs.json"


def _read(path):
    with open(path) as f:
        return json.load(f)


class EpochRecord(keras.callbacks.Callback):
    """Writes each finished epoch's logs and seconds to `<backup_dir>/epochs.json`, keyed by epoch.

    It runs before BackupAndRestore at the end of an epoch, so the file never lags behind the
    weights: every epoch the backup holds is in the file, and an epoch in the file that the backup
    missed (stopped between the two writes) is trained again and its entry overwritten.
    """

    def __init__(self, backup_dir, cell):
        super().__init__()
        self.backup_dir = backup_dir
        self.path = os.path.join(backup_dir, EPOCHS_FILE)
        self.record = (
            _read(self.path) if os.path.exists(self.path) else {"cell": cell, "epochs": {}}
        )
        self.first = True

    def on_epoch_begin(self, epoch, logs=None):
        if self.first and epoch:
            print(f"resuming from {self.backup_dir} after epoch {epoch}", flush=True)
        self.first = False
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.record["epochs"][str(epoch)] = {
            "seconds": time.time() - self.start,
            "logs": {key: float(value) for key, value in (logs or {}).items()},
        }
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.record, f, indent=1)
        os.replace(tmp, self.path)  # the file exists only complete


class _Verify(keras.callbacks.Callback):
    """Calls `verify(model)` at the start of training, after BackupAndRestore restored the model."""

    def __init__(self, verify):
        super().__init__()
        self.verify = verify

    def on_train_begin(self, logs=None):
        self.verify(self.model)


def fit_resumable(model, data, epochs, backup_dir, cell, verify=None, **fit_kwargs):
    """`model.fit(data, epochs=epochs)` that backs up to `backup_dir` after every epoch and resumes
    from there.

    `model` must be built and compiled; `cell` (any JSON value) names the run, and a backup of
    another cell is refused. `verify(model)`, if given, runs right after a backup is restored
    (before any training) and raises if the restored model does not fit what this run set up.
    Returns (history over all epochs as {metric: [values]}, seconds of training over all epochs).
    The caller deletes `backup_dir` once the cell's result is safely written (a cell stopped after
    its last epoch but before writing its result resumes with nothing left to train).
    """
    cell = json.loads(json.dumps(cell))  # compared with what the file holds
    epochs_path = os.path.join(backup_dir, EPOCHS_FILE)
    resuming = os.path.exists(epochs_path)
    if resuming:
        stored = _read(epochs_path)["cell"]
        if stored != cell:
            raise ValueError(
                f"{backup_dir} holds a checkpoint of cell {stored}, not {cell}; "
                "delete it to start this cell from scratch."
            )
    elif os.path.isdir(backup_dir) and os.listdir(backup_dir):
        raise ValueError(
            f"{backup_dir} holds files but no {EPOCHS_FILE}, so no cell's checkpoint; "
            "delete it to start this cell from scratch."
        )
    record = EpochRecord(backup_dir, cell)
    callbacks = list(fit_kwargs.pop("callbacks", []))
    # The record comes after the caller's callbacks (it sees what they add to the logs) and before
    # the backup (see EpochRecord); the check after it, so that it sees the restored model.
    callbacks += [
        record,
        keras.callbacks.BackupAndRestore(
            backup_dir, double_checkpoint=True, delete_checkpoint=False
        ),
    ]
    if resuming and verify is not None:
        callbacks.append(_Verify(verify))
    model.fit(data, epochs=epochs, callbacks=callbacks, **fit_kwargs)
    finished = [record.record["epochs"][str(epoch)] for epoch in range(epochs)]
    history = {}
    for entry in finished:
        for key, value in entry["logs"].items():
            history.setdefault(key, []).append(value)
    return history, sum(entry["seconds"] for entry in finished)
