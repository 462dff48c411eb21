"""NTK-SAP (Wang et al., ICLR 2023): data-free pruning by the NTK spectrum, over re-drawn weights.

Why it differs from SynFlow and PX: it scores how much each weight contributes to the whole NTK
spectrum (its nuclear norm, i.e. the trace), estimated by a finite difference of the network's
output under a small random weight perturbation, and it averages that over fresh random weights
(multi-sampling), so the masks suit the initialization distribution rather than one draw of it.
With W = m * theta (m the mask), one round scores

    J(m) = sum_s sum_n || f(x_sn; m * theta_s) - f(x_sn; m * (theta_s + eps * delta_s)) ||^2
    score_j = | dJ / dm_j |     (the absolute value of the sum over samples, as the authors do)

x_sn ~ N(0, 1) of the model's input shape, theta_s a fresh draw of every kernel being pruned from its
layer's own initializer (kernels in `skip` and biases keep their values; BatchNormalization at
gamma 1, beta 0; a frozen BatchNormalization is refused), delta_s ~ N(0, 1) on those kernels,
`samples` draws per round. BatchNormalization normalizes both networks with the unperturbed
network's batch statistics on x_s, held constant (what the authors' code does). The model's own
weights are never touched: every draw runs through `model.stateless_call`. The authors' CIFAR
setting, the defaults here: 20 rounds with the exponential schedule, 5 samples, eps 0.01, 100
inputs per sample. Outputs are the model's outputs (logits for the usual classifier).
"""

import keras
import numpy as np
import tensorflow as tf

from tf_tradyx import _batches as batch_utils
from tf_tradyx.pruning import stateless
from tf_tradyx.pruning.pruner import Pruner


def _positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _initializer(layer, attribute):
    """The initializer the layer draws this kernel with (He normal, fan-in, when it has none):
    `depthwise_kernel` -> `depthwise_initializer`, a DepthwiseConv2D's `kernel` too."""
    name = attribute.lstrip("_")
    candidates = [name.replace("_kernel", "") + "_initializer", name + "_initializer"]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        candidates.insert(0, "depthwise_initializer")
    for candidate in candidates:
        init = getattr(layer, candidate, None)
        if init is not None:
            return init
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def _seeded(init, seed):
    """The initializer with this seed (one without randomness, e.g. Zeros, as it is)."""
    config = init.get_config()
    return type(init).from_config({**config, "seed": seed}) if "seed" in config else init


class Draw:
    """One sample of a round: inputs, drawn kernels and their perturbations (numpy, per entry)."""

    def __init__(self, inputs, kernels, perturbations):
        self.inputs, self.kernels, self.perturbations = inputs, kernels, perturbations


class NTKSAPPruner(Pruner):
    """NTK-SAP: |dJ/dm| of the output's finite-difference change under weight noise (above).

    Data-free: it draws its own Gaussian inputs and weights, so `prune` takes no data.

    Args:
      rounds (int | None): pruning rounds; None means 20, the authors' CIFAR setting.
      samples (int): random networks (weights, inputs, noise) per round (the authors' R; 5 on
        CIFAR).
      epsilon (float): size of the weight perturbation.
      batch_size (int): random inputs per sample.
      **kwargs: the other arguments of `Pruner`: `schedule`, `scope`, `min_density`, `skip`,
        `seed`, `verbose`.

    Raises:
      ValueError: for a non-positive `samples`, `batch_size` or `epsilon`; from `prune`, for a
        model with several inputs or without a fully defined input shape, or a frozen
        BatchNormalization.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> pruner = tx.pruning.NTKSAPPruner(rounds=1, samples=1, batch_size=4, verbose=0)
      >>> report = pruner.prune(masked, sparsity=0.5)
      >>> report.kept, report.total, report.meta["method"]
      (148, 296, 'ntk_sap')
      >>> tx.pruning.NTKSAPPruner(samples=0)
      Traceback (most recent call last):
      ...
      ValueError: samples must be a positive integer, got 0.
    """

    default_rounds = 20
    needs_data = False
    name = "ntk_sap"

    def __init__(self, rounds=None, samples=5, epsilon=0.01, batch_size=100, **kwargs):
        super().__init__(rounds=rounds, **kwargs)
        self.samples = _positive_int("samples", samples)
        self.batch_size = _positive_int("batch_size", batch_size)
        if not isinstance(epsilon, (int, float, np.floating)) or not 0 < epsilon < np.inf:
            raise ValueError(f"epsilon must be a positive number, got {epsilon!r}.")
        self.epsilon = float(epsilon)

    def get_config(self):
        return {
            **super().get_config(),
            "samples": self.samples,
            "epsilon": self.epsilon,
            "batch_size": self.batch_size,
        }

    def draws(self, model, round_number, entries=None):
        """The `samples` random networks of one round, a list of `Draw` (deterministic in the
        seed and the round)."""
        entries = self.entries(model) if entries is None else entries
        batch_utils.check_single_input(model, "NTK-SAP (random Gaussian images)")
        shape = (self.batch_size,) + tuple(model.input_shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                "NTK-SAP draws random inputs of the model's input shape: build the model with a "
                f"fully defined input shape (got {model.input_shape})."
            )
        dtype = np.dtype(entries[0].variable.dtype)
        out = []
        for sample in range(self.samples):
            rng = np.random.default_rng([self.seed, round_number, sample])
            inputs = rng.standard_normal(shape).astype(dtype)
            kernels, noise = [], []
            for e in entries:
                init = _initializer(e.wrapper.layer, e.wrapper.kernel_attributes[e.index])
                seeded = _seeded(init, int(rng.integers(2**31)))
                kernels.append(np.asarray(seeded(e.variable.shape, dtype=e.variable.dtype)))
                noise.append(rng.standard_normal(e.variable.shape).astype(dtype))
            out.append(Draw(inputs, kernels, noise))
        return out

    def _compiled(self, session):
        if "ntk_sap" in session.cache:
            return session.cache["ntk_sap"]
        values = stateless.VariableValues(session.model)
        entries, eps = session.entries, self.epsilon

        @tf.function(autograph=False)
        def mask_gradients(inputs, kernels, noise):
            clean = values.current()
            values.reset_batch_norm_scales(clean)
            for e, k in zip(entries, kernels):
                values.put(clean, e.variable, k)
            masks = [tf.convert_to_tensor(e.mask) for e in entries]
            for e, m in zip(entries, masks):
                values.put(clean, e.mask, m)
            values.use_batch_statistics(clean, inputs)
            perturbed = ([*clean[0]], [*clean[1]])
            for e, k, d in zip(entries, kernels, noise):
                values.put(perturbed, e.variable, k + eps * d)
            with tf.GradientTape() as tape:
                tape.watch(masks)
                out, _ = values.call(clean, inputs, training=False)
                out_perturbed, _ = values.call(perturbed, inputs, training=False)
                change = tf.reduce_sum(tf.square(out - out_perturbed))
            return tape.gradient(change, masks, unconnected_gradients="zero")

        session.cache["ntk_sap"] = mask_gradients
        return mask_gradients

    def _scores(self, session):
        run = self._compiled(session)
        total = None
        for draw in self.draws(session.model, session.round, session.entries):
            grads = [g.numpy() for g in run(draw.inputs, draw.kernels, draw.perturbations)]
            total = grads if total is None else [t + g for t, g in zip(total, grads)]
        return [np.abs(t) for t in total]
