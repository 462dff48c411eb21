"""Auxiliary path networks of a Keras model, run by interpreting its layer graph.

PX and SynFlow score weights with modified copies of the network (unit weights, squared weights,
absolute weights, identity activations, recorded ReLU gates). Instead of cloning the model per
round or patching layers, `PathNetwork` walks the model's graph once per pass (the steps of
`tf_tradyx._graph.steps`, nested models inlined: the same walk TraDy uses to count calls and to
recompute segments) and computes each layer's modified version from the layer's own configuration
and variables. The model is never modified; passes run in float64 because a unit-weight network
grows by every layer's fan-in.

Each pass is an object (docs/METHODS.md 2.5 for the generalisation beyond ReLU networks):
  `RealPass`      "real": the masked network itself on data (training=False); records in a
                  `GateRecorder` what z1 needs: every activation's squared derivative at its real
                  pre-activation (exact 0/1 for the ReLU family, the linearisation for smooth
                  ones), max-pooling positions, LayerNormalization's 1/sigma^2, the squared real
                  factors of every product.
  `DataTermPass`  "z1", PX's data term: unit weights (times masks), input x^2, activations
                  replaced by the recorded gates, affine layers' scales 1, max pooling at the
                  recorded positions.
  `ScaledDataTermPass`  "z1_scaled": z1 in float32, every tensor carried as a float32 mantissa and
                  a float64 log-scale, renormalized after each weighted layer, multi-input ops
                  brought to a common scale first. z1 has no negative terms (unit weights, squared
                  gates, x^2), so this keeps float32's relative precision at any depth.
  `PathTermPass`  "z2", PX's path term: weights theta^2 (times masks), identity activations,
                  affine scales squared, max pooling replaced by average pooling (a data-free
                  stand-in), no biases.
  `SynFlowPass`   "synflow": |theta| (times masks), |bias|, BN with absolute parameters in inference
                  mode, every activation linearised (the identity), the real pooling.
  `ConnectPass`   "connect": the masks alone (0/1 weights, all else the identity, average
                  pooling), rescaled per layer: an output is positive exactly when a path of kept
                  weights reaches it.

Which operations take a gate is decided in one place (`_gate_for`), for the recording and the
replaying pass alike; the replaying pass checks each gate's operation and kind against the record
and fails loudly when the two passes disagree. How each kind of operation acts in each mode:
`path_ops`. A softmax on the model output is ignored in the auxiliary modes (paths end at the
logits).
"""

import tensorflow as tf
from keras import layers

from tf_tradyx import _keras_compat
from tf_tradyx._graph import steps as graph_steps
from tf_tradyx._graph import walk
from tf_tradyx.pruning import attention_paths, masking, path_ops
from tf_tradyx.pruning.path_ops import DTYPE, UnsupportedLayerError, linear_call  # noqa: F401 - re-exported

_MASKS = ("bool", "int8", "int16", "int32", "int64", "uint8")  # dtypes a cast keeps a mask in


class GateMismatchError(RuntimeError):
    """The data-term pass asked for a gate the real pass did not record (a layer kind handled by
    one pass and not the other): a bug in tf_tradyx, never a user error."""


class GateRecorder:
    """The gates the real pass records, in graph order, each with the operation and kind it belongs
    to, so that the data-term pass can check it replays them where they were recorded.

    Example:

    >>> import keras, numpy as np, tensorflow as tf
    >>> from tf_tradyx.pruning import paths
    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="relu")(inputs))
    >>> net, gates = paths.PathNetwork(model), paths.GateRecorder()
    >>> _ = net.run(np.ones((1, 3), np.float32), "real", gates=gates)
    >>> len(gates)
    1
    """

    def __init__(self):
        self._records = []

    def __len__(self):
        return len(self._records)

    def record(self, op, what, value):
        """Appends the gate `value` of kind `what` ("activation", "product", "layer_norm",
        "max_pool") recorded at operation `op`."""
        self._records.append((op, what, value))

    def replay(self):
        """A `GateReplay` reading the recorded gates from the start."""
        return GateReplay(self._records)


