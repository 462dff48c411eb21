"""The standard pruning-at-initialization baselines, as the Synaptic-Flow framework defines them.

All rank globally and remove the lowest scores (docs/METHODS.md 2.4).
"""

import numpy as np
import tensorflow as tf

from tf_tradyx import _losses
from tf_tradyx.pruning import paths
from tf_tradyx.pruning.pruner import Pruner


class RandomPruner(Pruner):
    """I.i.d. standard-normal scores (seeded): the random baseline.

    Data-free; the same `seed` draws the same masks.

    Args:
      rounds (int | None): pruning rounds; None means 1.
        The other arguments are those of `Pruner`: `schedule`, `scope`, `min_density`,
        `skip`, `seed`, `verbose`.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> report = tx.pruning.RandomPruner(seed=3, verbose=0).prune(masked, sparsity=0.5)
      >>> report.kept, report.total
      (148, 296)
      >>> again = tx.pruning.wrap(model)
      >>> _ = tx.pruning.RandomPruner(seed=3, verbose=0).prune(again, sparsity=0.5)
      >>> all(np.array_equal(a.masks[0], b.masks[0]) for a, b in zip(
      ...     tx.pruning.masked_layers(masked), tx.pruning.masked_layers(again)))
      True
    """

    needs_data = False

    def _scores(self, session):
        rng = np.random.default_rng([self.seed, session.round])
        return [rng.standard_normal(e.variable.shape) for e in session.entries]


class MagnitudePruner(Pruner):
    """|theta|: keeps the largest weights. Data-free.

    Args:
      rounds (int | None): pruning rounds; None means 1.
        The other arguments are those of `Pruner`: `schedule`, `scope`, `min_density`,
        `skip`, `seed`, `verbose`.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> report = tx.pruning.MagnitudePruner(verbose=0).prune(masked, sparsity=0.5)
      >>> report.kept, report.total
      (148, 296)
      >>> weights = np.concatenate([np.abs(np.asarray(w.layer.kernel)).ravel()
      ...                           for w in tx.pruning.masked_layers(masked)])
      >>> masks = np.concatenate([np.asarray(w.masks[0]).ravel()
      ...                         for w in tx.pruning.masked_layers(masked)])
      >>> bool(weights[masks == 0].max() <= weights[masks == 1].min())  # the smallest went
      True
    """

    needs_data = False

    def _scores(self, session):
        return [np.abs(np.asarray(e.variable)) for e in session.entries]


class SynFlowPruner(Pruner):
    """SynFlow (Tanaka et al. 2020): |theta * dR/dtheta|, R = 1^T f(1; |theta|), data-free.

    All parameters made positive (kernels, biases and BN statistics, as Synaptic-Flow's linearize),
    inference-mode BN, all-ones input; 100 rounds with the exponential schedule. Float64.

    Args:
      rounds (int | None): pruning rounds; None means 100.
        The other arguments are those of `Pruner`: `schedule`, `scope`, `min_density`,
        `skip`, `seed`, `verbose`.

    Raises:
      ValueError: from `prune`, for a model without a fully defined input shape.
      tx.pruning.UnsupportedLayerError: from `prune`, for layers the path networks cannot
        compute (a `Lambda`, a `PReLU`), every one named.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> pruner = tx.pruning.SynFlowPruner(rounds=2, verbose=0)
      >>> report = pruner.prune(masked, sparsity=0.5)  # no data: SynFlow is data-free
      >>> report.kept, report.total, report.meta["method"]
      (148, 296, 'synflow')
    """

    default_rounds = 100
    needs_data = False

    def _scores(self, session):
        if "synflow" not in session.cache:
            net = paths.PathNetwork(session.model)
            entries = session.entries
            ones_shape = (1,) + tuple(session.model.input_shape[1:])
            if any(d is None for d in ones_shape):
                raise ValueError("SynFlow needs a model with a fully defined input shape.")

            @tf.function(autograph=False)  # plain Python control flow: tracing is 10x faster
            def synflow():
                scores = paths.kernel_gradient_scores(
                    net, entries, "synflow", tf.abs, tf.reduce_sum, ones_shape
                )
                return [tf.abs(s) for s in scores]

            session.cache["synflow"] = synflow
        return [s.numpy() for s in session.cache["synflow"]()]


