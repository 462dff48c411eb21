"""Selectable layers inside custom layers: where TraDy reaches below a model's graph.

A transformer's weights mostly sit in sublayers: `keras.layers.MultiHeadAttention` holds its four
`EinsumDense` projections, a KerasHub `TransformerEncoder` holds an attention layer and two feed-forward
`Dense` layers, a KerasHub `ViTEncoder` holds a list of blocks that hold them. Those sublayers are not
nodes of any Functional graph: their parent's own Python `call` calls them. Here they are found by
walking the parent's attributes, named by their path from the graph layer that holds them
("transformer_layer_0/self_attention_layer/query"), and replaced in place by a wrapper.

Which custom layers are entered:

- `keras.layers.MultiHeadAttention` and its subclasses (each projection runs once per call);
- the layers of KerasHub (`keras_hub`), whose blocks call each projection once per call;
- a user's own layer that declares its selectable sublayers with a method
  `get_sparse_update_sublayers()` returning them (the opt-in protocol,
  `tx.sparse_update.SparseUpdatableLayer`): by declaring a sublayer the layer promises that its
  `call` calls it on its input and uses its kernel nowhere else.

Other layers are never entered: a sublayer whose kernel the parent also reads directly (tied
embeddings) would get dense gradients on unselected channels. Sublayers called more than once per
forward pass (ALBERT's shared block) are found by `costs`' probe call and left out.
"""

import re

import keras

from tf_tradyx import _keras_compat
from tf_tradyx._graph import kinds, walk

PROTOCOL = "get_sparse_update_sublayers"
_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")
_SKIP = frozenset({"_layers"})  # Keras' own list of every tracked sublayer


def enters(layer):
    """Whether TraDy looks for selectable layers inside `layer` (see the module docstring)."""
    if isinstance(layer, keras.Model) or getattr(type(layer), "_tradyx_wrapper", False):
        return False
    if callable(getattr(layer, PROTOCOL, None)):
        return True
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return True
    return type(layer).__module__.startswith("keras_hub.")


def children(layer):
    """(path step, sublayer) for every sublayer held in an attribute or a list attribute."""
    for name, value in vars(layer).items():
        if name in _SKIP or name.startswith("__"):
            continue
        if isinstance(value, keras.layers.Layer):
            yield name, value
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, keras.layers.Layer):
                    yield f"{name}[{i}]", item


def _find(layer, target, seen):
    """The path from `layer` to the sublayer object `target`, or None."""
    for step, child in children(layer):
        if child is target:
            return (step,)
        if id(child) in seen:
            continue
        seen.add(id(child))
        rest = _find(child, target, seen)
        if rest is not None:
            return (step, *rest)
    return None


def selectable_sublayers(layer):
    """(path, sublayer) for each selectable layer inside `layer`, in attribute order.

    A path is a tuple of steps, each an attribute name or "name[i]" for a list attribute. Layers
    that `enters` are searched recursively; a layer with the opt-in protocol gives its own list.

    Raises:
      ValueError: when a layer's `get_sparse_update_sublayers()` names a layer that is not one
        of its sublayers or not selectable.
    """
    out, seen = [], {id(layer)}
    _collect(layer, (), out, seen)
    return out


def _collect(layer, prefix, out, seen):
    declared = getattr(layer, PROTOCOL, None)
    if callable(declared):
        for sub in declared():
            path = _find(layer, sub, set())
            if path is None:
                raise ValueError(
                    f"{layer.name}.{PROTOCOL}() returned {getattr(sub, 'name', sub)!r}, which is "
                    "not held in one of its attributes; return the sublayers its call() calls."
                )
            if kinds.selectable_kind(walk.inner(sub)) is None:  # wrapped ones too
                raise ValueError(
                    f"{layer.name}.{PROTOCOL}() returned {sub.name!r} "
                    f"({type(sub).__name__}), which TraDy cannot select; selectable are "
                    f"{', '.join(kinds.names_of(lambda k: k.selectable))}."
                )
            if id(sub) not in seen:
                seen.add(id(sub))
                out.append(((*prefix, *path), sub))
        return
    for step, child in children(layer):
        if id(child) in seen:
            continue
        seen.add(id(child))
        if kinds.selectable_kind(walk.inner(child)) is not None:  # wrapped ones too
            out.append(((*prefix, step), child))
        elif enters(child):
            _collect(child, (*prefix, step), out, seen)


def _parse(step):
    m = _STEP.match(step)
    if not m:
        raise ValueError(f"Not a sublayer path step: {step!r}.")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def resolve(layer, path):
    """The sublayer at `path` inside `layer`.

    Raises:
      ValueError: when the path does not lead to a layer.
    """
    node = layer
    for step in path:
        attribute, index = _parse(step)
        value = getattr(node, attribute, None)
        if index is not None:
            value = (
                value[index] if isinstance(value, (list, tuple)) and index < len(value) else None
            )
        if not isinstance(value, keras.layers.Layer):
            raise ValueError(
                f"{layer.name!r} has no sublayer at {'.'.join(path)} (stopped at {step!r})."
            )
        node = value
    return node


def replace(layer, path, new):
    """Puts `new` at `path` inside `layer` (tracked where the old sublayer was); returns the old."""
    parent = resolve(layer, path[:-1])
    attribute, index = _parse(path[-1])
    return _keras_compat.swap_sublayer(parent, attribute, index, new)


def qualified_name(layer, path):
    """ "<layer>/<sublayer>/.../<selectable layer>": the names along the path, which tell the
    projections of different blocks apart (every MultiHeadAttention names its own "query")."""
    names, node = [layer.name], layer
    for i in range(len(path)):
        node = resolve(layer, path[: i + 1])
        names.append(walk.inner(node).name)
    return "/".join(names)


def round_trips(layer):
    """Whether `layer` can be made again from its config (`from_config(get_config())`): a layer
    whose sublayers are wrapped is rebuilt that way by `wrap` and by `keras.models.load_model`.
    Some library layers report derived attributes their constructor refuses (KerasHub 0.32's ViT
    patching layer); their sublayers stay out of reach."""
    try:
        type(layer).from_config(layer.get_config())
    except Exception:  # noqa: BLE001 - any failure means "cannot be rebuilt"
        return False
    return True
