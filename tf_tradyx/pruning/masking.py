"""Masks on prunable kernels: the `MaskedLayer` wrapper, `wrap` and `strip`.

Why a wrapper that masks in the forward pass: the layer computes with `kernel * mask`, so the
gradient of a pruned weight is exactly zero, and since pruning also writes zeros into the kernel,
no optimizer (momentum, Adam, decoupled weight decay) can move it: zero gradient, zero state, zero
value. The mask is a non-trainable variable created in `build`, so it is saved with the model.
"""

import abc
import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tf_tradyx import _keras_compat
from tf_tradyx._graph import kinds, walk
from tf_tradyx._graph.walk import (
    check_cloneable,
    flatten_layers,
    is_sparse_update_wrapper,
    layer_pairs,
)


class PrunableLayer(abc.ABC):
    """Mixin for a user's own layer: declare which variables are prunable kernels.

    `get_prunable_weights()` returns the kernel variables (attributes of the layer). Path-based
    scorers (PX, SynFlow) also need `linear_call(inputs, kernels)`: the layer's output with the
    given kernels, no bias and no activation; the layer's `call` must then equal
    `self.activation(linear_call(...) + bias)`, with `activation` a Keras activation (relu, relu6,
    leaky_relu or linear; no attribute means linear).

    `wrap` then masks the layer like a built-in one (it must have a `get_config` that rebuilds
    it, as `wrap` clones the model); magnitude, random, SNIP, GraSP and ProsPr need no more.

    Examples:
      >>> class ScaledDense(keras.layers.Layer, tx.pruning.PrunableLayer):
      ...     # y = relu(2 * x @ w)
      ...     def __init__(self, units, **kwargs):
      ...         super().__init__(**kwargs)
      ...         self.units, self.activation = units, keras.activations.relu
      ...     def build(self, input_shape):
      ...         self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
      ...     def call(self, x):
      ...         return self.activation(self.linear_call(x, [self.w]))
      ...     def linear_call(self, x, kernels):
      ...         return 2.0 * keras.ops.matmul(x, kernels[0])
      ...     def get_prunable_weights(self):
      ...         return [self.w]
      ...     def get_config(self):
      ...         return {**super().get_config(), "units": self.units}
      >>> inputs = keras.Input((6,))
      >>> outputs = keras.layers.Dense(3, name="out")(ScaledDense(5, name="mine")(inputs))
      >>> masked = tx.pruning.wrap(keras.Model(inputs, outputs))
      >>> [name for w in tx.pruning.masked_layers(masked) for name in w.kernel_names]
      ['mine/w', 'out/kernel']
      >>> report = tx.pruning.SynFlowPruner(rounds=2, verbose=0).prune(masked, 0.5)
      >>> report.kept, report.total
      (22, 45)
    """

    # The layer-kind registry (tf_tradyx._graph.kinds) knows the protocol by this marker.
    _tradyx_prunable = True

    @abc.abstractmethod
    def get_prunable_weights(self):
        """The list of prunable kernel variables of this layer."""


def is_prunable(layer):
    """True for the built-in weighted layers of the layer-kind registry (Conv1D/2D/3D,
    DepthwiseConv, SeparableConv, Dense, EinsumDense, Embedding, recurrent cells),
    `PrunableLayer`s, and layers that hold such sublayers (attention, recurrent layers, custom
    blocks: `kinds.maskable_sublayers`)."""
    return kinds.is_maskable(layer) and not isinstance(layer, MaskedLayer)


def _own_prunable_variables(layer):
    if isinstance(layer, PrunableLayer):
        return list(layer.get_prunable_weights())
    if getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"Layer {layer.name!r} has LoRA enabled; pruning its kernel is not supported."
        )
    names = kinds.prunable_kernel_names(layer)
    if names:
        return [getattr(layer, n) for n in names]
    return []


