"""`SparseSublayers`: a custom layer whose selectable sublayers train on sampled channels.

Why a wrapper around the parent rather than around each sublayer: a transformer block's projections
are not nodes of the model's graph but attributes its own `call` calls, so they can only be
replaced inside the block; and a `.keras` file rebuilds the block from its config, which knows
nothing of that replacement. This wrapper takes the block's place in the graph and records which
sublayers (by attribute path, `tf_tradyx._graph.sublayers`) hold a `ChannelSparseUpdate`; it puts
the wrappers in as soon as the block is built, after `wrap` and after `keras.models.load_model`
alike, so the file's weights find the same structure they were saved from.

A user's own layer opts in by declaring its selectable sublayers (`SparseUpdatableLayer`).
"""

import abc

import keras
from keras import layers

from tf_tradyx import _keras_compat
from tf_tradyx._graph import sublayers
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate


class SparseUpdatableLayer(metaclass=abc.ABCMeta):
    """The opt-in protocol of a custom layer whose sublayers TraDy may train channel by channel.

    TraDy finds the projections inside `keras.layers.MultiHeadAttention` and KerasHub's layers by
    itself. A layer of your own declares them: by returning a sublayer, the layer promises that its
    `call` calls it once on its input and reads its kernel nowhere else (a kernel also used
    directly, as tied embeddings do, would get dense gradients on unselected channels). Inheriting
    from this class is optional: a `get_sparse_update_sublayers` method is what counts.

    Examples:
      >>> class Block(keras.layers.Layer, tx.sparse_update.SparseUpdatableLayer):
      ...     def __init__(self, **kwargs):
      ...         super().__init__(**kwargs)
      ...         self.up = keras.layers.Dense(8, activation="gelu", name="up")
      ...         self.down = keras.layers.Dense(4, name="down")
      ...     def call(self, x):
      ...         return x + self.down(self.up(x))
      ...     def get_sparse_update_sublayers(self):
      ...         return [self.up, self.down]
      >>> inputs = keras.Input((6, 4))
      >>> x = Block(name="block")(inputs)
      >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x[:, 0]))
      >>> tx.sparse_update.cost_table(model).names
      ['block/up', 'block/down']
    """

    @abc.abstractmethod
    def get_sparse_update_sublayers(self):
        """The selectable sublayers (Dense, EinsumDense, Conv...) that TraDy may train sparsely."""


def _spec(value):
    if isinstance(value, keras.KerasTensor):
        return {"__tensor__": [list(value.shape), str(value.dtype)]}
    return value if isinstance(value, (int, float, str, bool, type(None))) else None


def _placeholders(call):
    """(args, kwargs) of symbolic tensors from recorded specs (`SparseSublayers.get_build_config`)."""

    def make(value):
        if isinstance(value, dict) and "__tensor__" in value:
            shape, dtype = value["__tensor__"]
            return keras.Input(batch_shape=tuple(shape), dtype=dtype)
        if isinstance(value, dict):
            return {k: make(v) for k, v in value.items()}
        if isinstance(value, list):
            return [make(v) for v in value]
        return value

    args, kwargs = call
    return make(args), make(kwargs)


def _wrapper_config(wrapper):
    config = wrapper.get_config()
    config.pop("layer", None)
    return config


