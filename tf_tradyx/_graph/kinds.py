"""The one registry of layer kinds: what each kind of Keras layer is, for every part of tf_tradyx.

Every module that treats layers differently by kind asks this registry instead of keeping its own
table, so that the path networks, pruning masks, TraDy's channel selection, recomputation and the
search for a classifier head agree on what a layer is. A kind says:

- `path`: how PX and SynFlow's path networks treat it (`tf_tradyx.pruning.paths`):
    "weighted"    its own linear map with modified kernels (the prunable layers)
    "activation"  an elementwise activation: exact gates for the ReLU family, linearised otherwise
    "batch_norm", "layer_norm", "affine", "max_pool", "product": see `tf_tradyx.pruning.path_ops`
    "linear"      sums, concatenation, reshapes, padding, average pooling: unchanged
    "identity"    dropout, noise, stochastic depth: the identity at inference
    "arithmetic"  a `keras.ops` op-layer (x / 127.5, x - mean, or a sum of two branches)
    None          not supported (`unsupported` says why)
- `kernels`: the attributes of its prunable kernels (weighted layers and recurrent cells;
  `PrunableLayer`s declare theirs with `get_prunable_weights`). A layer of another kind that holds
  weighted sublayers (attention, recurrent layers, a KerasHub block) is maskable through them
  (`maskable_sublayers`).
- `selectable`: how TraDy selects its input channels ("conv", "depthwise", "dense", "conv1d",
  "depthwise1d", "einsum"; `tf_tradyx.sparse_update.layer_views`), or None.
- `random_in_training`: draws randomness in training: the path networks pass through it, and
  recomputation never runs it twice (a second run would draw another mask).
- `updates_state_in_training`: updates statistics when trainable (BatchNormalization): never
  recomputed while it trains.
- `backward`: what its own backward pass keeps as floats: "always" (products, LayerNormalization,
  max pooling), "unless_plain_relu" (activation layers other than a plain ReLU/ReLU6, which TraDy
  compacts to bits), or None (decided by its fused `activation`, if any).
- `passes_output`: weightless and kind-preserving between a classifier and the model output
  (logits stay logits or become probabilities): walked through to find the head.
- `after_head`: a per-channel affine layer that may follow the head (a temperature, a
  BatchNormalization of the logits): the head is the weighted layer before it.

Adding a kind is one `LayerKind` entry in `KINDS` plus its tests (CONTRIBUTING.md says how).
"""

import dataclasses
import re

import keras
from keras import layers

from tf_tradyx import _keras_compat


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """One kind of layer and what it is for each part of tf_tradyx (see the module docstring).

    Attributes:
      name: a short name for messages and tests.
      classes: Keras layer classes of this kind (`isinstance`).
      op_names: class names of `keras.ops` op-layers of this kind (operations, not layers).
      test: a predicate for kinds Keras keeps private or that are declared by a protocol.
      path, kernels, selectable, random_in_training, updates_state_in_training, backward,
      passes_output, after_head: see the module docstring.
      path_problem: for a supported `path` kind, a function of the layer returning why this
        instance is not supported (e.g. channels_first max pooling), or None.
      unsupported_why: the reason given when `path` is None.
    """

    name: str
    classes: tuple = ()
    op_names: tuple = ()
    test: object = None
    path: str = None
    kernels: tuple = ()
    selectable: str = None
    random_in_training: bool = False
    updates_state_in_training: bool = False
    backward: str = None
    passes_output: bool = False
    after_head: bool = False
    path_problem: object = None
    unsupported_why: str = "unknown layer type"

    def matches(self, op):
        """Whether `op` (a layer or an op-layer) is of this kind."""
        if self.op_names and not isinstance(op, layers.Layer):
            return type(op).__name__ in self.op_names
        if self.classes and isinstance(op, self.classes):
            return True
        return self.test is not None and bool(self.test(op))


def _declares_prunable(op):
    # `tf_tradyx.pruning.PrunableLayer` sets this marker, so this registry needs no pruning import.
    return bool(getattr(type(op), "_tradyx_prunable", False))


