"""Auxiliary path networks of a Keras model, run by interpreting its layer graph.

PX and SynFlow score weights with modified copies of the network (unit weights, squared weights,
absolute weights, identity activations, recorded ReLU gates). Instead of cloning the model per
round or patching layers, `PathNetwork` walks the Functional graph once per pass and computes each
layer's modified version from the layer's own configuration and variables. The model is never
modified; passes run in float64 because a unit-weight network grows by every layer's fan-in.

Modes of `PathNetwork.run`:
  "real"     the masked network itself on data (training=False); records the gates.
  "z1"       PX data term: unit weights (times masks), input x^2, every ReLU-family activation
             replaced by its recorded 0/1 gate (squared slope for leaky ReLUs), BN scale 1,
             max pooling picks the positions the real network picked.
  "z2"       PX path term: weights theta^2 (times masks), identity activations, BN scale squared,
             max pooling replaced by average pooling (a data-free stand-in), biases dropped.
  "synflow"  SynFlow: |theta| (times masks), |bias|, BN with absolute parameters in inference mode,
             the real activations and pooling.
The "z1" pass also runs in a scaled float32 form ("z1_scaled"): every tensor is carried as a
float32 mantissa and a float64 log-scale, renormalized after each weighted layer, with multi-input
ops brought to a common scale first. z1 has no negative terms (unit weights, 0/1 gates, x^2), so
this keeps float32's relative precision at any depth instead of overflowing.

Average pooling, residual adds, concatenation, flattening, padding and dropout are linear (or the
identity at inference) and run unchanged in every mode. A softmax on the model output is ignored
in the auxiliary modes (paths end at the logits).
"""

import keras
import tensorflow as tf
from keras import layers

