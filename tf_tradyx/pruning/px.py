"""PX (Path eXclusion): pruning at initialization that preserves an upper bound of the NTK trace.

Iurada, Ciccone, Tommasi, CVPR 2024. R = sum_k z1_k * z2_k with
  z1 = the masked network with unit weights, input x^2 and the real network's ReLU gates,
       summed over the pruning data (data term);
  z2 = the network with squared weights, identity activations, all-ones input (path term).
Score of weight j: theta_j^2 * dR / d(theta_j^2) >= 0, from one backward pass of the z2 network
with output cotangent sum_n z1. Computed in float64 (the unit-weight network multiplies magnitudes
by each layer's fan-in: about 1e45 across ResNet-20, beyond float32).
"""

import tensorflow as tf

from tf_tradyx.pruning import paths
from tf_tradyx.pruning.pruner import Pruner


class PXPruner(Pruner):
    """Iterative PX, 100 rounds with the exponential schedule by default (docs/METHODS.md 2.3).

    Scores every weight by its share of an upper bound of the neural tangent kernel's trace (a
    data term times a path term, docs/METHODS.md 2.2) and removes the lowest, rescoring the
    masked network every round. `prune` needs a few (image, label) examples of the training data
    (the paper: 10 per class); labels are not used.

    Args:
      rounds (int | None): pruning rounds; None means 100.
      exact_data_term (bool): compute the data term z1 in float64 throughout. By default it runs
        in a scaled float32 form (mantissa and log-scale per tensor; z1 has no cancellations, so
        its relative error stays near float32 epsilon); the path term and the scores are always
        float64. The two rank the same weights; the default is about twice as fast.
      **kwargs: the other arguments of `Pruner`: `schedule`, `scope`, `min_density`, `skip`,
        `seed`, `verbose`.

    Raises:
      ValueError: from `prune`, for a sparsity outside [0, 1), data that cannot be read, or
        a round whose scores cannot rank the weights (a zero-initialized head).
      tx.pruning.UnsupportedLayerError: from `prune`, for a model with layers the path networks
        cannot compute (a `Lambda`, a `PReLU`), every one named; SNIP and GraSP accept them.

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
      >>> pruner = tx.pruning.PXPruner(rounds=3, verbose=0)
      >>> report = pruner.prune(masked, sparsity=0.8, data=(images, labels))
      >>> print(f"kept {report.kept} of {report.total} weights")
      kept 59 of 296 weights
    """

    default_rounds = 100
    needs_data = True

    def __init__(self, rounds=None, exact_data_term=False, **kwargs):
        super().__init__(rounds=rounds, **kwargs)
        self.exact_data_term = exact_data_term

    def _compiled(self, session):
        if "px" in session.cache:
            return session.cache["px"]
        net = paths.PathNetwork(session.model)
        entries = session.entries
        ones_shape = (1,) + tuple(session.batches.first[0].shape[1:])

        exact = self.exact_data_term

        @tf.function(reduce_retracing=True, autograph=False)
        def data_term(x):
            gates = paths.GateRecorder()
            net.run(x, "real", gates=gates)
            if exact:
                z1 = net.run(tf.square(tf.cast(x, paths.DTYPE)), "z1", gates=gates)
                return tf.reduce_sum(z1, axis=0)
            mantissa, log_scale = net.run(tf.square(x), "z1_scaled", gates=gates)
            return tf.reduce_sum(tf.cast(mantissa, paths.DTYPE), axis=0) * tf.exp(log_scale)

        @tf.function(autograph=False)
        def path_term(cotangent):
            return paths.kernel_gradient_scores(
                net,
                entries,
                "z2",
                tf.square,
                lambda z2: tf.reduce_sum(cotangent * z2[0]),
                ones_shape,
            )

        session.cache["px"] = (data_term, path_term)
        return session.cache["px"]

    def _scores(self, session):
        data_term, path_term = self._compiled(session)
        strategy = tf.distribute.get_strategy()
        if strategy.num_replicas_in_sync > 1:  # under `with strategy.scope():`
            cotangent = tf.add_n([_replica_sum(strategy, data_term, x) for x, _ in session.batches])
        else:
            cotangent = tf.add_n([data_term(x) for x, _ in session.batches])
        return [s.numpy() for s in path_term(cotangent)]


def _replica_sum(strategy, data_term, x):
    """The data term of batch `x` computed data-parallel: replica r takes examples r, r + n, ...
    (any batch size), and the per-replica sums over examples are added. The data term is a sum
    over examples, so this is the one-device value up to float round-off."""
    replicas = strategy.num_replicas_in_sync
    shards = strategy.experimental_distribute_values_from_function(
        lambda context: x[context.replica_id_in_sync_group :: replicas]
    )
    per_replica = strategy.run(data_term, args=(shards,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