def _is_sparse_update_wrapper(op):
    return bool(getattr(type(op), "_tradyx_sparse_update", False))


def _channels_first_pool(op):
    return "channels_first max pooling" if op.data_format != "channels_last" else None


_NOISE = (
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianDropout,
    layers.GaussianNoise,
    layers.AlphaDropout,
)
_KERNEL = ("kernel",)
_SEPARABLE = ("depthwise_kernel", "pointwise_kernel")
_RECURRENT_WHY = (
    "a recurrent layer: its paths run through every time step, which the path networks do not "
    "unroll; SNIPPruner, IterSNIPPruner, GraSPPruner, magnitude and random prune its kernel and "
    "recurrent_kernel"
)


def _attention_problem(op):
    """Why a MultiHeadAttention is outside the path networks' treatment, or None."""
    if op.attention_axes is not None and tuple(op.attention_axes) not in ((1,), (-2,)):
        return f"attention over the axes {tuple(op.attention_axes)}"
    return None


def _holds_weighted_sublayers(op):
    return isinstance(op, layers.Layer) and bool(maskable_sublayers(op))


KINDS = (
    # Weighted layers: prunable kernels; the path networks compute their own linear map.
    LayerKind("prunable_layer", test=_declares_prunable, path="weighted"),
    LayerKind("conv2d", (layers.Conv2D,), path="weighted", kernels=_KERNEL, selectable="conv"),
    LayerKind(
        "depthwise_conv2d",
        (layers.DepthwiseConv2D,),
        path="weighted",
        kernels=_KERNEL,
        selectable="depthwise",
    ),
    LayerKind("dense", (layers.Dense,), path="weighted", kernels=_KERNEL, selectable="dense"),
    LayerKind("conv1d", (layers.Conv1D,), path="weighted", kernels=_KERNEL, selectable="conv1d"),
    LayerKind("conv3d", (layers.Conv3D,), path="weighted", kernels=_KERNEL),
    LayerKind(
        "depthwise_conv1d",
        (layers.DepthwiseConv1D,),
        path="weighted",
        kernels=_KERNEL,
        selectable="depthwise1d",
    ),
    # The projections of attention layers: TraDy and the path networks treat the dense-like ones
    # (see `einsum_contracted_axes`); every one is maskable.
    LayerKind(
        "einsum_dense",
        (layers.EinsumDense,),
        path="weighted",
        kernels=_KERNEL,
        selectable="einsum",
        path_problem=lambda op: (
            None
            if einsum_contracted_axes(op.equation) is not None
            else f"the einsum {op.equation!r} is not a dense map over trailing axes"
        ),
    ),
    # Token embeddings: maskable (magnitude, SNIP...); the path networks need real-valued inputs.
    LayerKind(
        "embedding",
        (layers.Embedding,),
        kernels=("embeddings",),
        unsupported_why=(
            "an Embedding reads token ids, and path-based scoring needs real-valued inputs "
            "(score the model after its embeddings, or use SNIP)"
        ),
    ),
    LayerKind(
        "separable_conv",
        (layers.SeparableConv1D, layers.SeparableConv2D),
        path="weighted",
        kernels=_SEPARABLE,
    ),
    # Recurrent cells hold the kernels; the recurrent layers around them are maskable through
    # them (`maskable_sublayers`) and refused by the path networks.
    LayerKind(
        "recurrent_cell",
        (layers.LSTMCell, layers.GRUCell, layers.SimpleRNNCell),
        kernels=("kernel", "recurrent_kernel"),
        unsupported_why=_RECURRENT_WHY,
    ),
    LayerKind("recurrent", (layers.RNN, layers.Bidirectional), unsupported_why=_RECURRENT_WHY),
    # Attention as one node: maskable through its four EinsumDense projections.
    LayerKind(
        "multi_head_attention",
        (layers.MultiHeadAttention,),
        path="attention",
        backward="always",
        path_problem=_attention_problem,
    ),
    # Normalization and per-channel affine layers.
    LayerKind(
        "batch_norm",
        (layers.BatchNormalization,),
        path="batch_norm",
        updates_state_in_training=True,
        after_head=True,
    ),
    LayerKind(
        "layer_norm",
        (layers.LayerNormalization,),
        path="layer_norm",
        backward="always",
        after_head=True,
    ),
    LayerKind(
        "rescaling", (layers.Rescaling, layers.Normalization), path="affine", after_head=True
    ),
    LayerKind("layer_scale", test=_keras_compat.is_layer_scale, path="affine"),
    # Activations.
    LayerKind(
        "relu",
        (layers.ReLU,),
        path="activation",
        backward="unless_plain_relu",
        passes_output=True,
    ),
    LayerKind(
        "relu_family",
        (layers.LeakyReLU, layers.ELU),
        path="activation",
        backward="unless_plain_relu",
    ),
    LayerKind(
        "prelu",
        (layers.PReLU,),
        backward="unless_plain_relu",
        unsupported_why="a trained activation slope (PReLU)",
    ),
    LayerKind("activation", (layers.Activation,), path="activation", passes_output=True),
    LayerKind("softmax", (layers.Softmax,), path="activation", passes_output=True),
    # Pooling and products.
    LayerKind(
        "max_pool",
        (layers.MaxPooling2D,),
        path="max_pool",
        backward="always",
        path_problem=_channels_first_pool,
    ),
    LayerKind("multiply", (layers.Multiply,), path="product", backward="always"),
    # The identity at inference.
    LayerKind(
        "dropout", (layers.Dropout,), path="identity", random_in_training=True, passes_output=True
    ),
    LayerKind("noise", _NOISE, path="identity", random_in_training=True),
    LayerKind(
        "stochastic_depth",
        test=_keras_compat.is_stochastic_depth,
        path="identity",
        random_in_training=True,
    ),
    # Linear and shape layers.
    LayerKind("identity", (layers.Identity,), path="linear", passes_output=True),
    LayerKind("reshape", (layers.Flatten, layers.Reshape), path="linear", passes_output=True),
    LayerKind(
        "linear",
        (
            layers.Add,
            layers.Average,
            layers.Concatenate,
            layers.Permute,
            layers.GlobalAveragePooling1D,
            layers.GlobalAveragePooling2D,
            layers.GlobalAveragePooling3D,
            layers.AveragePooling1D,
            layers.AveragePooling2D,
            layers.AveragePooling3D,
            layers.ZeroPadding1D,
            layers.ZeroPadding2D,
            layers.ZeroPadding3D,
            layers.Cropping1D,
            layers.Cropping2D,
            layers.Cropping3D,
        ),
        path="linear",
    ),
    # Op-layers Keras creates for `keras.ops` calls on symbolic tensors, by class name.
    LayerKind("ops_product", op_names=("Multiply",), path="arithmetic", backward="always"),
    LayerKind("ops_bilinear", op_names=("Matmul", "Einsum"), path="bilinear", backward="always"),
    # Masks computed from the input (comparisons, logical operations, casts): constants of the
    # real pass, which MultiHeadAttention's attention_mask takes (tf_tradyx.pruning.paths).
    LayerKind(
        "ops_mask",
        op_names=(
            "Greater",
            "GreaterEqual",
            "Less",
            "LessEqual",
            "Equal",
            "NotEqual",
            "LogicalAnd",
            "LogicalOr",
            "LogicalNot",
            "Cast",
        ),
        path="mask",
    ),
    LayerKind("ops_softmax", op_names=("Softmax",), path="activation", backward="always"),
    LayerKind(
        "ops_arithmetic",
        op_names=("Add", "Subtract", "TrueDivide", "Divide", "Negative"),
        path="arithmetic",
    ),
    LayerKind(
        "ops_linear",
        op_names=(
            "Concatenate",
            "Reshape",
            "Flatten",
            "Transpose",
            "ExpandDims",
            "Squeeze",
            "GetItem",
            "Stack",
        ),
        path="linear",
    ),
    # A TraDy wrapper is not a layer the path networks compute.
    LayerKind(
        "sparse_update_wrapper",
        test=_is_sparse_update_wrapper,
        unsupported_why="a TraDy wrapper (score the model before sp.wrap, or sp.strip it first)",
    ),
    # Last: any other layer that holds weighted sublayers (a KerasHub TransformerEncoder, a ViT
    # block, a user's block): maskable through them, not a graph the path networks can read.
    LayerKind(
        "custom_with_weighted_sublayers",
        test=_holds_weighted_sublayers,
        unsupported_why=(
            "a custom layer whose own call the path networks cannot read (its weighted "
            "sublayers are masked, and SNIPPruner, IterSNIPPruner, GraSPPruner, magnitude and "
            "random prune them)"
        ),
    ),
)