def prunable_kernels(layer):
    """(owner, variable, prefix) of every prunable kernel of a built layer, in a fixed order: its
    own kernels (owner: the layer, prefix "<layer>"), or those of the weighted sublayers it holds
    (owner: the sublayer; prefix "<layer>/<sublayer>/.../<weighted sublayer>")."""
    own = _own_prunable_variables(layer)
    if own or kinds.kind_of(layer).name == "prunable_layer":
        return [(layer, v, layer.name) for v in own]
    out = []
    for names, sub in kinds.maskable_sublayer_paths(layer):
        out.extend((sub, v, "/".join((layer.name, *names))) for v in _own_prunable_variables(sub))
    if not out:
        raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) has no prunable kernel.")
    return out


def prunable_variables(layer):
    """The prunable kernel variables of a built layer (its own, or its weighted sublayers'), in a
    fixed order."""
    return [v for _, v, _ in prunable_kernels(layer)]


def _attribute_of(layer, variable):
    """The instance attribute that holds `variable` (e.g. "_kernel" for Dense and Conv)."""
    for name, value in vars(layer).items():
        if value is variable:
            return name
    raise ValueError(
        f"Layer {layer.name!r} does not keep its prunable variable {variable.path!r} "
        "in an attribute; PrunableLayer.get_prunable_weights must return attributes."
    )


_NON_FINITE = (
    "tf_tradyx: a pruned kernel became NaN or Inf after the optimizer step. Optimizers that "
    "normalize updates over whole rows or columns (Adafactor) divide 0 by 0 where weights are "
    "pruned; use SGD, Adam, AdamW, RMSprop or Lion for pruned models, or lower the learning rate"
)


def _call_signature_with_training(layer):
    """The signature of `layer.call`, with a `training` keyword if it has none."""
    signature = inspect.signature(layer.call)
    params = list(signature.parameters.values())
    if "training" not in signature.parameters:
        position = next((i for i, p in enumerate(params) if p.kind == p.VAR_KEYWORD), len(params))
        training = inspect.Parameter("training", inspect.Parameter.KEYWORD_ONLY, default=None)
        params.insert(position, training)
    return signature.replace(parameters=params)


def _weighted(kind):
    return bool(kind.kernels)


def _own_kernels(layer):
    """Whether `layer` holds its prunable kernels itself (not through sublayers)."""
    return kinds.kind_of(layer).name == "prunable_layer" or bool(kinds.prunable_kernel_names(layer))


class MaskProjection:
    """A variable constraint: the layer's own constraint (if any), then kernel * mask."""

    def __init__(self, mask, inner=None):
        self.mask, self.inner = mask, inner

    def __call__(self, kernel):
        variable = kernel
        if self.inner is not None:
            kernel = self.inner(kernel)
        # tf.where, not a product: an optimizer may write NaN into a fully pruned row or column
        # (Adafactor's factored second moment underflows to 0 there), and NaN * 0 is NaN.
        keep = tf.convert_to_tensor(self.mask) > 0
        kept = tf.where(keep, kernel, tf.zeros_like(kernel))
        # An EMA optimizer (use_ema=True) averages the weights before this projection and writes
        # the average back into them after it (every `ema_overwrite_frequency` steps, and at the end
        # of fit): its average is projected too, so the written weights are exact zeros as well.
        average = _keras_compat.optimizer_average(_keras_compat.applying_optimizer(), variable)
        if average is not None:
            average.assign(tf.where(keep, average, tf.zeros_like(average)))
        # An optimizer whose update turns the kept weights non-finite (Adafactor normalizes each
        # update by an RMS that the pruned entries' 0/0 makes NaN) fails here, loudly, rather than
        # training a NaN model whose loss sits at log(classes).
        return tf.debugging.check_numerics(kept, _NON_FINITE)


