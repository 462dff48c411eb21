"""`ChannelSparseUpdate`: a layer whose kernel learns only on a sampled set of input channels.

Why a custom gradient rather than a masked one: masking the gradient after a full backward pass (what
the TraDy paper simulates) still stores the whole input activation and computes every weight
derivative. Here the forward pass is the layer's own computation, but what it keeps for the backward
pass is only `x[..., selected]`; the backward pass computes the kernel derivative of those channels
(zeros elsewhere) and the full input gradient, which needs only the kernel. So the layer's input
activation can be freed after the forward pass in graph mode (`tf.function`, the default in `fit`).

The selected channel indices live in two non-trainable int32 variables created in `build`
(`channel_indices`, padded to the channel count, and `num_channels`): resampling assigns them, so it
never retraces the train function, and a `.keras` file saves the current selection.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tf_tradyx import _keras_compat
from tf_tradyx._graph import kinds, walk
from tf_tradyx.sparse_update import (
    channel_grads,
    compact_relu,
    costs,
    layer_views,
    optimizer_state,
)


@keras.saving.register_keras_serializable(package="tf_tradyx")
class ChannelSparseUpdate(layers.Wrapper):
    """Wraps a selectable layer; only the selected input channels' kernel slices train.

    Selectable (`tf_tradyx.sparse_update.layer_views`): Conv2D, DepthwiseConv2D, Conv1D,
    DepthwiseConv1D (channels_last), Dense on any rank (a channel is an input feature, kept for
    every token of a sequence), and dense-like EinsumDense (the projections of
    `MultiHeadAttention`; a channel is one entry of the contracted input axes).

    Args:
      layer: the layer to wrap (grouped and dilated convs included: a selected input channel
        trains the kernel slice that reaches its own group's outputs).
      update_bias: also train the bias (it costs no activation memory); False keeps it frozen, so
        that only the selected channels change.
      input_gradient: return the gradient of the layer's input. `wrap` sets False when nothing
        upstream trains, so layers before the earliest wrapped layer get no backward pass at all.
      simulate: the TraDy paper's simulation instead: an ordinary full backward pass (the whole
        input is kept), then the kernel gradient is masked to the selected channels. Same numbers,
        no memory saving; for comparisons.
      compact_activation: apply a relu/relu6 activation of the layer with a 1-bit backward mask.
      kernel_mask: the layer is pruned: keep a 0/1 `kernel_mask` (non-trainable) and compute with
        kernel * mask, so pruned weights get a zero gradient and stay exactly zero.
      sampler: the config of the model's sampler (set by `wrap`; saved with the model).
      channel_axis: "input" (the default: TraDy and the strategies of its paper select input
        channels) or "output": the selection names output neurons (Velocity). An output neuron's
        kernel derivative needs the layer's whole input, so a layer keeps its input when any of
        its outputs is selected, and nothing otherwise (outside XLA; under XLA it always keeps it).
        For a depthwise conv (depth multiplier 1) output c is input channel c, so the two agree.
      selection_name: the name cost tables and selections use for this layer (default: the
        layer's own name; `SparseSublayers` gives sublayers their path).
      **kwargs: `keras.layers.Wrapper` arguments; the name defaults to "sparse_update_<layer>".

    Raises:
      ValueError: for a layer that is not selectable, uses LoRA or quantization, or an output
        selection that the layer cannot make (grouped convs, depth multipliers); for channel
        indices out of range or repeated.

    Examples:
      `wrap` puts one around every candidate layer; standalone, it selects by hand:

      >>> layer = tx.sparse_update.ChannelSparseUpdate(keras.layers.Dense(2, name="fc"))
      >>> _ = layer(np.ones((1, 4), "float32"))  # builds
      >>> layer.name, layer.in_channels
      ('sparse_update_fc', 4)
      >>> layer.set_channels([1, 3])
      >>> layer.get_channels()
      array([1, 3])
      >>> import tensorflow as tf
      >>> with tf.GradientTape() as tape:
      ...     loss = keras.ops.sum(layer(np.ones((1, 4), "float32")))
      >>> gradient = tape.gradient(loss, layer.kernel)
      >>> np.abs(np.asarray(gradient)).sum(axis=1)  # only input channels 1 and 3
      array([0., 2., 0., 2.], dtype=float32)
    """

    _tradyx_wrapper = True
    _tradyx_sparse_update = True

    def __init__(
        self,
        layer,
        update_bias=False,
        input_gradient=True,
        simulate=False,
        compact_activation=True,
        kernel_mask=False,
        sampler=None,
        channel_axis="input",
        selection_name=None,
        **kwargs,
    ):
        if channel_axis not in ("input", "output"):
            raise ValueError(f"channel_axis must be 'input' or 'output', got {channel_axis!r}.")
        if channel_axis == "output" and isinstance(layer, layers.DepthwiseConv2D):
            if layer.depth_multiplier != 1:
                raise ValueError(
                    f"{layer.name}: output-neuron selection of a depthwise conv needs depth "
                    f"multiplier 1, got {layer.depth_multiplier}."
                )
        elif channel_axis == "output" and int(getattr(layer, "groups", 1)) > 1:
            raise ValueError(
                f"{layer.name}: output-neuron selection of a grouped conv is not supported."
            )
        if not costs.is_selectable(layer):
            raise ValueError(
                f"Cannot sparse-update layer {layer.name!r} ({type(layer).__name__}): supported are "
                "Conv2D, DepthwiseConv2D, Conv1D, DepthwiseConv1D (channels_last), Dense and "
                "EinsumDense with a dense-like equation (e.g. 'abc,cde->abde')."
            )
        if channel_axis == "output" and kinds.selectable_kind(layer) not in (
            "conv",
            "depthwise",
            "dense",
        ):
            raise ValueError(
                f"{layer.name}: output-neuron selection supports Conv2D, DepthwiseConv2D and "
                f"Dense, not {type(layer).__name__}."
            )
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise ValueError(f"Layer {layer.name!r} uses LoRA or quantization; not supported.")
        kwargs.setdefault("name", f"sparse_update_{layer.name}")
        super().__init__(layer, **kwargs)
        self.update_bias = bool(update_bias)
        self.input_gradient = bool(input_gradient)
        self.simulate = bool(simulate)
        self.compact_activation = bool(compact_activation) and not self.simulate
        self.has_kernel_mask = bool(kernel_mask)
        self.kernel_mask = None
        # The model's sampler (strategy, budget, seed) as a config, so that a loaded model can
        # resample without re-typed arguments (`attach`). Set by `wrap`; the same in every wrapper.
        self.sampler_config = sampler
        self.channel_axis = channel_axis
        # The name cost tables, rankings and selections know this layer by: its own name for a
        # node of the model's graph, a path such as "transformer_layer_0/self_attention_layer/query"
        # for a sublayer of a custom layer (`SparseSublayers`), where names repeat across blocks.
        self._selection_name = selection_name
        self._traces = 0  # Python executions of `call`: counts graph traces in fit.
        self.dense_gradient = False  # Set (eagerly) by gradients.dense_gradients.
        # Under XLA (static shapes) the backward pass gathers a fixed number of channel slots,
        # fixed when the train step is traced: at least the selection's size and
        # `reserved_channels` (a sampler reserves room for the draws it knows are coming).
        # `traced_capacity` is the number the last XLA trace used (None: no XLA trace since the
        # train function was last rebuilt); see `outgrew_trace`.
        self.reserved_channels = 0
        self.traced_capacity = None

    def build(self, input_shape=None):
        super().build(input_shape)
        # How the layer is computed as a canonical dense/conv/depthwise map (a plain Python
        # object: not tracked by Keras, rebuilt with the layer).
        _keras_compat.set_untracked(self, "view", layer_views.view_of(self.layer))
        channels = (
            self.view.in_channels if not self.selects_outputs else int(self.layer.kernel.shape[-1])
        )
        self.channel_indices = self.add_weight(
            name="channel_indices",
            shape=(channels,),
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )
        self.num_channels = self.add_weight(
            name="num_channels", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        # How many selections the sampler has drawn since `wrap` (the next draw's epoch): saved with
        # the model, so that a second `fit` call, a reloaded model and `BackupAndRestore` continue
        # the stream of draws instead of replaying it.
        self.draws = self.add_weight(
            name="draws", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        if self.has_kernel_mask:
            self.kernel_mask = self.add_weight(
                name="kernel_mask",
                shape=self.layer.kernel.shape,
                initializer="ones",
                trainable=False,
                dtype=self.layer.kernel.dtype,
            )
        # The epoch of `fit` (Keras' epoch index) whose draw the selection is while that epoch
        # trains, -1 between epochs: a run saved mid-epoch (`BackupAndRestore(save_freq=...)`) and
        # resumed restarts that epoch with the draw it had, not the next one. Created last, so
        # that files saved before it keep their keys.
        self.epoch_in_progress = self.add_weight(
            name="epoch_in_progress", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.epoch_in_progress.assign(-1)
        if self.layer_bias is not None:
            self.layer_bias.trainable = self.update_bias
        self.built = True

    @property
    def kernel(self):
        return self.layer.kernel

    @property
    def selection_name(self):
        """The name cost tables, rankings and selections know this layer by."""
        return self._selection_name or self.layer.name

    @property
    def layer_bias(self):
        """The wrapped layer's bias variable, or None (EinsumDense has no `use_bias`)."""
        return getattr(self.layer, "bias", None)

    @property
    def in_channels(self):
        """How many channels the selection chooses from: input channels, or output neurons."""
        return int(self.channel_indices.shape[0])

    @property
    def selects_outputs(self):
        """True when the selection names output neurons (a depthwise conv's agree with its inputs)."""
        return self.channel_axis == "output" and self.kind != "depthwise"

    @property
    def selection_axis(self):
        """The kernel axis the selection indexes (-2: input channels, -1: output neurons)."""
        return -1 if self.selects_outputs else -2

    @property
    def kind(self):
        """The canonical map the layer is computed as: "dense", "conv" or "depthwise"."""
        view = getattr(self, "view", None)  # set in build
        return (view or layer_views.view_of(self.layer)).kind

    def kernel_channel_mask(self, keep):
        """A per-channel 0/1 vector shaped to broadcast over the layer's kernel (the selection's
        kernel slices)."""
        if self.selects_outputs:
            shape = [1] * len(self.layer.kernel.shape)
            shape[-1] = self.in_channels
            return keras.ops.reshape(keep, shape)
        return self.view.kernel_channel_mask(keep)

    # Selection ---------------------------------------------------------------------------------

    def set_channels(self, channels):
        """Selects these input channels (any iterable of distinct ints in [0, in_channels))."""
        self.assign_validated(self.validated(channels))

    def validated(self, channels):
        """`channels` as a sorted int32 array; ValueError when they are not valid for this layer."""
        idx = np.asarray(sorted(int(c) for c in channels), dtype=np.int32)
        if len(np.unique(idx)) != len(idx):
            raise ValueError(
                f"{self.layer.name}: channel indices must be distinct, got {list(idx)}."
            )
        if len(idx) and (idx[0] < 0 or idx[-1] >= self.in_channels):
            raise ValueError(
                f"{self.layer.name}: {'output neuron' if self.selects_outputs else 'channel'} "
                f"indices must lie in [0, {self.in_channels}), "
                f"got {list(idx)}."
            )
        return idx

    def assign_validated(self, idx):
        """Assigns a selection that `validated` returned."""
        padded = np.zeros(self.in_channels, np.int32)
        padded[: len(idx)] = idx
        self.channel_indices.assign(padded)
        self.num_channels.assign(len(idx))

    def get_channels(self):
        """The selected input channels, sorted (numpy int array)."""
        n = int(self.num_channels.numpy())
        return np.asarray(self.channel_indices.numpy()[:n], dtype=np.int64)

    def load_own_variables(self, store):
        """Loads the selection (and mask) from a file; malformed values are refused before any is
        assigned, so a failed `load_weights` leaves the layer as it was."""
        own = [self.channel_indices, self.num_channels, self.draws] + (
            [self.kernel_mask] if self.kernel_mask is not None else []
        )
        key = {id(var): _keras_compat.own_variable_key(self, var) for var in own}
        for var in own:
            if key[id(var)] in store and tuple(store[key[id(var)]].shape) != tuple(var.shape):
                raise ValueError(
                    f"{self.name}: the file holds {var.name} of shape "
                    f"{tuple(store[key[id(var)]].shape)}, but the layer needs "
                    f"{tuple(var.shape)}; the file belongs to another model."
                )
        indices, count = key[id(self.channel_indices)], key[id(self.num_channels)]
        if indices in store and count in store:
            self._check_selection(np.asarray(store[count]), np.asarray(store[indices]))
        mask = key.get(id(self.kernel_mask))
        if mask is not None and mask in store:
            m = np.asarray(store[mask])
            if not np.all((m == 0) | (m == 1)):
                raise ValueError(
                    f"{self.name}: the stored kernel mask holds values other than 0 "
                    "and 1; the file is corrupted."
                )
        marker = _keras_compat.own_variable_key(self, self.epoch_in_progress)
        if marker not in store:  # a file from before the epoch marker: no epoch in progress
            store = {**{k: store[k] for k in store.keys()}, marker: np.int32(-1)}
        super().load_own_variables(store)

    def check_selection(self):
        """Raises ValueError when the stored selection is malformed (e.g. a corrupted file)."""
        self._check_selection(self.num_channels.numpy(), self.channel_indices.numpy())

    def _check_selection(self, num_channels, indices):
        n = int(num_channels)
        idx = np.asarray(indices)[: max(n, 0)]
        if (
            not 0 <= n <= self.in_channels
            or np.any(idx < 0)
            or np.any(idx >= self.in_channels)
            or len(np.unique(idx)) != n
        ):
            raise ValueError(
                f"{self.layer.name}: stored channel selection is invalid "
                f"(num_channels={n}, indices={list(idx)}); in_channels={self.in_channels}."
            )

    # Forward and backward -------------------------------------------------------------------------

    def outgrew_trace(self):
        """True when the selection (or the room reserved for coming draws) is larger than the
        slots the last XLA trace gathers: that trace would miss channels, so the model's train
        function must be rebuilt (`sampler.retrace_if_needed`)."""
        if self.traced_capacity is None:
            return False
        return max(self.reserved_channels, int(self.num_channels.numpy())) > self.traced_capacity

    def _xla_capacity(self):
        """The static number of channel slots an XLA trace gathers: the current selection's size,
        or more when a sampler reserved room for the draws to come. (XLA compiles a size read
        from a variable as a constant: a run-time-sized gather would compile the step again at
        every draw of a new size.)"""
        with tf.init_scope():  # the selection's current value, read eagerly while tracing
            count = int(self.num_channels.numpy())
        self.traced_capacity = max(self.reserved_channels, count, 1)
        return self.traced_capacity

    def call(self, inputs):
        self._traces += 1
        # Unselected channels stay bit-identical only under per-element optimizers without decay
        # or EMA on this kernel: checked here, where every strategy and training path passes.
        trainer = _keras_compat.training_call_entry()
        if trainer is not None:
            optimizer_state.check_kernels(getattr(trainer, "optimizer", None), [self])
        layer = self.view  # the canonical map's parameters
        original = tf.convert_to_tensor(inputs)
        x = layer.inputs(original)
        kernel = tf.convert_to_tensor(self.layer.kernel)
        if self.kernel_mask is not None:  # pruned weights: zero in the forward, zero gradient
            kernel = kernel * tf.convert_to_tensor(self.kernel_mask)
        kernel = layer.kernel(tf.cast(kernel, x.dtype))
        num = tf.convert_to_tensor(self.num_channels)
        indices = tf.convert_to_tensor(self.channel_indices)
        if self.dense_gradient:
            return self._finish(channel_grads.linear(layer, layer.kind, x, kernel), original)
        if self.simulate:
            return self._finish(
                channel_grads.linear(
                    layer, layer.kind, x, self._masked_gradient(kernel, indices[:num])
                ),
                original,
            )
        if _keras_compat.tracing_for_xla():
            # Static shapes: `capacity` slots, the selection first, the rest zeroed (their kernel
            # gradient is then exactly zero; their index, 0, receives zero).
            capacity = self._xla_capacity()
            slots = indices[:capacity]
            valid = tf.cast(tf.range(capacity) < num, x.dtype)
        else:
            # Run-time sizes. An empty draw still gathers one slot, its gradient scaled by 0:
            # TensorFlow's own conv filter-gradient kernels (GPUs, and CPUs without oneDNN)
            # refuse a zero-channel input. `tf.slice` rather than `indices[:n]`: every op and
            # constant stays in the train function's graph for the whole fit, ~10 KB of host
            # memory each.
            slots = tf.slice(indices, [0], tf.reshape(tf.maximum(num, 1), [1]))
            valid = tf.cast(num > 0, x.dtype)  # 0: an empty draw's one slot trains nothing
        sparse_linear = (
            channel_grads.output_sparse_linear
            if self.selects_outputs
            else channel_grads.input_sparse_linear
        )
        y = sparse_linear(layer, layer.kind, x, kernel, slots, valid, self.input_gradient)
        return self._finish(y, original, biased=layer.use_bias)

    def _masked_gradient(self, kernel, idx):
        """Identity on the kernel whose gradient is zeroed outside the selected channels."""
        channels = self.in_channels

        @tf.custom_gradient
        def masked(k):
            def grad(g):
                keep = tf.scatter_nd(idx[:, None], tf.ones_like(idx, g.dtype), [channels])
                if self.selects_outputs:
                    return g * tf.reshape(keep, [1] * (g.shape.rank - 1) + [channels])
                groups = self.view.groups
                if groups > 1:  # kernel row r of group k is input channel k * rows + r
                    rows, c_out = g.shape[-2], g.shape[-1]
                    keep = tf.transpose(tf.reshape(keep, (groups, rows)))
                    return g * tf.repeat(keep, c_out // groups, axis=1)
                shape = [1] * (g.shape.rank - 2) + [channels, 1]
                return g * tf.reshape(keep, shape)

            return tf.identity(k), grad

        return masked(kernel)

    def _finish(self, y, original, biased=False):
        """The layer's output from the canonical map's `y`: reshaped back, the bias unless the
        map added it, the activation."""
        layer = self.layer
        y = self.view.outputs(y, original)
        if self.layer_bias is not None and not biased:
            bias = tf.cast(tf.convert_to_tensor(self.layer_bias), y.dtype)
            y = tf.nn.bias_add(y, bias) if bias.shape.rank == 1 else y + bias
        if layer.activation is None:
            return y
        compact = (
            compact_relu.compact_activation(layer.activation) if self.compact_activation else None
        )
        return compact(y) if compact is not None else layer.activation(y)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["update_bias"] = self.update_bias
        config["input_gradient"] = self.input_gradient
        config["simulate"] = self.simulate
        config["compact_activation"] = self.compact_activation
        config["kernel_mask"] = self.has_kernel_mask
        config["sampler"] = self.sampler_config
        config["channel_axis"] = self.channel_axis
        if self._selection_name is not None:
            config["selection_name"] = self._selection_name
        return config


def wrappers_of(model):
    """Every `ChannelSparseUpdate` of `model` in graph order: the nodes of its graph (nested
    models expanded) and those inside the custom layers a `SparseSublayers` holds."""
    out = []
    for layer in walk.flatten_layers(model):
        if isinstance(layer, ChannelSparseUpdate):
            out.append(layer)
        elif getattr(type(layer), "_tradyx_sparse_sublayers", False):
            out.extend(layer.wrappers)
    return out