UNKNOWN = LayerKind("unknown")


def see_through(op):
    """The layer inside a pruning mask wrapper (its kind is the wrapped layer's), else `op`."""
    wrapper = getattr(type(op), "_tradyx_wrapper", False) and not _is_sparse_update_wrapper(op)
    return op.layer if wrapper else op


def kind_of(op):
    """The `LayerKind` of a layer or op-layer (a pruning mask wrapper has its layer's kind).

    Args:
      op: a Keras layer, or the op-layer of a `keras.ops` call in a Functional graph.

    Returns:
      The first matching entry of `KINDS`, or `UNKNOWN`.
    """
    op = see_through(op)
    for kind in KINDS:
        if kind.matches(op):
            return kind
    return UNKNOWN


def _own_kernels(layer):
    """Whether `layer` itself holds prunable kernels (a weighted kind or a `PrunableLayer`); the
    last kind, which looks into sublayers, is not asked (it asks this)."""
    kind = next((k for k in KINDS[:-1] if k.matches(layer)), UNKNOWN)
    return kind.name == "prunable_layer" or bool(kind.kernels)


def _sublayer_children(layer):
    """The layers held in `layer`'s attributes (directly, or in a list, tuple or dict attribute),
    in attribute order, Keras' own list of every tracked sublayer left out."""
    for name, value in vars(layer).items():
        if name == "_layers" or name.startswith("__"):
            continue
        items = value.values() if isinstance(value, dict) else value
        if isinstance(value, layers.Layer):
            yield value
        elif isinstance(value, (list, tuple, dict)):
            yield from (v for v in items if isinstance(v, layers.Layer))