@keras.saving.register_keras_serializable(package="tf_tradyx")
class MaskedLayer(layers.Wrapper):
    """Multiplies each prunable kernel of the wrapped layer by a 0/1 mask in the forward pass.

    `wrap` puts one around every prunable layer; pruners set its `masks` (non-trainable
    variables, one per kernel in `kernels`, saved with the model). The kernels also get a
    constraint that projects them onto their masks after every optimizer step, so pruned
    weights stay exactly zero through `fit`.

    Args:
      layer (keras.layers.Layer): a prunable layer (convolution, dense, EinsumDense, embedding,
        or a `PrunableLayer`).
      **kwargs: `keras.layers.Wrapper` arguments; the name defaults to "masked_<layer name>".

    Raises:
      ValueError: for a layer without a prunable kernel; when loading, for a stored mask of
        another shape or with values other than 0 and 1.

    Examples:
      >>> layer = tx.pruning.MaskedLayer(keras.layers.Dense(2, name="fc"))
      >>> x = np.ones((1, 3), "float32")
      >>> _ = layer(x)  # builds the kernel and its all-ones mask
      >>> layer.name, layer.kernel_names
      ('masked_fc', ['fc/kernel'])
      >>> _ = layer.masks[0].assign(np.zeros((3, 2)))
      >>> layer(x).numpy()  # no kernel weight left; the bias (zeros) alone
      array([[0., 0.]], dtype=float32)
      >>> tx.pruning.MaskedLayer(keras.layers.ReLU(name="act"))
      Traceback (most recent call last):
      ...
      ValueError: Cannot mask layer 'act' (ReLU): it has no prunable kernel. ...
    """

    _tradyx_wrapper = True

    def __init__(self, layer, **kwargs):
        if not is_prunable(layer):
            raise ValueError(
                f"Cannot mask layer {layer.name!r} ({type(layer).__name__}): it has no "
                f"prunable kernel. Maskable: {', '.join(kinds.names_of(_weighted))}, layers "
                "holding such sublayers (attention, recurrent layers, custom blocks), or a layer "
                "implementing tf_tradyx.pruning.PrunableLayer."
            )
        kwargs.setdefault("name", f"masked_{layer.name}")
        super().__init__(layer, **kwargs)
        # A layer masked through its sublayers is called with its own arguments (attention takes
        # query, value, masks...), and built before it is wrapped: its build takes the shapes of
        # all of them, which a wrapper cannot pass on.
        _keras_compat.set_untracked(self, "_through_sublayers", not _own_kernels(layer))
        if self._through_sublayers:  # bound like the layer: its tensors, flags and masks
            _keras_compat.set_call_signature(self, _call_signature_with_training(layer))
        if self._through_sublayers and layer.built:
            self._make_masks()
            self.built = True

    def build(self, input_shape=None):
        super().build(input_shape)
        self._make_masks()

    def get_build_config(self):
        if self._through_sublayers:
            return {"layer": self.layer.get_build_config()}
        return super().get_build_config()

    def build_from_config(self, config):
        if self._through_sublayers and "layer" in config:
            if not self.layer.built:
                self.layer.build_from_config(config["layer"])
            if not self.built:
                self._make_masks()
                self.built = True
            return
        super().build_from_config(config)

    def _make_masks(self):
        found = prunable_kernels(self.layer)
        self.kernels = [v for _, v, _ in found]
        _keras_compat.set_untracked(self, "kernel_owners", [owner for owner, _, _ in found])
        self.kernel_attributes = [_attribute_of(owner, v) for owner, v, _ in found]
        _keras_compat.set_untracked(
            self,
            "_kernel_names",
            [
                f"{prefix}/{a.lstrip('_')}"
                for (_, _, prefix), a in zip(found, self.kernel_attributes)
            ],
        )
        self.masks = [
            self.add_weight(
                name=(f"{n.split('/', 1)[1].replace('/', '_')}_mask"),
                shape=v.shape,
                initializer="ones",
                trainable=False,
                dtype=v.dtype,
            )
            for n, v in zip(self._kernel_names, self.kernels)
        ]
        # The optimizer applies a variable's constraint after every update: projecting the raw
        # kernel onto its mask keeps pruned entries exactly zero under any optimizer (Muon's
        # orthogonalized updates, weight decay...), not just in the masked forward pass.
        for kernel, mask in zip(self.kernels, self.masks):
            kernel.constraint = MaskProjection(mask, kernel.constraint)
        self.built = True

    def load_own_variables(self, store):
        """Loads the masks from a file, refusing wrong shapes or values other than 0 and 1."""
        for mask in self.masks:
            key = _keras_compat.own_variable_key(self, mask)
            if key in store and tuple(store[key].shape) != tuple(mask.shape):
                raise ValueError(
                    f"{self.name}: the file holds a mask of shape "
                    f"{tuple(store[key].shape)} for a kernel of shape "
                    f"{tuple(mask.shape)}; the file belongs to another model."
                )
            if key in store:
                values = np.asarray(store[key])
                if not np.all((values == 0) | (values == 1)):
                    raise ValueError(
                        f"{self.name}: the stored mask holds values other than 0 "
                        "and 1; the file is corrupted."
                    )
        super().load_own_variables(store)

    @property
    def kernel_names(self):
        """Readable names of the masked kernels: "<layer>/<kernel attribute>", or
        "<layer>/<sublayer>/.../<kernel attribute>" for the kernels of its sublayers."""
        return list(self._kernel_names)

    def call(self, inputs=None, *args, training=None, **kwargs):
        saved = []
        for owner, attr, var, mask in zip(
            self.kernel_owners, self.kernel_attributes, self.kernels, self.masks
        ):
            masked = tf.convert_to_tensor(var) * tf.convert_to_tensor(mask)
            saved.append((owner, attr, getattr(owner, attr)))
            _keras_compat.set_untracked(owner, attr, tf.cast(masked, owner.compute_dtype))
        try:
            if self._through_sublayers:  # the layer's own call, with its own arguments
                if _keras_compat.call_has_training_arg(self.layer):
                    kwargs["training"] = training
                if inputs is not None:
                    args = (inputs, *args)
                return self.layer(*args, **kwargs)
            if _keras_compat.call_has_training_arg(self.layer):
                return self.layer.call(inputs, training=training)
            return self.layer.call(inputs)
        finally:
            for owner, attr, value in saved:
                _keras_compat.set_untracked(owner, attr, value)

    def apply_masks(self):
        """Writes zeros into the kernels where the masks are 0."""
        for var, mask in zip(self.kernels, self.masks):
            var.assign(var * mask)