from tf_tradyx import _keras_compat, _model_walk
from tf_tradyx.pruning import masking, path_layers
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
        self._output_ops = {id(_keras_compat.producer(model.outputs[0]))}
        self._check(model)

    # Validation walks the graph once so that errors name the first unsupported layer up front.
    def _check(self, model):
        """Raises one UnsupportedLayerError naming every layer the path networks cannot treat."""
        problems = list(self._problems(model))
        if problems:
            raise path_layers.unsupported_all(problems)

    def _problems(self, model):
        """(layer, why) for every layer of the graph (nested models included) not supported."""
        for op in _functional(model).operations:
            if isinstance(op, layers.InputLayer):
                continue
            if isinstance(op, keras.Model):
                yield from self._problems(op)
                continue
            inner = op.layer if isinstance(op, masking.MaskedLayer) else op
            if masking.is_prunable(inner):
                spec = path_layers.activation_spec(getattr(inner, "activation", None))
                if spec is None:  # named as the user named it, not as its mask wrapper
                    yield inner, f"activation {inner.activation.__name__!r}"
                elif spec == ("softmax",) and id(op) not in self._output_ops:
                    yield inner, "softmax inside the network"
                continue
            if isinstance(op, (layers.BatchNormalization, layers.Rescaling, layers.MaxPooling2D)):
                if isinstance(op, layers.MaxPooling2D) and op.data_format != "channels_last":
                    yield op, "channels_first max pooling"
                continue
            if isinstance(op, path_layers.LINEAR_LAYERS):
                continue
            if not isinstance(op, layers.Layer) and type(op).__name__ in path_layers.LINEAR_OPS:
                continue
            if isinstance(op, (layers.ReLU, layers.LeakyReLU, layers.Activation, layers.Softmax)):
                spec = path_layers.layer_activation_spec(op)
                if spec is None:
                    yield op, "not a ReLU-family activation"
                elif spec == ("softmax",) and id(op) not in self._output_ops:
                    yield op, "softmax inside the network"
                continue
            yield op, "unknown layer type"

    def run(self, x, mode, kernels=None, gates=None):
        """Runs one pass. `kernels`: {id(kernel variable): tensor} overriding the mode's default
        kernel (used to take gradients); `gates`: list filled by "real", consumed by "z1" and
        "z1_scaled". "z1_scaled" returns (float32 mantissa, float64 log-scale): z1 = m * exp(s)."""
        state = {"mode": mode, "kernels": kernels or {}, "gates": gates, "next_gate": 0}
        if mode in ("z1", "z1_scaled") and gates is None:
            raise ValueError(f"mode {mode!r} needs the gates recorded by a 'real' pass.")
        if mode == "z1_scaled":
            state["mode"] = "z1"
            state["dtype"] = tf.float32
            state["scales"] = {}
            x = tf.cast(x, tf.float32)
            peak = tf.reduce_max(x)
            peak = tf.where(peak > 0, peak, tf.ones_like(peak))
            x = x / peak
            state["scales"][id(x)] = (x, tf.math.log(tf.cast(peak, DTYPE)))
            y = self._run_model(self.model, x, state)
            return y, state["scales"][id(y)][1]
        state["dtype"] = DTYPE
        return self._run_model(self.model, x, state)

    def _run_model(self, model, x, state):
        def call(op, *args, **kwargs):
            if "scales" in state and not isinstance(op, keras.Model):
                return self._scaled_call(op, args, kwargs, state)
            return self._call(op, args, kwargs, state)

        return _keras_compat.run_through_graph(_functional(model), x, call)

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

    def _call(self, op, args, kwargs, state):
        mode = state["mode"]
        if isinstance(op, keras.Model):
            return self._run_model(op, args[0], state)
        if mode == "real":
            if "training" in getattr(op, "_call_context_args", {}):
                kwargs["training"] = False
            if isinstance(op, layers.MaxPooling2D):
                return self._real_max_pool(op, args[0], state)
            y = op(*args, **kwargs)
            spec = self._activation_of(op)
            if spec is not None and spec[0] == "relu":
                state["gates"].append(path_layers.squared_gate(y, spec, tf.float32))
            return y

        kwargs.pop("training", None)
        kwargs.pop("mask", None)
        if isinstance(op, masking.MaskedLayer) or masking.is_prunable(op):
            return self._weighted(op, args[0], state)
        if isinstance(op, layers.BatchNormalization):
            return self._batch_norm(op, args[0], mode)
        if isinstance(op, layers.Rescaling):
            return self._rescaling(op, args[0], mode)
        if isinstance(op, layers.MaxPooling2D):
            return self._max_pool(op, args[0], state)
        spec = path_layers.layer_activation_spec(op)
        if spec is not None:
            return self._activation(args[0], spec, state, op.call)
        if isinstance(op, path_layers.NOISE_LAYERS):
            return args[0]
        return op.call(*args, **kwargs)

    def _activation_of(self, op):
        inner = op.layer if isinstance(op, masking.MaskedLayer) else op
        if masking.is_prunable(inner):
            return path_layers.activation_spec(getattr(inner, "activation", None))
        return path_layers.layer_activation_spec(op)

    def _activation(self, y, spec, state, real_fn):
        if spec[0] == "linear" or spec[0] == "softmax":
            return y  # Softmax only at the output: paths end at the logits.
        mode = state["mode"]
        if mode == "z1":
            gate = state["gates"][state["next_gate"]]
            state["next_gate"] += 1
            return y * tf.cast(gate, y.dtype)
        if mode == "z2":
            return y
        return real_fn(y)  # synflow: the real activation.

    def _kernel(self, layer, var, mask, state):
        override = state["kernels"].get(id(var))
        if override is not None:
            return override
        dtype = state["dtype"]
        theta = tf.cast(tf.convert_to_tensor(var), dtype)
        m = tf.cast(tf.convert_to_tensor(mask), dtype) if mask is not None else None
        mode = state["mode"]
        if mode == "z1":
            return m if m is not None else tf.ones_like(theta)
        base = theta * m if m is not None else theta
        return base * base if mode == "z2" else tf.abs(base)

    def _weighted(self, op, x, state):
        if isinstance(op, masking.MaskedLayer):
            layer, pairs = op.layer, list(zip(op.kernels, op.masks))
        else:
            layer = op
            pairs = [(v, None) for v in masking.prunable_variables(op)]
        kernels = [self._kernel(layer, v, m, state) for v, m in pairs]
        y = path_layers.linear_call(layer, tf.cast(x, state["dtype"]), kernels)
        mode = state["mode"]
        if mode == "synflow" and getattr(layer, "use_bias", False) and layer.bias is not None:
            bias = tf.abs(tf.cast(tf.convert_to_tensor(layer.bias), DTYPE))
            y = y + tf.reshape(bias, path_layers.channel_shape(layer, len(y.shape)))
        activation = getattr(layer, "activation", None)
        return self._activation(y, path_layers.activation_spec(activation), state, activation)

    def _batch_norm(self, bn, x, mode):
        gamma, beta, mean, var = path_layers.bn_scale_shift(bn)
        shape = path_layers.channel_shape(bn, len(x.shape))
        if mode == "z1":
            return x
        if mode == "z2":
            scale = gamma / tf.sqrt(var + bn.epsilon)
            return x * tf.reshape(scale * scale, shape)
        scale = tf.abs(gamma) / tf.sqrt(tf.abs(var) + bn.epsilon)
        return (x - tf.reshape(tf.abs(mean), shape)) * tf.reshape(scale, shape) + tf.reshape(
            tf.abs(beta), shape
        )

    def _rescaling(self, op, x, mode):
        scale = tf.cast(op.scale, DTYPE)
        if mode == "z1":
            return x
        if mode == "z2":
            return x * scale * scale
        return x * tf.abs(scale) + tf.abs(tf.cast(op.offset, DTYPE))

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
            argmax = state["gates"][state["next_gate"]]
            state["next_gate"] += 1
            return tf.reshape(tf.gather(tf.reshape(x, [-1]), argmax), tf.shape(argmax))
        if mode == "z2":
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