class GateReplay:
    """Reads a `GateRecorder`'s gates back in order, checking each against the asking operation."""

    def __init__(self, records):
        self._records = records
        self._next = 0

    def take(self, op, what):
        """The next gate, which must have been recorded at `op` as `what`.

        Raises:
          GateMismatchError: when the next record belongs to another operation or kind, or none
            is left.
        """
        if self._next >= len(self._records):
            raise GateMismatchError(
                f"The data-term pass asks for a {what} gate at {op.name!r}, but the real pass "
                f"recorded only {len(self._records)} gates."
            )
        recorded_op, recorded_what, value = self._records[self._next]
        if recorded_op is not op or recorded_what != what:
            raise GateMismatchError(
                f"Gate {self._next}: the data-term pass asks for a {what} gate at {op.name!r}, "
                f"but the real pass recorded a {recorded_what} gate at {recorded_op.name!r}."
            )
        self._next += 1
        return value

    def check_consumed(self):
        """Raises GateMismatchError when recorded gates were left unread."""
        if self._next != len(self._records):
            _, what, _ = self._records[self._next]
            raise GateMismatchError(
                f"The data-term pass read {self._next} of the {len(self._records)} recorded gates; "
                f"the next unread one is a {what} gate."
            )


def _functional(model):
    graph = _keras_compat.functional_graph(model)
    if graph is None:
        raise ValueError(f"Sequential model {model.name!r} is not built with an input shape.")
    return graph


def _kernel_pairs(op):
    """The weighted layer and its (kernel variable, mask or None) pairs."""
    if isinstance(op, masking.MaskedLayer):
        return op.layer, list(zip(op.kernels, op.masks))
    return op, [(v, None) for v in masking.prunable_variables(op)]


def _sublayer_pairs(op, sublayer):
    """The (kernel variable, mask or None) pairs of one weighted sublayer of `op` (a layer masked
    through its sublayers, or such a layer left unmasked)."""
    if isinstance(op, masking.MaskedLayer):
        found = zip(op.kernel_owners, op.kernels, op.masks)
        return [(v, m) for owner, v, m in found if owner is sublayer]
    return [(v, None) for owner, v, _ in masking.prunable_kernels(op) if owner is sublayer]


def _with_bias(layer, y, transform):
    """y plus transform(bias) per channel, when the layer has a bias."""
    if isinstance(layer, layers.EinsumDense):  # no use_bias; its bias spans trailing output axes
        if layer.bias is None:
            return y
        return y + transform(tf.cast(tf.convert_to_tensor(layer.bias), y.dtype))
    if not getattr(layer, "use_bias", False) or layer.bias is None:
        return y
    bias = transform(tf.cast(tf.convert_to_tensor(layer.bias), y.dtype))
    return y + tf.reshape(bias, path_ops.channel_shape(layer, len(y.shape)))


def _activation_spec(op, kind):
    """The activation an operation applies (its fused one for weighted layers), or None."""
    if kind == "weighted":
        return path_ops.activation_spec(getattr(walk.inner(op), "activation", None))
    if kind == "activation":
        return path_ops.layer_activation_spec(op)
    return None


def _pool_args(op):
    return [1, *op.pool_size, 1], [1, *op.strides, 1], op.padding.upper()