def maskable_sublayers(layer):
    """The sublayers inside `layer` that hold prunable kernels, found recursively through its
    attributes, each once, in attribute order: a `MultiHeadAttention`'s four projections, a
    recurrent layer's cell, a KerasHub block's attention projections and feed-forward layers.
    Empty for a layer that holds kernels itself, a model (its graph is walked instead), and a
    tf_tradyx wrapper.

    Example:

    >>> import numpy as np
    >>> mha = layers.MultiHeadAttention(num_heads=2, key_dim=4)
    >>> [s.name for s in maskable_sublayers(mha)]  # the projections exist once it is built
    []
    >>> _ = mha(np.zeros((1, 3, 8)), np.zeros((1, 3, 8)))
    >>> [s.name for s in maskable_sublayers(mha)]
    ['query', 'key', 'value', 'attention_output']
    """
    return [sub for _, sub in maskable_sublayer_paths(layer)]


def maskable_sublayer_paths(layer):
    """(names, sublayer) for each of `maskable_sublayers(layer)`: `names` are the names of the
    layers from `layer` (excluded) down to the sublayer (included), which tell apart the
    projections of different blocks (every MultiHeadAttention names its own "query")."""
    if isinstance(layer, keras.Model):
        return []
    if getattr(type(layer), "_tradyx_wrapper", False) or _own_kernels(layer):
        return []
    out, seen = [], {id(layer)}

    def visit(parent, prefix):
        for child in _sublayer_children(parent):
            if id(child) in seen or isinstance(child, keras.Model):
                continue
            seen.add(id(child))
            names = (*prefix, child.name)
            if _own_kernels(child):
                out.append((names, child))
            elif not getattr(type(child), "_tradyx_wrapper", False):
                visit(child, names)

    visit(layer, ())
    return out


