"""Training on many machines: `model.fit` under `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3.15's TensorFlow trainer fails under a multi-worker MultiWorkerMirroredStrategy with
"Attempt to convert a value (PerReplica:{...})" (keras-team/keras#20585), for any model. Two
statements are at fault: building the model from the first distributed batch reduces a whole
(x, y) structure with `Strategy.reduce`, which MultiWorkerMirroredStrategy supports only for a
single value; and the train step averages scalar metrics over replicas along an axis they do not
have. `enable_multi_worker_fit` mends both for this process, and changes nothing for any other
strategy.
"""

from tf_tradyx import _keras_compat


def enable_multi_worker_fit():
    """Makes `model.fit`, `evaluate` and `predict` work under a multi-worker
    `tf.distribute.MultiWorkerMirroredStrategy` (Keras 3.15), for any Keras model.

    Call it once per process, before `fit`; calling it again does nothing. It wraps two internals
    of Keras' TensorFlow trainer, which act as before unless the model's strategy is a
    multi-worker MultiWorkerMirroredStrategy.

    Raises:
      tf_tradyx._keras_compat.KerasInternalsChanged: when the installed Keras no longer has those
        internals as Keras 3.15.1 has them (upgrade tf_tradyx, or pin keras 3.15).

    Example:

    >>> tx.multi_worker.enable_multi_worker_fit()
    >>> tx.multi_worker.enable_multi_worker_fit()  # idempotent
    """
    _keras_compat.fix_multi_worker_fit()