class _Pass:
    """One pass over the graph: how each kind of operation is computed in this mode."""

    mode = None

    def __init__(self, net, kernels=None):
        self.net = net
        self.kernels = kernels or {}
        self.dtype = DTYPE
        self.graph = set()  # ids of the tensors of this pass (arguments that are not constants)

    def run(self, x):
        x = self.prepare(x)
        self.graph.add(id(x))
        return self.finish(self.net.run_graph(x, self._traced_call))

    def prepare(self, x):
        return tf.cast(x, DTYPE)

    def finish(self, y):
        return y

    def _traced_call(self, op, *args, **kwargs):
        y = self.call(op, args, kwargs)
        # A mask, and what is computed from masks alone, are constants, not tensors of paths.
        if path_ops.kind_of(op)[0] != "mask" and self.graph_args(args):
            self.graph.update(id(t) for t in tf.nest.flatten(y))
        return y

    def graph_args(self, args):
        """The arguments that are tensors of this pass (not constants)."""
        return [a for a in tf.nest.flatten(args) if id(a) in self.graph]

    def gate_for(self, op, kind, args):
        """The kind of gate `op` takes ("activation", "product", "layer_norm", "max_pool") or None:
        the one rule both the recording and the replaying pass follow."""
        if kind == "max_pool" or kind == "layer_norm":
            return kind
        if kind == "bilinear":
            return "product"
        if kind == "product" or (kind == "arithmetic" and len(self.graph_args(args)) > 1):
            is_product = isinstance(op, layers.Multiply) or type(op).__name__ == "Multiply"
            return "product" if is_product else None
        spec = _activation_spec(op, kind)
        if spec is not None and spec[0] in ("relu", "smooth"):
            return "activation"
        if spec == ("softmax",) and not self.net.is_output(op):
            return "activation"
        return None

    def call(self, op, args, kwargs):
        kind, _ = path_ops.kind_of(op)
        kwargs.pop("training", None)
        kwargs.pop("mask", None)
        if kind == "weighted":
            return self.weighted(op, args[0])
        if kind == "attention":
            return attention_paths.attention(self, op, walk.inner(op), args, kwargs)
        if kind == "bilinear":
            return self.bilinear(op, op.call, self.graph_args(args))
        if kind == "mask":
            return op.call(*args, **kwargs)
        if kind == "batch_norm":
            return path_ops.apply_batch_norm(op, args[0], self.mode)
        if kind == "max_pool":
            return self.max_pool(op, args[0])
        if kind == "activation":
            return self.activation(op, args[0], path_ops.layer_activation_spec(op))
        if kind == "identity":
            return args[0]
        if kind == "affine":
            return path_ops.apply_affine(args[0], *path_ops.affine_scale_shift(op, ()), self.mode)
        if kind == "layer_norm":
            return path_ops.apply_layer_norm(op, args[0], self.mode, self.gate(op, "layer_norm"))
        if kind == "product" or (kind == "arithmetic" and len(self.graph_args(args)) > 1):
            return self.binary(op, args)
        if kind == "arithmetic":
            marked = ["x" if id(a) in self.graph else a for a in args]
            return path_ops.apply_affine(
                args[0 if marked[0] == "x" else 1], *self._affine_of(op, marked), self.mode
            )
        return op.call(*args, **kwargs)

    def gate(self, op, what):
        """The recorded gate of `op` (the data-term pass), None in passes without gates."""
        return None

    @staticmethod
    def _affine_of(op, marked):
        params = path_ops.affine_scale_shift(op, marked)
        if params is None:
            raise path_ops.unsupported(op, "not affine in its input (a constant divided by it)")
        return params

    def binary(self, op, args):
        """Arithmetic on two graph tensors: sums (and differences) add paths, products follow
        path_ops.apply_product."""
        factors = self.graph_args(args)
        name = type(op).__name__
        if isinstance(op, layers.Multiply) or name == "Multiply":
            return path_ops.apply_product(factors, self.mode, self.gate(op, "product"))
        if name in ("Add", "Subtract"):
            return factors[0] + factors[1]
        raise path_ops.unsupported(op, f"{name} of two tensors of the network")

    def activation(self, op, y, spec):
        """Every activation is the identity (linearised network), softmax included."""
        return y

    def bilinear(self, op, fn, factors):
        """`fn(a, b)` bilinear in two graph tensors (path_ops.apply_bilinear)."""
        return path_ops.apply_bilinear(fn, factors, self.mode, self.gate(op, "product"))

    def attention_softmax(self, op, scores, mask):
        """The softmax of an attention node (`attention_paths`): the identity here."""
        return scores

    def constant_scale(self, x, scale):
        """x times a constant: a path weight (1 in z1, squared in z2, absolute in SynFlow)."""
        return path_ops.apply_affine(x, tf.constant(scale, DTYPE), tf.zeros((), DTYPE), self.mode)

    def sub_weighted(self, op, sublayer, x):
        """A weighted sublayer of the node `op` (an attention projection) in this pass."""
        kernels = [self.kernel(v, m) for v, m in _sublayer_pairs(op, sublayer)]
        y = self.after_linear(sublayer, linear_call(sublayer, tf.cast(x, self.dtype), kernels))
        spec = path_ops.activation_spec(getattr(sublayer, "activation", None))
        if spec is None or spec[0] != "linear":
            raise path_ops.unsupported(sublayer, "an attention projection with an activation")
        return y

    def kernel(self, var, mask):
        """The kernel this pass computes with (an override from `kernels` first)."""
        override = self.kernels.get(id(var))
        if override is not None:
            return override
        theta, m = tf.convert_to_tensor(var), None if mask is None else tf.convert_to_tensor(mask)
        if self.dtype is not None:
            theta = tf.cast(theta, self.dtype)
            m = None if m is None else tf.cast(m, self.dtype)
        return self.transform_kernel(theta, m)

    def transform_kernel(self, theta, mask):
        """The real (masked) kernel; each auxiliary pass transforms it (or replaces it)."""
        return theta * mask if mask is not None else theta

    def weighted(self, op, x):
        layer, pairs = _kernel_pairs(op)
        kernels = [self.kernel(v, m) for v, m in pairs]
        y = linear_call(layer, tf.cast(x, self.dtype), kernels)
        y = self.after_linear(layer, y)
        return self.activation(op, y, path_ops.activation_spec(getattr(layer, "activation", None)))

    def after_linear(self, layer, y):
        return y

    def max_pool(self, op, x):
        ksize, strides, padding = _pool_args(op)
        return tf.nn.avg_pool2d(x, ksize, strides, padding)