def is_maskable(op):
    """Whether `op` has prunable kernels: built-in weighted layers (Conv, Dense, EinsumDense,
    Embedding, recurrent cells...), `PrunableLayer`s, and layers holding such sublayers
    (`maskable_sublayers`)."""
    if not isinstance(op, layers.Layer):
        return False
    return _own_kernels(op) or bool(maskable_sublayers(op))


def prunable_kernel_names(layer):
    """The attribute names of a built-in weighted layer's prunable kernels ("kernel", or the
    depthwise and pointwise kernels of a separable conv); () for other layers. Looked up by class
    alone: a `PrunableLayer` that subclasses a built-in layer declares its own kernels."""
    return next((k.kernels for k in KINDS if k.classes and isinstance(layer, k.classes)), ())


def selectable_kind(layer):
    """How TraDy selects the input channels of `layer`: "conv", "depthwise", "dense", "conv1d",
    "depthwise1d" or "einsum"; None when it cannot. Looked up by class alone (a user's subclass of
    Dense is a Dense). Convolutions must be channels_last (a channel is then the last axis of the
    input); an EinsumDense must be dense-like (`einsum_contracted_axes`)."""
    kind = next(
        (k.selectable for k in KINDS if k.selectable and isinstance(layer, k.classes)), None
    )
    if kind in ("conv", "depthwise", "conv1d", "depthwise1d"):
        if layer.data_format != "channels_last":
            return None
    if kind == "einsum" and einsum_contracted_axes(layer.equation) is None:
        return None
    return kind


_EQUATION = re.compile(r"^(\.\.\.)?([a-z]+),([a-z]+)->(\.\.\.)?([a-z]+)$")


def einsum_contracted_axes(equation):
    """How many trailing input axes a dense-like einsum equation contracts, or None.

    Dense-like: the contracted axes are the input's last and the kernel's first, in the same
    order, no axis is shared by input and kernel in the output, and the output is the free input
    axes then the free kernel axes. The projections of `MultiHeadAttention` are
    ("abc,cde->abde": 1, "abcd,cde->abe": 2).

    Example:

    >>> einsum_contracted_axes("abcd,cde->abe")
    2
    >>> einsum_contracted_axes("abc,dc->abd") is None  # the kernel's contracted axis is last
    True
    """
    m = _EQUATION.match(equation.replace(" ", ""))
    if not m:
        return None
    ellipsis_in, lhs, kernel, ellipsis_out, out = m.groups()
    if bool(ellipsis_in) != bool(ellipsis_out):
        return None
    contracted = "".join(c for c in lhs if c in kernel and c not in out)
    n = len(contracted)
    if not n or lhs[-n:] != contracted or kernel[:n] != contracted:
        return None
    if out != lhs[:-n] + kernel[n:]:
        return None
    return n


def path_support(op):
    """(path kind, None) when the path networks treat `op`, else (None, why not)."""
    kind = kind_of(op)
    if kind.path is None:
        return None, kind.unsupported_why
    problem = kind.path_problem(see_through(op)) if kind.path_problem is not None else None
    if problem is not None:
        return None, problem
    return kind.path, None


def runs_once(op):
    """Whether a step must run exactly once per forward pass: randomness in training, or state it
    updates while trainable. Recomputation gives such a step a segment of its own."""
    kind = kind_of(op)
    return kind.random_in_training or (kind.updates_state_in_training and op.trainable)


def names_of(predicate):
    """Readable class names of the layer classes whose kind satisfies `predicate` (for messages)."""
    return [cls.__name__ for kind in KINDS if predicate(kind) for cls in kind.classes]