def matches_skip(layer, skip):
    """True when `layer` is named in `skip` (names or layer classes)."""
    for s in skip:
        if isinstance(s, str) and layer.name == s:
            return True
        if isinstance(s, type) and isinstance(layer, s):
            return True
    return False


def wrap(model, skip=()):
    """A clone of `model` with a `MaskedLayer` (all-ones mask) around every prunable layer.

    Prunable layers are convolutions (depthwise and separable included), dense and EinsumDense
    layers, embeddings, and layers that implement `PrunableLayer`; a layer holding such sublayers
    (`MultiHeadAttention`, LSTM/GRU/SimpleRNN, a KerasHub transformer block, a user's block) gets
    one `MaskedLayer` that masks the kernels of all of them (the recurrent ones included). A
    pruner then sets the masks; through `fit`, pruned weights stay exactly zero, also in the raw
    kernels. A layer whose config does not re-create it is left unmasked, with a warning.

    Args:
      model (keras.Model): a built Functional or Sequential model (nested ones too). It is not
        modified.
      skip: layer names or layer classes to leave unmasked (never pruned).

    Returns:
      keras.Model: the masked model, with the original weights copied in.

    Raises:
      ValueError: for a model that is not built, already masked or wrapped for sparse updates,
        or `skip` names that are not in the model.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> [type(layer).__name__ for layer in masked.layers]
      ['MaskedLayer', 'GlobalAveragePooling2D', 'MaskedLayer']
    """
    check_cloneable(model)
    if not model.built:
        raise ValueError("The model is not built; call it on data or give it an Input first.")
    skip = tuple(skip) if isinstance(skip, (list, tuple, set)) else (skip,)
    names = {l.name for l in flatten_layers(model)}
    unknown = [s for s in skip if isinstance(s, str) and s not in names]
    if unknown:
        raise ValueError(f"skip names layers that are not in the model: {unknown}.")
    if any(isinstance(l, MaskedLayer) for l in flatten_layers(model)):
        raise ValueError("The model already has masks; wrap it only once.")
    if any(is_sparse_update_wrapper(l) for l in flatten_layers(model)):
        raise ValueError(
            "The model is wrapped for sparse updates; masks go inside, not around, those "
            "wrappers (tx.pruning.strip refuses the other order): prune first, then wrap for "
            "sparse updates, tx.sparse_update.wrap(tx.pruning.wrap(model), ...); or strip the "
            "sparse-update wrappers first: tx.pruning.wrap(tx.sparse_update.strip(model))."
        )

    def masks_it(layer):
        return is_prunable(layer) and not matches_skip(layer, skip)

    def wrap_copy(copy, original):
        """`copy` (a new layer like `original`) in a MaskedLayer, or as it is."""
        if not masks_it(original):
            return copy
        if not _own_kernels(original):  # masked through its sublayers: built first
            copy = _built_like(copy, original)
            if copy is None or not is_prunable(copy):
                return copy if copy is not None else walk.fresh_copy(original)
        # The wrapper computes in the layer's own precision: a default-policy wrapper would
        # cast a float64 layer's inputs to float32 on the way in.
        return MaskedLayer(copy, dtype=copy.dtype_policy)

    def clone_layer(layer):
        try:
            copy = walk.fresh_copy(layer)
        except Exception as e:  # noqa: BLE001 - a config that does not round-trip
            warnings.warn(
                f"Layer {layer.name!r} ({type(layer).__name__}) cannot be re-created from its "
                f"config ({type(e).__name__}); it is left unmasked, and the masked model shares "
                "it with the original one.",
                stacklevel=5,
            )
            return layer
        return wrap_copy(copy, layer)

    clone = _clone(model, clone_layer, wrap_copy, masks_it)
    for original, cloned in layer_pairs(model, clone):
        target = cloned.layer if isinstance(cloned, MaskedLayer) else cloned
        if target is not original:
            target.set_weights(original.get_weights())
    if not any(isinstance(l, MaskedLayer) for l in flatten_layers(clone)):
        raise ValueError(
            "The model has no prunable layer (Conv, DepthwiseConv, SeparableConv, Dense, "
            "EinsumDense, Embedding, or a layer holding them) outside `skip`."
        )
    return clone


