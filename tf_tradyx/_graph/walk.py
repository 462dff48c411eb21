"""Walking a Keras model's layers, shared by both methods: which models can be wrapped, nested
layers in graph order, the layer inside a tf_tradyx wrapper, and what activation ends the model."""

import inspect

import keras

from tf_tradyx import _keras_compat
from tf_tradyx._graph import kinds


def check_cloneable(model):
    """Raises a TypeError for a subclassed model (its layers cannot be cloned with wrappers)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    if _keras_compat.is_graph_model(model):
        return
    if _keras_compat.runs_its_graph(model):  # a KerasHub Task, say: its own class, Keras' graph
        raise TypeError(
            f"{type(model).__name__} is a subclass of Keras' Functional model, which tf_tradyx "
            "does not clone as it is; its graph is an ordinary one: pass "
            "keras.Model(model.inputs, model.outputs), a plain Functional model of the same "
            "layers and weights (a KerasHub Task's preprocessor stays outside: apply it to "
            "your data, e.g. dataset.map(task.preprocessor))."
        )
    raise TypeError(
        f"{type(model).__name__} is a subclassed Keras model; its layers cannot be cloned with "
        "wrappers. Build it with the Functional or Sequential API, or put the tf_tradyx wrapper "
        "layers around its layers yourself."
    )


def layer_pairs(original, clone):
    """(original layer, cloned layer) pairs, recursing into nested models."""
    for a, b in zip(original.layers, clone.layers):
        if isinstance(a, keras.Model) and isinstance(b, keras.Model):
            yield from layer_pairs(a, b)
        else:
            yield a, b


def flatten_layers(model):
    """All layers of a model, nested models expanded, in graph order."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(flatten_layers(layer))
        else:
            out.append(layer)
    return out


def fresh_copy(layer):
    """A new, unbuilt layer with the same configuration (Lambda layers keep their function).

    A config that also reports derived attributes its constructor refuses (KerasHub 0.32's ViT
    patching layer reports `num_patches`) is retried without them: they follow from the others.
    While `clone` descends into a nested model, a layer whose config cannot re-create it at all
    (KerasHub 0.32's Swin layers serialize a class) is taken from a twin of that whole model.
    """
    if isinstance(layer, keras.layers.Lambda):
        return _keras_compat.copy_lambda(layer)
    try:
        config = layer.get_config()
        try:
            return layer.__class__.from_config(config)
        except TypeError:
            accepted = _constructor_arguments(layer.__class__)
            kept = {k: v for k, v in config.items() if k in accepted}
            if len(kept) == len(config):
                raise
            return layer.__class__.from_config(kept)
    except Exception:
        twin = next((t for t in reversed(_ACTIVE_TWINS) if t.holds(layer)), None)
        if twin is None:
            raise
        return twin.layer_for(layer)


def _constructor_arguments(cls):
    """Names a layer class's constructor takes, its own and those `keras.layers.Layer` takes
    through **kwargs."""
    names = set()
    for klass in (cls, keras.layers.Layer):
        names |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"}
    return names | {"name", "trainable", "dtype", "autocast", "input_shape", "batch_size"}


def clone(model, clone_layer, changes):
    """`keras.models.clone_model(model, clone_function=clone_layer, recursive=True)`, except that
    a nested model none of whose layers `changes(layer)` is rebuilt whole from its own config.

    Why: a library's model may clone and save while some of its layers' own configs do not
    round-trip (KerasHub 0.32's ViT patching layer); rebuilding every layer from its config would
    fail there for nothing, when no layer inside needs replacing.

    Args:
      model: a Functional or Sequential model.
      clone_layer: the replacement of each (non-model) layer, as Keras' `clone_function`.
      changes: whether `clone_layer` replaces a layer by something else (a wrapper).

    Returns:
      The clone (weights to be copied by the caller, e.g. through `layer_pairs`).
    """

    def clone_one(layer):
        if isinstance(layer, keras.Model):
            if any(changes(inner) for inner in flatten_layers(layer)):
                _ACTIVE_TWINS.append(_Twin(layer))
                try:
                    return keras.models.clone_model(layer, clone_function=clone_one)
                finally:
                    _ACTIVE_TWINS.pop()
            return fresh_copy(layer)
        return clone_layer(layer)

    return keras.models.clone_model(model, clone_function=clone_one)


_ACTIVE_TWINS = []  # the nested models `clone` is descending into, innermost last


class _Twin:
    """A nested model made again whole from its own config, made only when needed: the source of
    a fresh copy of an unchanged layer whose own config does not round-trip (KerasHub 0.32's Swin
    layers serialize a class where a config belongs) while the model's does (a KerasHub backbone
    serializes its constructor arguments). The caller copies the weights, as for any clone."""

    def __init__(self, model):
        self.model, self._twin = model, None

    def holds(self, layer):
        return any(l is layer for l in self.model.layers)

    def layer_for(self, layer):
        if self._twin is None:
            self._twin = self.model.__class__.from_config(self.model.get_config())
        index = next(i for i, l in enumerate(self.model.layers) if l is layer)
        return self._twin.layers[index]


def layers_of_type(model, cls):
    """The layers of `model` (nested models expanded) that are instances of `cls`, in graph order."""
    return [layer for layer in flatten_layers(model) if isinstance(layer, cls)]


def is_sparse_update_wrapper(layer):
    """True for a tf_tradyx.sparse_update wrapper (known here by its marker, so that the pruning
    package need not import sparse_update)."""
    return bool(getattr(type(layer), "_tradyx_sparse_update", False))


def inner(layer):
    """The layer inside a tf_tradyx wrapper (sparse update or pruning mask), else the layer."""
    return getattr(layer, "layer", layer) if getattr(layer, "_tradyx_wrapper", False) else layer


def output_activation(model):
    """The name of the activation that ends a single-output model ("softmax", "sigmoid", or
    "linear" for logits), walking back through weightless pass-through layers."""
    if len(model.outputs) != 1:
        return "linear"
    layer = _keras_compat.producer(model.outputs[0])
    while layer is not None:
        if isinstance(layer, keras.layers.Softmax):
            return "softmax"
        activation = getattr(inner(layer), "activation", None)
        name = getattr(activation, "__name__", None)
        if name in ("softmax", "sigmoid"):
            return name
        if (
            layer.weights
            or not kinds.kind_of(layer).passes_output
            or isinstance(layer, keras.Model)
        ):
            return "linear"
        layer = _keras_compat.producer(layer.input)
    return "linear"
