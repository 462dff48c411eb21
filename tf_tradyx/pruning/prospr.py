"""ProsPr (Alizadeh et al., ICLR 2022, "Prospect Pruning"): scores from meta-gradients through SGD.

Why: SNIP scores a weight by the loss's sensitivity at initialization, but what matters after
pruning is how well the network *trains*. ProsPr takes a few SGD steps from the masked weights and
differentiates the loss after them with respect to the mask, through the steps (second order):

    theta_0 = m * theta;  theta_{k+1} = theta_k - lr * grad L(theta_k)   (k < inner_steps)
    score_j = | dL(theta_K) / dm_j |   at the current mask

As the authors' code: one batch serves every inner step and the final loss (each batch of the
pruning data runs its own steps; the absolute meta-gradients add up), BatchNormalization runs in
training mode, biases and normalization parameters take the steps too, the mask enters once, at
step 0; one shot by default, no normalization of the scores. Defaults are their command-line ones:
3 inner steps, learning rate 0.1, no momentum. The model itself is never changed: the steps run
through `model.stateless_call` on tensors.
"""

import numpy as np
import tensorflow as tf

from tf_tradyx import _losses
from tf_tradyx.pruning import stateless
from tf_tradyx.pruning.ntk_sap import _positive_int
from tf_tradyx.pruning.pruner import Pruner


class ProsPrPruner(Pruner):
    """ProsPr: |d loss after `inner_steps` SGD steps / d mask| on the pruning data (above).

    Args:
      rounds (int | None): pruning rounds; None means 1 (one shot).
      inner_steps (int): SGD steps differentiated through.
      inner_lr (float): their learning rate.
      inner_momentum (float): their momentum, in [0, 1) (PyTorch's form: v = mu * v + g;
        theta -= lr * v).
      loss: a Keras loss; default cross-entropy (from logits unless the model ends in softmax).
      **kwargs: the other arguments of `Pruner`: `schedule`, `scope`, `min_density`, `skip`,
        `seed`, `verbose`.

    Raises:
      ValueError: for a non-positive `inner_steps` or `inner_lr`, an `inner_momentum` outside
        [0, 1); from `prune`, for missing or unreadable (image, label) data.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> images = np.random.default_rng(0).normal(size=(20, 8, 8, 3)).astype("float32")
      >>> labels = np.arange(20) % 10
      >>> pruner = tx.pruning.ProsPrPruner(inner_steps=1, verbose=0)
      >>> report = pruner.prune(masked, 0.5, data=(images, labels))
      >>> report.kept, report.total, report.meta["method"]
      (148, 296, 'prospr')
      >>> [w.layer.name for w in tx.pruning.masked_layers(model)]  # the original is untouched
      []
    """

    needs_labels = True
    name = "prospr"

    def __init__(
        self, rounds=None, inner_steps=3, inner_lr=0.1, inner_momentum=0.0, loss=None, **kwargs
    ):
        super().__init__(rounds=rounds, **kwargs)
        self.inner_steps = _positive_int("inner_steps", inner_steps)
        if not isinstance(inner_lr, (int, float, np.floating)) or not 0 < inner_lr < np.inf:
            raise ValueError(f"inner_lr must be a positive number, got {inner_lr!r}.")
        if not isinstance(inner_momentum, (int, float, np.floating)) or not 0 <= inner_momentum < 1:
            raise ValueError(f"inner_momentum must be in [0, 1), got {inner_momentum!r}.")
        self.inner_lr, self.inner_momentum = float(inner_lr), float(inner_momentum)
        self.loss = loss

    def get_config(self):
        return {
            **super().get_config(),
            "inner_steps": self.inner_steps,
            "inner_lr": self.inner_lr,
            "inner_momentum": self.inner_momentum,
        }

    def _compiled(self, session):
        if "prospr" in session.cache:
            return session.cache["prospr"]
        model, entries = session.model, session.entries
        values = stateless.VariableValues(model)
        loss_fn = _losses.default_loss(model, self.loss)
        steps, lr, momentum = self.inner_steps, self.inner_lr, self.inner_momentum

        @tf.function(reduce_retracing=True, autograph=False)
        def meta_gradients(x, y):
            start = values.current()
            meta = [tf.ones(e.mask.shape, e.mask.dtype) for e in entries]
            with tf.GradientTape() as outer:
                outer.watch(meta)
                current = ([*start[0]], [*start[1]])
                for e, m in zip(entries, meta):
                    values.put(current, e.variable, values.get(start, e.variable) * m)
                velocity = [tf.zeros_like(t) for t in current[0]]
                for _ in range(steps):
                    with tf.GradientTape() as inner:
                        inner.watch(current[0])
                        out, _ = values.call(current, x, training=True)
                        loss = loss_fn(y, out)
                    grads = inner.gradient(loss, current[0], unconnected_gradients="zero")
                    velocity = [momentum * v + g for v, g in zip(velocity, grads)]
                    current = ([p - lr * v for p, v in zip(current[0], velocity)], current[1])
                out, _ = values.call(current, x, training=True)
                loss = loss_fn(y, out)
            return outer.gradient(loss, meta, unconnected_gradients="zero")

        session.cache["prospr"] = meta_gradients
        return meta_gradients

    def _scores(self, session):
        run = self._compiled(session)
        total = [np.zeros(e.variable.shape) for e in session.entries]
        for x, y in session.batches:
            total = [t + np.abs(g.numpy()) for t, g in zip(total, run(x, y))]
        return total