def _weight_shapes(layer):
    return [tuple(v.shape) for v in layer.weights]


def _call_like_first_call(copy, original):
    """Calls `copy` on new symbolic tensors shaped like the arguments of `original`'s first call
    (a custom layer without its own `build` creates its sublayers' weights only when called)."""
    nodes = _keras_compat.inbound_nodes(original)
    if not nodes:
        return
    fresh = lambda t: keras.KerasTensor(t.shape, t.dtype) if isinstance(t, keras.KerasTensor) else t  # noqa: E731
    args = keras.tree.map_structure(fresh, nodes[0].arguments.args)
    kwargs = keras.tree.map_structure(fresh, nodes[0].arguments.kwargs)
    copy(*args, **kwargs)


def _built_like(copy, original):
    """`copy` built like `original` (by a symbolic call like its first, else from its build
    config), or None with a warning when its weights then differ from the original's (a config
    that does not re-create the layer)."""
    why = "its weights differ from the original's"
    try:
        if not copy.built:
            _call_like_first_call(copy, original)
        if not copy.built:
            copy.build_from_config(original.get_build_config())
    except Exception as e:  # noqa: BLE001 - any failure of a third-party build: left unmasked
        why = f"{type(e).__name__}: {e}"
    if _weight_shapes(copy) == _weight_shapes(original):
        return copy
    warnings.warn(
        f"Layer {original.name!r} ({type(original).__name__}) is left unmasked: rebuilt from its "
        f"config, {why}.",
        stacklevel=4,
    )
    return None


def _same_layers(a, b):
    """Whether two models hold layers of the same types with weights of the same shapes."""
    la, lb = flatten_layers(a), flatten_layers(b)
    return [type(l) for l in la] == [type(l) for l in lb] and [
        tuple(v.shape) for v in a.weights
    ] == [tuple(v.shape) for v in b.weights]