class RealPass(_Pass):
    """The real (masked) network in inference mode; records what z1 needs, in graph order."""

    mode = "real"

    def __init__(self, net, gates, kernels=None):
        super().__init__(net, kernels)
        if not isinstance(gates, GateRecorder):
            raise TypeError(f"The real pass records into a GateRecorder, got {type(gates)!r}.")
        self.gates = gates
        self.dtype = None  # the model's own precision: kernels are not cast

    def prepare(self, x):
        return x

    def call(self, op, args, kwargs):
        kind, _ = path_ops.kind_of(op)
        if kind == "attention":
            kwargs.pop("training", None)
            kwargs.pop("mask", None)
            return attention_paths.attention(self, op, walk.inner(op), args, kwargs)
        if "training" in _keras_compat.call_context_args(op):
            kwargs["training"] = False
        gate = self.gate_for(op, kind, args)
        if gate == "max_pool":
            ksize, strides, padding = _pool_args(op)
            y, argmax = tf.nn.max_pool_with_argmax(
                args[0], ksize, strides, padding, include_batch_in_index=True
            )
            self.gates.record(op, gate, argmax)
            return y
        if gate == "layer_norm":
            self.gates.record(op, gate, path_ops.layer_norm_gate(op, args[0]))
        if gate == "product":
            squares = [tf.stop_gradient(tf.square(f)) for f in self.graph_args(args)]
            self.gates.record(op, gate, squares)
        spec = _activation_spec(op, kind) if gate == "activation" else None
        if spec is not None and spec[0] == "smooth":
            pre = self._pre_activation(op, kind, args[0])
            y, slope = path_ops.smooth_activation(spec[1], pre)
            self.gates.record(op, gate, slope)
            return y
        y = op(*args, **kwargs)
        if spec == ("softmax",):  # inside the network: the diagonal of its Jacobian
            self.gates.record(op, gate, path_ops.softmax_gate(y))
        elif spec is not None:  # the ReLU family: the gate is read off the output
            self.gates.record(op, gate, path_ops.squared_gate(y, spec, tf.float32))
        return y

    def bilinear(self, op, fn, factors):
        self.gates.record(op, "product", [tf.stop_gradient(tf.square(f)) for f in factors])
        return fn(*factors)

    def attention_softmax(self, op, scores, mask):
        p = attention_paths.masked_softmax(scores, mask)
        self.gates.record(op, "activation", path_ops.softmax_gate(p))
        return p

    def constant_scale(self, x, scale):
        return x * tf.cast(scale, x.dtype)

    def sub_weighted(self, op, sublayer, x):
        kernels = [self.kernel(v, m) for v, m in _sublayer_pairs(op, sublayer)]
        y = _with_bias(sublayer, path_ops.linear_call(sublayer, x, kernels), lambda b: b)
        return getattr(sublayer, "activation", lambda t: t)(y)

    def _pre_activation(self, op, kind, x):
        """The input of a smooth activation: the layer's input, or a weighted layer's output
        before its fused activation (its own linear map with the real masked kernels, plus bias)."""
        if kind == "activation":
            return x
        layer, pairs = _kernel_pairs(op)
        kernels = [self.kernel(v, m) for v, m in pairs]
        return _with_bias(layer, path_ops.linear_call(layer, x, kernels), lambda b: b)


class DataTermPass(_Pass):
    """PX's data term z1: unit weights, the real pass's gates, max pooling at its positions."""

    mode = "z1"

    def __init__(self, net, gates, kernels=None):
        super().__init__(net, kernels)
        if not isinstance(gates, GateRecorder):
            raise ValueError("mode 'z1' needs the gates recorded by a 'real' pass (GateRecorder).")
        self.replay = gates.replay()

    def finish(self, y):
        self.replay.check_consumed()
        return y

    def gate(self, op, what):
        return self.replay.take(op, what)

    def transform_kernel(self, theta, mask):
        return mask if mask is not None else tf.ones_like(theta)

    def activation(self, op, y, spec):
        if spec[0] == "linear" or (spec[0] == "softmax" and self.net.is_output(op)):
            return y  # A softmax at the output: paths end at the logits.
        return y * tf.cast(self.gate(op, "activation"), y.dtype)

    def attention_softmax(self, op, scores, mask):
        return scores * tf.cast(self.gate(op, "activation"), scores.dtype)

    def max_pool(self, op, x):
        argmax = self.gate(op, "max_pool")
        return tf.reshape(tf.gather(tf.reshape(x, [-1]), argmax), tf.shape(argmax))


