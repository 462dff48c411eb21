"""Auxiliary path networks of a Keras model, run by interpreting its layer graph.

PX and SynFlow score weights with modified copies of the network (unit weights, squared weights,
absolute weights, identity activations, recorded ReLU gates). Instead of cloning the model per
round or patching layers, `PathNetwork` walks the model's graph once per pass (the steps of
`_keras_compat.graph_steps`, nested models inlined: the same walk TraDy uses to count calls and to
recompute segments) and computes each layer's modified version from the layer's own configuration
and variables. The model is never
modified; passes run in float64 because a unit-weight network grows by every layer's fan-in.

Modes of `PathNetwork.run` (docs/METHODS.md 2.5 for the generalisation beyond ReLU networks):
  "real"     the masked network itself on data (training=False); records what z1 needs: every
             activation's squared derivative at its real pre-activation (exact 0/1 for the ReLU
             family, the linearisation for smooth ones), max-pooling positions, LayerNormalization's
             1/sigma^2, the squared real factors of every product.
  "z1"       PX data term: unit weights (times masks), input x^2, activations replaced by their
             recorded gates, affine layers' scales 1, max pooling at the recorded positions.
  "z2"       PX path term: weights theta^2 (times masks), identity activations, affine scales
             squared, max pooling replaced by average pooling (a data-free stand-in), no biases.
  "synflow"  SynFlow: |theta| (times masks), |bias|, BN with absolute parameters in inference mode,
             every activation linearised (the identity), the real pooling.
  "connect"  the masks alone (0/1 weights, all else the identity, average pooling), rescaled per
             layer: an output is positive exactly when a path of kept weights reaches it.
The "z1" pass also runs in a scaled float32 form ("z1_scaled"): every tensor is carried as a
float32 mantissa and a float64 log-scale, renormalized after each weighted layer, with multi-input
ops brought to a common scale first. z1 has no negative terms (unit weights, squared gates, x^2),
so this keeps float32's relative precision at any depth instead of overflowing.
How each kind of operation acts in each mode: `path_ops`. A softmax on the model output is ignored
in the auxiliary modes (paths end at the logits).
"""

import tensorflow as tf
from keras import layers

from tf_tradyx import _keras_compat, _model_walk
from tf_tradyx.pruning import masking, path_layers, path_ops
from tf_tradyx.pruning.path_layers import DTYPE, UnsupportedLayerError, linear_call  # noqa: F401 - re-exported

# ----- the interpreter ---------------------------------------------------------------------------


def _functional(model):
    graph = _keras_compat.functional_graph(model)
    if graph is None:
        raise ValueError(f"Sequential model {model.name!r} is not built with an input shape.")
    return graph