class SNIPPruner(Pruner):
    """SNIP (Lee et al. 2019): |theta * dL/dtheta| on the pruning data, normalized; one shot.

    Args:
      rounds (int | None): pruning rounds; None means 1 (one shot).
      loss: a Keras loss; default cross-entropy (from logits unless the model ends in softmax).
      **kwargs: the other arguments of `Pruner`: `schedule`, `scope`, `min_density`, `skip`,
        `seed`, `verbose`.

    Raises:
      ValueError: from `prune`, for missing or unreadable (image, label) data.

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
      >>> report = tx.pruning.SNIPPruner(verbose=0).prune(masked, 0.5, data=(images, labels))
      >>> report.kept, report.total, report.meta["rounds"]
      (148, 296, 1)
    """

    needs_labels = True

    def __init__(self, rounds=None, loss=None, **kwargs):
        super().__init__(rounds=rounds, **kwargs)
        self.loss = loss

    def _gradients(self, session):
        if "snip" not in session.cache:
            model, variables = session.model, [e.variable for e in session.entries]
            loss_fn = _losses.default_loss(model, self.loss)

            @tf.function(reduce_retracing=True, autograph=False)
            def grads(x, y):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, model(x, training=False))
                return tape.gradient(loss, variables, unconnected_gradients="zero")

            session.cache["snip"] = grads
        per_batch = [session.cache["snip"](x, y) for x, y in session.batches]
        return [sum(g[i].numpy() for g in per_batch) for i in range(len(session.entries))]

    def _scores(self, session):
        grads = self._gradients(session)
        scores = [np.abs(np.asarray(e.variable) * g) for e, g in zip(session.entries, grads)]
        norm = sum(float(s.sum()) for s in scores)
        return [s / norm for s in scores] if norm > 0 else scores


class IterSNIPPruner(SNIPPruner):
    """Iterative SNIP: SNIP re-scored on the masked network every round (exponential schedule).

    Args:
      rounds (int | None): pruning rounds; None means 100.
      loss: a Keras loss; default cross-entropy (from logits unless the model ends in softmax).
      **kwargs: the other arguments of `Pruner`: `schedule`, `scope`, `min_density`, `skip`,
        `seed`, `verbose`.

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
      >>> pruner = tx.pruning.IterSNIPPruner(rounds=2, verbose=0)
      >>> report = pruner.prune(masked, 0.75, data=(images, labels))
      >>> report.kept, report.total
      (74, 296)
      >>> [h["kept"] for h in report.meta["history"]]
      [148, 74]
    """

    default_rounds = 100


class GraSPPruner(Pruner):
    """GraSP (Wang et al. 2020): theta * (H g), temperature 200 on the logits; lowest removed.

    g = sum over batches of dL/dtheta (held fixed); H g by double backward.

    Args:
      rounds (int | None): pruning rounds; None means 1 (one shot).
      loss: a Keras loss; default cross-entropy (from logits unless the model ends in softmax).
      temperature (float): the logits are divided by it before the loss.
      **kwargs: the other arguments of `Pruner`: `schedule`, `scope`, `min_density`, `skip`,
        `seed`, `verbose`.

    Raises:
      ValueError: from `prune`, for missing or unreadable (image, label) data.

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
      >>> pruner = tx.pruning.GraSPPruner(temperature=200.0, verbose=0)
      >>> report = pruner.prune(masked, 0.5, data=(images, labels))
      >>> report.kept, report.total, report.meta["method"]
      (148, 296, 'grasp')
    """

    needs_labels = True

    def __init__(self, rounds=None, loss=None, temperature=200.0, **kwargs):
        super().__init__(rounds=rounds, **kwargs)
        self.loss = loss
        self.temperature = float(temperature)

    def _compiled(self, session):
        if "grasp" in session.cache:
            return session.cache["grasp"]
        model, variables = session.model, [e.variable for e in session.entries]
        loss_fn = _losses.default_loss(model, self.loss)
        temp = self.temperature

        @tf.function(reduce_retracing=True, autograph=False)
        def grads(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=False) / temp)
            return tape.gradient(loss, variables, unconnected_gradients="zero")

        @tf.function(reduce_retracing=True, autograph=False)
        def hvp(x, y, stopped):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = loss_fn(y, model(x, training=False) / temp)
                g = inner.gradient(loss, variables, unconnected_gradients="zero")
                dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g, stopped)])
            return outer.gradient(dot, variables, unconnected_gradients="zero")

        session.cache["grasp"] = (grads, hvp)
        return grads, hvp

    def hessian_gradient_product(self, session):
        """(H g) per entry, with g the summed (stopped) gradient, as numpy arrays."""
        grads, hvp = self._compiled(session)
        stopped = [tf.add_n(list(gs)) for gs in zip(*[grads(x, y) for x, y in session.batches])]
        hg = [hvp(x, y, stopped) for x, y in session.batches]
        return [sum(h[i].numpy() for h in hg) for i in range(len(session.entries))]

    def _scores(self, session):
        hg = self.hessian_gradient_product(session)
        scores = [np.asarray(e.variable) * h for e, h in zip(session.entries, hg)]
        norm = abs(sum(float(s.sum()) for s in scores)) + 1e-10
        return [s / norm for s in scores]