class ScaledDataTermPass(DataTermPass):
    """z1 in float32 as (mantissa, log-scale): returns (float32 mantissa, float64 log-scale)."""

    def __init__(self, net, gates, kernels=None):
        super().__init__(net, gates, kernels)
        self.dtype = tf.float32
        self.scales = {}

    def prepare(self, x):
        x = tf.cast(x, tf.float32)
        peak = tf.reduce_max(x)
        peak = tf.where(peak > 0, peak, tf.ones_like(peak))
        x = x / peak
        self.scales[id(x)] = (x, tf.math.log(tf.cast(peak, DTYPE)))
        return x

    def finish(self, y):
        super().finish(y)
        return y, self.scales[id(y)][1]

    def call(self, op, args, kwargs):
        """Brings the inputs to one scale, renormalizes weighted outputs."""
        flat = tf.nest.flatten(args)
        tensors = [t for t in flat if tf.is_tensor(t) and id(t) in self.scales]
        in_scales = [self.scales[id(t)][1] for t in tensors]
        if not in_scales:  # a mask: a constant
            return super().call(op, args, kwargs)
        if len(in_scales) > 1:
            common = tf.reduce_max(tf.stack(in_scales))
            factors = {
                id(t): tf.cast(tf.exp(s - common), tf.float32) for t, s in zip(tensors, in_scales)
            }
            flat = [t * factors[id(t)] if tf.is_tensor(t) and id(t) in factors else t for t in flat]
            self.graph.update(id(t) for t in flat if tf.is_tensor(t))
            args = tf.nest.pack_sequence_as(args, flat)
            scale = common
        else:
            scale = in_scales[0]
        y = super().call(op, args, kwargs)
        if isinstance(op, masking.MaskedLayer) or masking.is_prunable(op):
            peak = tf.reduce_max(y)
            peak = tf.where(peak > 0, peak, tf.ones_like(peak))
            y = y / peak
            scale = scale + tf.math.log(tf.cast(peak, DTYPE))
        self.scales[id(y)] = (y, scale)
        return y


class PathTermPass(_Pass):
    """PX's path term z2: squared weights, identity activations, average pooling."""

    mode = "z2"

    def transform_kernel(self, theta, mask):
        base = super().transform_kernel(theta, mask)
        return base * base


class SynFlowPass(_Pass):
    """SynFlow: absolute weights and biases, identity activations, the real pooling."""

    mode = "synflow"

    def transform_kernel(self, theta, mask):
        return tf.abs(super().transform_kernel(theta, mask))

    def after_linear(self, layer, y):
        return _with_bias(layer, y, tf.abs)

    def max_pool(self, op, x):
        ksize, strides, padding = _pool_args(op)
        return tf.nn.max_pool2d(x, ksize, strides, padding)


class ConnectPass(_Pass):
    """The masks alone, rescaled per layer: positive exactly where kept paths reach."""

    mode = "connect"

    def transform_kernel(self, theta, mask):
        return mask if mask is not None else tf.ones_like(theta)

    def after_linear(self, layer, y):
        # Only the sign matters: keep magnitudes near 1 at any depth.
        return y / tf.maximum(tf.reduce_max(y), tf.constant(1e-300, y.dtype))


_PASSES = {
    "z2": PathTermPass,
    "synflow": SynFlowPass,
    "connect": ConnectPass,
}