class PathNetwork:
    """Runs the auxiliary networks of one Keras model (see the module docstring)."""

    def __init__(self, model):
        _model_walk.check_cloneable(model)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError("Path-based scoring supports models with one input and one output.")
        self.model = model
        _functional(model)  # a clear error for an unbuilt Sequential model
        self._steps = _keras_compat.graph_steps(model)  # nested models inlined
        self._output_ops = {id(_keras_compat.output_operation(model, self._steps))}
        self._check(model)

    # Validation walks the graph once so that errors name every unsupported layer up front.
    def _check(self, model):
        """Raises one UnsupportedLayerError naming every layer the path networks cannot treat."""
        problems = list(self._problems(model))
        if problems:
            raise path_layers.unsupported_all(problems)

    def _problems(self, model):
        """(layer, why) for every layer of the graph (nested models included) not supported."""
        for step in self._steps:
            if step[0] != "op":
                continue
            op = step[1]
            kind, why = path_ops.kind_of(op)
            if kind is None:
                yield op, why
                continue
            inner = op.layer if isinstance(op, masking.MaskedLayer) else op
            spec = self._activation_of(op) if kind in ("weighted", "activation") else None
            if kind == "weighted" and spec is None:  # named as the user named it
                yield inner, f"activation {inner.activation.__name__!r}"
            elif spec == ("softmax",) and id(op) not in self._output_ops:
                yield inner, "softmax inside the network"

    def run(self, x, mode, kernels=None, gates=None):
        """Runs one pass. `kernels`: {id(kernel variable): tensor} overriding the mode's default
        kernel (used to take gradients); `gates`: list filled by "real", consumed by "z1" and
        "z1_scaled". "z1_scaled" returns (float32 mantissa, float64 log-scale): z1 = m * exp(s)."""
        state = {"mode": mode, "kernels": kernels or {}, "gates": gates, "next_gate": 0}
        if mode in ("z1", "z1_scaled") and gates is None:
            raise ValueError(f"mode {mode!r} needs the gates recorded by a 'real' pass.")
        state["graph"] = set()  # ids of the tensors of this pass (arguments that are not constants)
        if mode == "z1_scaled":
            state["mode"] = "z1"
            state["dtype"] = tf.float32
            state["scales"] = {}
            x = tf.cast(x, tf.float32)
            peak = tf.reduce_max(x)
            peak = tf.where(peak > 0, peak, tf.ones_like(peak))
            x = x / peak
            state["scales"][id(x)] = (x, tf.math.log(tf.cast(peak, DTYPE)))
            state["graph"].add(id(x))
            y = self._run_model(x, state)
            return y, state["scales"][id(y)][1]
        state["dtype"] = DTYPE
        if mode != "real":
            x = tf.cast(x, DTYPE)
        state["graph"].add(id(x))
        return self._run_model(x, state)

    def _run_model(self, x, state):
        def call(op, *args, **kwargs):
            if "scales" in state:
                y = self._scaled_call(op, args, kwargs, state)
            else:
                y = self._call(op, args, kwargs, state)
            state["graph"].update(id(t) for t in tf.nest.flatten(y))
            return y

        return _keras_compat.run_graph(self.model, self._steps, x, call)

    # ---- one operation ----
    def _scaled_call(self, op, args, kwargs, state):
        """z1 in float32: brings the inputs to one scale, renormalizes weighted outputs."""
        scales = state["scales"]
        flat = tf.nest.flatten(args)
        tensors = [t for t in flat if tf.is_tensor(t) and id(t) in scales]
        in_scales = [scales[id(t)][1] for t in tensors]
        if len(in_scales) > 1:
            common = tf.reduce_max(tf.stack(in_scales))
            factors = {
                id(t): tf.cast(tf.exp(s - common), tf.float32) for t, s in zip(tensors, in_scales)
            }
            flat = [t * factors[id(t)] if tf.is_tensor(t) and id(t) in factors else t for t in flat]
            state["graph"].update(id(t) for t in flat if tf.is_tensor(t))
            args = tf.nest.pack_sequence_as(args, flat)
            scale = common
        else:
            scale = in_scales[0]
        y = self._call(op, args, kwargs, state)
        if isinstance(op, masking.MaskedLayer) or masking.is_prunable(op):
            peak = tf.reduce_max(y)
            peak = tf.where(peak > 0, peak, tf.ones_like(peak))
            y = y / peak
            scale = scale + tf.math.log(tf.cast(peak, DTYPE))
        scales[id(y)] = (y, scale)
        return y

    def _next_gate(self, state):
        gate = state["gates"][state["next_gate"]]
        state["next_gate"] += 1
        return gate

    def _call(self, op, args, kwargs, state):
        mode = state["mode"]
        kind, _ = path_ops.kind_of(op)
        if mode == "real":
            return self._real_call(op, kind, args, kwargs, state)
        kwargs.pop("training", None)
        kwargs.pop("mask", None)
        if kind == "weighted":
            return self._weighted(op, args[0], state)
        if kind == "batch_norm":
            return path_ops.apply_batch_norm(op, args[0], mode)
        if kind == "max_pool":
            return self._max_pool(op, args[0], state)
        if kind == "activation":
            return self._activation(args[0], path_layers.layer_activation_spec(op), state)
        if kind == "identity":
            return args[0]
        if kind == "affine":
            return path_ops.apply_affine(args[0], *path_ops.affine_scale_shift(op, ()), mode)
        if kind == "layer_norm":
            gate = self._next_gate(state) if mode == "z1" else None
            return path_ops.apply_layer_norm(op, args[0], mode, gate)
        if kind == "product" or (kind == "arithmetic" and self._graph_args(args, state) > 1):
            return self._binary(op, args, state)
        if kind == "arithmetic":
            marked = ["x" if id(a) in state["graph"] else a for a in args]
            return path_ops.apply_affine(
                args[0 if marked[0] == "x" else 1], *self._affine_of(op, marked), mode
            )
        return op.call(*args, **kwargs)

    @staticmethod
    def _graph_args(args, state):
        return sum(1 for a in tf.nest.flatten(args) if id(a) in state["graph"])

    @staticmethod
    def _affine_of(op, marked):
        params = path_ops.affine_scale_shift(op, marked)
        if params is None:
            raise path_layers.unsupported(op, "not affine in its input (a constant divided by it)")
        return params

    def _binary(self, op, args, state):
        """Arithmetic on two graph tensors: sums (and differences) add paths, products follow
        path_ops.apply_product."""
        factors = [a for a in tf.nest.flatten(args) if id(a) in state["graph"]]
        name = type(op).__name__
        if isinstance(op, layers.Multiply) or name == "Multiply":
            squares = self._next_gate(state) if state["mode"] == "z1" else None
            return path_ops.apply_product(factors, state["mode"], squares)
        if name in ("Add", "Subtract"):
            return factors[0] + factors[1]
        raise path_layers.unsupported(op, f"{name} of two tensors of the network")

    def _real_call(self, op, kind, args, kwargs, state):
        """The real (masked) network in inference mode; records what z1 needs, in graph order."""
        if "training" in getattr(op, "_call_context_args", {}):
            kwargs["training"] = False
        if kind == "max_pool":
            return self._real_max_pool(op, args[0], state)
        if kind == "layer_norm":
            state["gates"].append(path_ops.layer_norm_gate(op, args[0]))
        if kind == "product" or (kind == "arithmetic" and self._graph_args(args, state) > 1):
            if isinstance(op, layers.Multiply) or type(op).__name__ == "Multiply":
                factors = [a for a in tf.nest.flatten(args) if id(a) in state["graph"]]
                state["gates"].append([tf.stop_gradient(tf.square(f)) for f in factors])
        spec = self._activation_of(op) if kind in ("weighted", "activation") else None
        if spec is not None and spec[0] == "smooth":
            pre = self._pre_activation(op, kind, args[0])
            y, gate = path_layers.smooth_activation(spec[1], pre)
            state["gates"].append(gate)
            return y
        y = op(*args, **kwargs)
        if spec is not None and spec[0] == "relu":
            state["gates"].append(path_layers.squared_gate(y, spec, tf.float32))
        return y

    def _pre_activation(self, op, kind, x):
        """The input of a smooth activation: the layer's input, or a weighted layer's output
        before its fused activation (its own linear map with the real masked kernels, plus bias)."""
        if kind == "activation":
            return x
        layer, pairs = self._kernel_pairs(op)
        kernels = [
            tf.convert_to_tensor(v) * (1 if m is None else tf.convert_to_tensor(m))
            for v, m in pairs
        ]
        return self._with_bias(layer, path_layers.linear_call(layer, x, kernels), lambda b: b)

    @staticmethod
    def _kernel_pairs(op):
        """The weighted layer and its (kernel variable, mask or None) pairs."""
        if isinstance(op, masking.MaskedLayer):
            return op.layer, list(zip(op.kernels, op.masks))
        return op, [(v, None) for v in masking.prunable_variables(op)]

    @staticmethod
    def _with_bias(layer, y, transform):
        """y plus transform(bias) per channel, when the layer has a bias."""
        if not getattr(layer, "use_bias", False) or layer.bias is None:
            return y
        bias = transform(tf.cast(tf.convert_to_tensor(layer.bias), y.dtype))
        return y + tf.reshape(bias, path_layers.channel_shape(layer, len(y.shape)))

    def _activation_of(self, op):
        inner = op.layer if isinstance(op, masking.MaskedLayer) else op
        if masking.is_prunable(inner):
            return path_layers.activation_spec(getattr(inner, "activation", None))
        return path_layers.layer_activation_spec(op)

    def _activation(self, y, spec, state):
        if spec[0] == "linear" or spec[0] == "softmax":
            return y  # Softmax only at the output: paths end at the logits.
        if state["mode"] == "z1":
            return y * tf.cast(self._next_gate(state), y.dtype)
        return y  # z2 and SynFlow: every activation is the identity (linearised network).

    def _kernel(self, layer, var, mask, state):
        override = state["kernels"].get(id(var))
        if override is not None:
            return override
        dtype = state["dtype"]
        theta = tf.cast(tf.convert_to_tensor(var), dtype)
        m = tf.cast(tf.convert_to_tensor(mask), dtype) if mask is not None else None
        mode = state["mode"]
        if mode in ("z1", "connect"):
            return m if m is not None else tf.ones_like(theta)
        base = theta * m if m is not None else theta
        return base * base if mode == "z2" else tf.abs(base)

    def _weighted(self, op, x, state):
        layer, pairs = self._kernel_pairs(op)
        kernels = [self._kernel(layer, v, m, state) for v, m in pairs]
        y = path_layers.linear_call(layer, tf.cast(x, state["dtype"]), kernels)
        mode = state["mode"]
        if mode == "connect":  # only the sign matters: keep magnitudes near 1 at any depth
            y = y / tf.maximum(tf.reduce_max(y), tf.constant(1e-300, y.dtype))
        if mode == "synflow":
            y = self._with_bias(layer, y, tf.abs)
        activation = getattr(layer, "activation", None)
        return self._activation(y, path_layers.activation_spec(activation), state)

    @staticmethod
    def _pool_args(op):
        return [1, *op.pool_size, 1], [1, *op.strides, 1], op.padding.upper()

    def _real_max_pool(self, op, x, state):
        ksize, strides, padding = self._pool_args(op)
        y, argmax = tf.nn.max_pool_with_argmax(
            x, ksize, strides, padding, include_batch_in_index=True
        )
        state["gates"].append(argmax)
        return y

    def _max_pool(self, op, x, state):
        ksize, strides, padding = self._pool_args(op)
        mode = state["mode"]
        if mode == "z1":
            argmax = self._next_gate(state)
            return tf.reshape(tf.gather(tf.reshape(x, [-1]), argmax), tf.shape(argmax))
        if mode in ("z2", "connect"):
            return tf.nn.avg_pool2d(x, ksize, strides, padding)
        return tf.nn.max_pool2d(x, ksize, strides, padding)


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