@keras.saving.register_keras_serializable(package="tf_tradyx")
class SparseSublayers(layers.Wrapper):
    """A custom layer (a transformer block...) with `ChannelSparseUpdate`s at some sublayer paths.

    `wrap` puts one in place of each custom layer that holds a selected sublayer; you rarely make
    one yourself. Its `wrappers` are the `ChannelSparseUpdate`s inside, named (`selection_name`)
    by their path from this layer, e.g. "transformer_layer_0/self_attention_layer/query".

    Args:
      layer: the custom layer (not a wrapper, not a model).
      sublayers: attribute paths of the sublayers to wrap, each a list of steps ("attr" or
        "attr[i]"), as `tf_tradyx._graph.sublayers.selectable_sublayers` gives them.
      wrappers: one `ChannelSparseUpdate` config (without "layer") per path; None: defaults.
      **kwargs: `keras.layers.Wrapper` arguments.

    Raises:
      ValueError: for a path that does not lead to a selectable sublayer.

    Examples:
      >>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
      >>> x = np.ones((1, 5, 8), "float32")
      >>> _ = mha(x, x)  # builds the projections
      >>> block = tx.sparse_update.SparseSublayers(
      ...     mha, [["_query_dense"], ["_value_dense"]])
      >>> [w.selection_name for w in block.wrappers]
      ['mha/query', 'mha/value']
      >>> block(x, x).shape
      TensorShape([1, 5, 8])
    """

    _tradyx_wrapper = True
    _tradyx_sparse_sublayers = True

    def __init__(self, layer, sublayers=(), wrappers=None, **kwargs):
        if isinstance(layer, keras.Model) or getattr(type(layer), "_tradyx_wrapper", False):
            raise ValueError(
                f"SparseSublayers wraps a custom layer, not a model or wrapper ({layer.name!r})."
            )
        kwargs.setdefault("name", f"sparse_sublayers_{layer.name}")
        super().__init__(layer, **kwargs)
        self.sublayer_paths = [tuple(p) for p in sublayers]
        if not self.sublayer_paths:
            raise ValueError(f"SparseSublayers({layer.name!r}) got no sublayer path.")
        configs = [{} for _ in self.sublayer_paths] if wrappers is None else list(wrappers)
        if len(configs) != len(self.sublayer_paths):
            raise ValueError(
                f"SparseSublayers({layer.name!r}): {len(configs)} wrapper configs for "
                f"{len(self.sublayer_paths)} paths."
            )
        _keras_compat.set_untracked(self, "_pending", configs)
        _keras_compat.set_untracked(self, "wrappers", [])
        self._install()

    def _install(self, strict=False):
        """Puts a `ChannelSparseUpdate` at every path (once the layer is built: its sublayers
        exist only then)."""
        if self.wrappers or not self._ready(strict):
            return
        made = []
        for path, config in zip(self.sublayer_paths, self._pending):
            sub = sublayers.resolve(self.layer, path)
            if isinstance(sub, ChannelSparseUpdate):
                made.append(sub)
                continue
            config = dict(config)
            name = config.setdefault("selection_name", sublayers.qualified_name(self.layer, path))
            # Unique in the model (every attention layer has its own "query"): the traced graph's
            # name scopes then tell the wrappers apart too (`memory`).
            config.setdefault("name", "sparse_update_" + name.replace("/", "_"))
            wrapper = ChannelSparseUpdate(sub, **config)
            wrapper.build(None)
            sublayers.replace(self.layer, path, wrapper)
            made.append(wrapper)
        self.wrappers[:] = made
        self.built = True

    def _ready(self, strict=False):
        """Whether every sublayer to wrap exists and is built (some layers make or build their
        sublayers only in their first call); `strict`: a path that leads nowhere raises."""
        try:
            found = [sublayers.resolve(self.layer, p) for p in self.sublayer_paths]
        except ValueError:
            if strict:
                raise
            return False
        return all(s.built for s in found)

    def build(self, input_shape=None):
        # The inner layer builds with its own arguments (several inputs, a mask) on its first
        # call, or from the recorded call when loaded; the wrappers go in once it is built.
        self._install()
        self.built = True

    def get_build_config(self):
        """The specs of the first call's tensors: a layer that makes its sublayers in its first
        call (or builds them lazily) is built again by a symbolic call on them when loaded."""
        args, kwargs = _keras_compat.first_call_arguments(self)
        return {"call": keras.tree.map_structure(_spec, [list(args), kwargs])}

    def build_from_config(self, config):
        call = (config or {}).get("call")
        if call is not None and not self.wrappers:
            args, kwargs = _placeholders(call)
            self.layer(*args, **kwargs)
        self.build()

    def call(self, *args, **kwargs):
        outputs = self.layer(*args, **kwargs)
        if not self.wrappers:  # after a first call every sublayer must exist
            self._install(strict=True)
        return outputs

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def plain_weights(self):
        """The inner layer's weights without the wrappers' own (selection) variables: the order
        and shapes of the same layer without wrappers."""
        own = {id(v) for w in self.wrappers for v in _keras_compat.layer_own_variables(w)}
        return [v for v in self.layer.weights if id(v) not in own]

    def set_plain_weights(self, values):
        """Sets the inner layer's weights from those of the same layer without wrappers."""
        weights = self.plain_weights()
        if len(values) != len(weights):
            raise ValueError(
                f"{self.name}: {len(values)} weights given for {len(weights)} in the layer."
            )
        for variable, value in zip(weights, values):
            variable.assign(value)

    def get_config(self):
        config = super().get_config()
        config["sublayers"] = [list(p) for p in self.sublayer_paths]
        config["wrappers"] = [_wrapper_config(w) for w in self.wrappers] or self._pending
        return config