class PathNetwork:
    """Runs the auxiliary networks of one Keras model (see the module docstring).

    Args:
      model: a built Functional or Sequential model with one input and one output, whose every
        layer the path networks treat (`path_ops.kind_of`).

    Raises:
      UnsupportedLayerError: naming every layer the path networks cannot treat, at once.
      ValueError: for several inputs or outputs, or an unbuilt Sequential model.
      TypeError: for a subclassed model.

    Examples:
      The "connect" pass: an output unit is positive exactly when kept weights reach it.

      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="head"),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> net = tx.pruning.PathNetwork(masked)
      >>> ones = np.ones((1, 8, 8, 3))
      >>> net.run(ones, "connect").shape
      TensorShape([1, 10])
      >>> _ = masked.layers[-1].masks[0].assign(np.zeros((8, 10)))  # cut the head
      >>> float(np.max(net.run(ones, "connect")))
      0.0
    """

    def __init__(self, model):
        walk.check_cloneable(model)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError("Path-based scoring supports models with one input and one output.")
        self.model = model
        _functional(model)  # a clear error for an unbuilt Sequential model
        self._steps = graph_steps.graph_steps(model)  # nested models inlined
        self._output_ops = {id(graph_steps.output_operation(model, self._steps))}
        problems = list(self._problems())
        if problems:
            raise path_ops.unsupported_all(problems)

    def _problems(self):
        """(layer, why) for every layer of the graph (nested models included) not supported."""
        masks = set()  # ids of the symbolic tensors that are masks
        for step in graph_steps.op_steps(self._steps):
            op = step.op
            kind, why = path_ops.kind_of(op)
            ins = step.node.input_tensors
            reads_mask = bool(ins) and all(id(t) in masks for t in ins)
            if kind == "mask" or (kind == "linear" and reads_mask):
                masks.update(step.outputs)
                if type(op).__name__ == "Cast" and not reads_mask and ins[0].dtype not in _MASKS:
                    yield walk.inner(op), "a cast of a real-valued tensor"
                continue
            if any(id(t) in masks for t in ins) and kind != "attention":
                why = "it reads a mask (only MultiHeadAttention's attention_mask takes one)"
                yield walk.inner(op), why
                continue
            if kind is None:
                yield walk.inner(op), why  # named as the user named it
                continue
            spec = _activation_spec(op, kind) if kind in ("weighted", "activation") else None
            inner = walk.inner(op)
            if kind == "weighted" and spec is None:  # named as the user named it
                yield inner, f"activation {inner.activation.__name__!r}"
            elif kind == "bilinear" and len(step.node.input_tensors) != 2:
                yield inner, "a matmul or einsum with a constant (not of two network tensors)"

    def is_output(self, op):
        """Whether `op` makes the model's output (a softmax there ends the paths at the logits)."""
        return id(op) in self._output_ops

    def run_graph(self, x, call_fn):
        """The model's graph run on `x` with `call_fn(op, *args, **kwargs)` for every operation."""
        return graph_steps.run_graph(self.model, self._steps, x, call_fn)

    def run(self, x, mode, kernels=None, gates=None):
        """Runs one pass.

        Args:
          x: the input batch.
          mode: "real", "z1", "z1_scaled", "z2", "synflow" or "connect" (module docstring).
          kernels: {id(kernel variable): tensor} overriding the mode's kernels (to take gradients).
          gates: a `GateRecorder`: filled by "real", replayed by "z1" and "z1_scaled".

        Returns:
          The output; for "z1_scaled", (float32 mantissa, float64 log-scale) with
          z1 = mantissa * exp(log-scale).
        """
        if mode == "real":
            return RealPass(self, gates, kernels).run(x)
        if mode == "z1":
            return DataTermPass(self, gates, kernels).run(x)
        if mode == "z1_scaled":
            return ScaledDataTermPass(self, gates, kernels).run(x)
        if mode not in _PASSES:
            raise ValueError(
                f"Unknown path-network mode {mode!r}; one of 'real', 'z1', 'z1_scaled', "
                f"{', '.join(repr(m) for m in _PASSES)}."
            )
        return _PASSES[mode](self, kernels).run(x)


def kernel_gradient_scores(net, entries, mode, transform, objective, input_shape):
    """k * dR/dk for every entry's kernel k = transform(theta * mask) in float64, where
    R = objective(output of `net` in `mode` on an all-ones input of `input_shape`).

    The shared core of PX's path term (transform = square) and SynFlow (transform = abs).
    """
    kernels = [
        transform(
            tf.cast(tf.convert_to_tensor(e.variable), DTYPE)
            * tf.cast(tf.convert_to_tensor(e.mask), DTYPE)
        )
        for e in entries
    ]
    with tf.GradientTape() as tape:
        tape.watch(kernels)
        out = net.run(
            tf.ones(input_shape, DTYPE),
            mode,
            kernels={id(e.variable): k for e, k in zip(entries, kernels)},
        )
        total = objective(out)
    grads = tape.gradient(total, kernels, unconnected_gradients="zero")
    return [k * g for k, g in zip(kernels, grads)]