def _clone(model, clone_layer, wrap_copy, changes):
    """`keras.models.clone_model(model, clone_function=clone_layer)`, nested models included,
    without re-creating a layer from its own config where that is not needed.

    A nested model none of whose layers `changes` is rebuilt whole from its own config. One that
    changes is rebuilt whole too when that gives the same layers (a library's backbone, made by its
    constructor), and its new layers are then reused as they are (`wrap_copy(new, original)`), not
    rebuilt one by one from their configs, which need not round-trip (KerasHub 0.32's ViT
    patching layer). Otherwise its layers are cloned one by one like the model's own.
    """

    def clone_one(layer):
        if not isinstance(layer, keras.Model):
            return clone_layer(layer)
        if not any(changes(inner) for inner in flatten_layers(layer)):
            return walk.fresh_copy(layer)
        try:
            base = walk.fresh_copy(layer)
        except Exception:  # noqa: BLE001 - a config that does not round-trip: layer by layer
            base = None
        if base is None or not _same_layers(layer, base):
            return keras.models.clone_model(layer, clone_function=clone_one)
        originals = dict(zip(map(id, flatten_layers(base)), flatten_layers(layer)))

        def reuse(new):
            if isinstance(new, keras.Model):
                return keras.models.clone_model(new, clone_function=reuse)
            original = originals.get(id(new))  # None for an op-layer (x[:, 0])
            return new if original is None else wrap_copy(new, original)

        return keras.models.clone_model(base, clone_function=reuse)

    return keras.models.clone_model(model, clone_function=clone_one)


def masked_layers(model):
    """The `MaskedLayer`s of a model, in graph order.

    Args:
      model (keras.Model): any model.

    Returns:
      list[MaskedLayer]: empty for a model without masks.

    Examples:
      >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
      >>> len(tx.pruning.masked_layers(tx.pruning.wrap(model)))
      1
    """
    return [l for l in flatten_layers(model) if isinstance(l, MaskedLayer)]


def strip(model):
    """An ordinary Keras model: every MaskedLayer replaced by its layer with kernel * mask baked in.

    Args:
      model (keras.Model): a masked model (from `wrap`); not modified.

    Returns:
      keras.Model: a clone without masks, its pruned weights exactly zero; it saves and loads
        without this package.

    Raises:
      ValueError: for a model without masks, or one that still holds sparse-update wrappers
        (strip those first with `tx.sparse_update.strip`).

    Examples:
      >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10)])
      >>> masked = tx.pruning.prune_at_init(model, "magnitude", sparsity=0.75, verbose=0)
      >>> plain = tx.pruning.strip(masked)
      >>> int(np.count_nonzero(plain.layers[0].kernel))
      10
    """
    check_cloneable(model)
    if any(is_sparse_update_wrapper(layer) for layer in flatten_layers(model)):
        raise ValueError(
            "The model also holds sparse-update wrappers; strip those first: "
            "tx.pruning.strip(tx.sparse_update.strip(model))."
        )
    if not masked_layers(model):
        raise ValueError("The model has no pruning masks; there is nothing to strip.")

    def clone_layer(layer):
        inner = layer.layer if isinstance(layer, MaskedLayer) else layer
        try:
            return walk.fresh_copy(inner)
        except Exception as e:  # noqa: BLE001 - a config that does not round-trip
            warnings.warn(
                f"Layer {inner.name!r} ({type(inner).__name__}) cannot be re-created from its "
                f"config ({type(e).__name__}); the stripped model shares it with the masked "
                "one, its masks baked into its kernels.",
                stacklevel=4,
            )
            return inner

    clone = walk.clone(model, clone_layer, lambda layer: isinstance(layer, MaskedLayer))
    for original, cloned in layer_pairs(model, clone):
        if isinstance(original, MaskedLayer):
            baked = {
                id(v): np.asarray(v) * np.asarray(m)
                for v, m in zip(original.kernels, original.masks)
            }
            cloned.set_weights(
                [
                    baked.get(id(v), None) if id(v) in baked else np.asarray(v)
                    for v in original.layer.weights
                ]
            )
        else:
            cloned.set_weights(original.get_weights())
    return clone
