"""What updating one input channel costs: the memory units and FLOPs of docs/METHODS.md 1.1.

Why input channels: the weight derivative of input channel c needs only the slice c of the layer's
input, so dropping a channel saves both its weight gradient and its stored activation map. Per
sample (batch 1, the model's own input size):

    units(l, c) = C'_l * D_l^2 + H_l * W_l        (weights of the channel + its input map)
    flops(l, c) = D_l^2 * C'_l * H'_l * W'_l      (multiply-adds of its weight derivative)

C' is the output-channel count an input channel reaches (the depth multiplier for a depthwise conv,
filters / groups for a grouped conv), H * W the map that
enters the layer before an explicit ZeroPadding2D that only serves it. Dense layers are 1x1 convs
(H * W = 1 for a flat input). Biases and the classifier head are not counted.
"""

import dataclasses
import math
import re

import keras
import numpy as np
from keras import layers

from tf_tradyx import _batches, _keras_compat
from tf_tradyx._graph import kinds, steps, sublayers, walk
from tf_tradyx.sparse_update import layer_views

BYTES_PER_UNIT = 4  # float32


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """The per-channel costs of one selectable layer.

    A row of `CostTable`. Memory is counted in units (one float32 element): updating an input
    channel of a layer keeps its kernel slice's weight derivative (`weight_units` = C' D^2) and
    its input map (`in_hw` = H W), `units_per_channel` in all (docs/METHODS.md 1.2).

    Attributes:
      name (str): the layer's name.
      kind (str): "conv", "depthwise" or "dense".
      in_channels (int): input channels.
      out_channels (int): C' per input channel: filters / groups; the multiplier for depthwise.
      kernel_size (tuple): the kernel's spatial size (() for dense).
      in_hw (int): H * W of the map entering the layer (before its own padding).
      out_hw (int): H' * W'.
      alive (tuple | None): unpruned weights per input channel (pruned models), else None.
      groups (int): a grouped conv's groups.

    Examples:
      >>> row = tx.sparse_update.LayerCost(
      ...     name="conv", kind="conv", in_channels=8, out_channels=16,
      ...     kernel_size=(3, 3), in_hw=36, out_hw=16)
      >>> row.weight_units, row.units_per_channel, row.flops_per_channel, row.full_units
      (144, 180, 2304, 1440)
    """

    name: str
    kind: str  # "conv", "depthwise" or "dense"
    in_channels: int
    out_channels: int  # C' per input channel: filters / groups; the multiplier for depthwise
    kernel_size: tuple
    in_hw: int  # H * W of the map entering the layer (before its own padding)
    out_hw: int  # H' * W'
    alive: tuple = None  # unpruned weights per input channel (pruned models), else None
    groups: int = 1  # a grouped conv's groups (an output neuron reads in_channels / groups inputs)

    @property
    def weight_units(self):
        """C' * D^2: kernel elements per input channel."""
        return self.out_channels * int(np.prod(self.kernel_size))

    @property
    def units_per_channel(self):
        """space(l, c) = C' D^2 + H W."""
        return self.weight_units + self.in_hw

    @property
    def flops_per_channel(self):
        """time(l, c) = D^2 C' H' W'."""
        return self.weight_units * self.out_hw

    @property
    def full_units(self):
        return self.units_per_channel * self.in_channels

    @property
    def neurons(self):
        """Output neurons (Velocity's unit); a depthwise conv's output c is its input channel c."""
        return self.in_channels if self.kind == "depthwise" else self.out_channels

    @property
    def neuron_weight_units(self):
        """Kernel elements of one output neuron: D^2 times its inputs (1 for a depthwise conv)."""
        d2 = int(np.prod(self.kernel_size))
        return d2 if self.kind == "depthwise" else d2 * self.in_channels

    def channel_units(self, count_pruned=True):
        """Units of each input channel; with count_pruned=False only unpruned weights count."""
        if count_pruned or self.alive is None:
            return np.full(self.in_channels, self.units_per_channel, np.int64)
        return np.asarray(self.alive, np.int64) + self.in_hw

    @property
    def full_flops(self):
        return self.flops_per_channel * self.in_channels

    def as_dict(self):
        d = dataclasses.asdict(self)
        d["alive"] = None if self.alive is None else list(self.alive)
        d.update(
            kernel_size=list(self.kernel_size),
            weight_units=self.weight_units,
            units_per_channel=self.units_per_channel,
            flops_per_channel=self.flops_per_channel,
        )
        return d


class CostTable:
    """Per-layer costs of a model, in graph order; indexable by layer name.

    What `cost_table` returns: one `LayerCost` per selectable layer (the classifier excluded),
    the totals of full fine-tuning, and `units(selection)` for what a selection spends.

    Args:
      rows (list[LayerCost]): the layers' costs, in graph order.
      classifier (str | None): the classifier head's name (not counted), for the printout.

    Raises:
      KeyError: when indexed by a name that is not a selectable layer, naming the selectable ones.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> sp = tx.sparse_update
      >>> costs = sp.cost_table(model)
      >>> costs.names, len(costs), "classifier" in costs
      (['conv1', 'conv2'], 2, False)
      >>> costs.units({"conv2": [0, 3]}), costs.units({"conv1": 1})  # indices, or a count
      (360, 136)
      >>> print(costs)  # doctest: +NORMALIZE_WHITESPACE
      layer                       kind           C  C_out     HW  units/ch    flops/ch
      conv1                       conv           3      8     64       136       2,592
      conv2                       conv           8     16     36       180       2,304
      full fine-tuning: 1,848 units over 2 layers (classifier 'classifier' not counted)
    """

    def __init__(self, rows, classifier=None, layers=None):
        self.rows = list(rows)
        self.classifier = classifier
        self._by_name = {r.name: r for r in self.rows}
        # {row name: the layer it costs} (a sublayer of a custom layer too); set by `cost_table`.
        self.layers = dict(layers or {})

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"{name!r} is not a selectable layer of this model; selectable: {self.names}"
            ) from None

    def __contains__(self, name):
        return name in self._by_name

    @property
    def names(self):
        return [r.name for r in self.rows]

    @property
    def full_units(self):
        """Units of full fine-tuning: every selectable weight plus every input map."""
        return sum(r.full_units for r in self.rows)

    @property
    def full_flops(self):
        return sum(r.full_flops for r in self.rows)

    @property
    def total_weight_units(self):
        return sum(r.weight_units * r.in_channels for r in self.rows)

    @property
    def total_activation_units(self):
        return sum(r.in_hw * r.in_channels for r in self.rows)

    def units(self, selection, count_pruned=True):
        """Units of a selection {layer name: channel indices} (or {name: count} when dense)."""
        total = 0
        for n, c in selection.items():
            if np.isscalar(c):
                total += self[n].units_per_channel * int(c)
            else:
                total += int(self[n].channel_units(count_pruned)[np.asarray(c, np.int64)].sum())
        return total

    def min_channel_units(self, names=None, count_pruned=True):
        names = self.names if names is None else names
        return min(int(self[n].channel_units(count_pruned).min()) for n in names)

    def as_dicts(self):
        return [r.as_dict() for r in self.rows]

    def __repr__(self):
        width = max([28] + [len(r.name) + 2 for r in self.rows])  # path names of sublayers
        head = f"{'layer':<{width}}{'kind':<10}{'C':>6}{'C_out':>7}{'HW':>7}{'units/ch':>10}{'flops/ch':>12}"
        lines = [head] + [
            f"{r.name:<{width}}{r.kind:<10}{r.in_channels:>6}{r.out_channels:>7}{r.in_hw:>7}"
            f"{r.units_per_channel:>10,}{r.flops_per_channel:>12,}"
            for r in self.rows
        ]
        lines.append(
            f"full fine-tuning: {self.full_units:,} units over {len(self.rows)} layers "
            f"(classifier {self.classifier!r} not counted)"
        )
        return "\n".join(lines)


def channel_norms(kernel_like, kind, in_channels=None):
    """|| k[:, c] ||_2 for each input channel c of a kernel or kernel gradient (numpy or tensor).

    Args:
      kernel_like: a kernel (or its gradient) of a selectable layer, in the layer's own shape.
      kind (str): the `LayerCost.kind` ("dense", "conv", "depthwise").
      in_channels (int | None): a "dense" layer's channel count, needed when its kernel has more
        than two axes (an EinsumDense contracting several input axes: its channels are their
        entries).

    Returns:
      np.ndarray: one float64 norm per input channel.

    Examples:
      >>> kernel = np.zeros((3, 3, 2, 4))
      >>> kernel[:, :, 1, :] = 1.0  # input channel 1: 36 ones
      >>> tx.sparse_update.channel_norms(kernel, "conv")
      array([0., 6.])
      >>> tx.sparse_update.channel_norms(np.full((3, 4), 0.5), "dense")
      array([1., 1., 1.])
    """
    k = np.asarray(kernel_like, np.float64)
    if kind == "dense":
        return np.sqrt((k.reshape(in_channels or k.shape[0], -1) ** 2).sum(axis=1))
    if k.ndim == 3:  # a 1-D convolution: height 1
        k = k[None]
    return np.sqrt((k**2).sum(axis=(0, 1, 3)))


def _count(channels):
    return int(channels) if np.isscalar(channels) else len(channels)


def _alive(layer):
    """Unpruned weights per input channel of a masked layer, else None."""
    mask = getattr(layer, "kernel_mask", None)
    if mask is None and getattr(layer, "masks", None):
        mask = layer.masks[0]
    if mask is None:
        return None
    m = np.asarray(mask) != 0
    axes = tuple(i for i in range(m.ndim) if i != m.ndim - 2)
    return tuple(int(v) for v in m.sum(axis=axes))


def is_selectable(layer):
    """Whether TraDy can select the input channels of `layer` (a wrapper's inner layer counts):
    the layer-kind registry's selectable kinds, Conv2D (grouped and dilated included),
    DepthwiseConv2D (dilated included) and Dense, channels_last."""
    return kinds.selectable_kind(walk.inner(layer)) is not None


def find_classifier(model):
    """The layer that produces the model's output: walking back through weightless layers and
    per-channel affine layers (Rescaling, BatchNormalization) to the last layer with a kernel."""
    if len(model.outputs) != 1:
        raise ValueError(
            "cost_table needs a single-output model; pass classifier= to name the head."
        )
    layer = _keras_compat.producer(model.outputs[0])
    while layer is not None and (
        kinds.kind_of(layer).after_head
        or (not layer.weights and kinds.kind_of(layer).passes_output)
    ):
        layer = _keras_compat.producer(layer.input)
    return walk.inner(layer).name if layer is not None and layer.weights else None


def _input_hw(layer):
    """H * W of the map entering `layer`, before a ZeroPadding2D that serves only this layer."""
    tensor = layer.input
    source = _keras_compat.producer(tensor)
    if isinstance(source, layers.ZeroPadding2D) and len(_keras_compat.outbound_nodes(source)) == 1:
        tensor = source.input
    shape = tuple(tensor.shape)
    return _static(shape[1:-1], layer)


def _static(dims, layer):
    if any(d is None for d in dims):
        raise ValueError(
            f"Layer {layer.name!r} sees an input of unknown size {dims}; costs are per "
            "sample at a fixed input size. Build the model on keras.Input((H, W, C))."
        )
    return int(math.prod(dims)) if dims else 1


def layer_cost(layer):
    """The `LayerCost` of one built, selectable layer inside a Functional model."""
    inner = walk.inner(layer)
    if not is_selectable(inner):
        raise ValueError(
            f"Layer {inner.name!r} ({type(inner).__name__}) is not selectable: supported "
            f"are {', '.join(kinds.names_of(lambda k: k.selectable))}, channels_last."
        )
    view = layer_views.view_of(inner)
    in_hw = None if view.contracted else _input_hw(layer)
    return _cost(
        inner.name, inner, tuple(layer.input.shape), tuple(layer.output.shape), in_hw, _alive(layer)
    )


def _cost(name, inner, input_shape, output_shape, in_hw=None, alive=None):
    """The `LayerCost` of `inner` called on `input_shape` (batch axis first) making
    `output_shape`; `in_hw` overrides the input map (a padding layer that serves only it)."""
    view = layer_views.view_of(inner)
    kind = view.kind
    if view.contracted:  # EinsumDense: positions are the input's free axes
        in_hw = _static(tuple(input_shape)[1 : -view.contracted], inner)
        out_hw = in_hw
    else:
        if in_hw is None:
            in_hw = _static(tuple(input_shape)[1:-1], inner)
        out_hw = _static(tuple(output_shape)[1:-1], inner)
    if kind == "depthwise":
        c_out = int(inner.depth_multiplier)
    elif kind == "conv":  # an input channel reaches only its group's outputs
        c_out = int(inner.filters) // int(inner.groups)
    else:
        c_out = view.kernel_shape[1]
    kernel = tuple(int(k) for k in inner.kernel_size) if kind != "dense" else (1, 1)
    return LayerCost(
        name=name,
        kind=kind,
        in_channels=view.in_channels,
        out_channels=c_out,
        kernel_size=kernel,
        in_hw=in_hw,
        out_hw=out_hw,
        alive=alive,
        groups=int(getattr(inner, "groups", 1)) if kind == "conv" else 1,
    )


def sublayer_parents(model):
    """{id(graph layer): custom layer} of the layers whose sublayers may be selectable: a
    `SparseSublayers`' inner layer, or a layer TraDy enters (`tf_tradyx._graph.sublayers`) that
    `wrap` can make again: from its config, or, inside a nested model (a KerasHub backbone), from
    a copy of that whole model (`walk.clone`)."""
    nested = {
        id(l) for m in model.layers if isinstance(m, keras.Model) for l in walk.flatten_layers(m)
    }
    out = {}
    for layer in walk.flatten_layers(model):
        if getattr(type(layer), "_tradyx_sparse_sublayers", False):
            out[id(layer)] = layer.layer
        elif sublayers.enters(layer) and (id(layer) in nested or sublayers.round_trips(layer)):
            out[id(layer)] = layer
    return out


def probe_calls(model, targets):
    """{id(layer): [(input shape, output shape), ...]} for each layer in `targets`, one entry per
    call in one forward pass on zeros (batch 1, inference): the shapes a sublayer sees are known
    only from its parent's own `call`, and the count tells a sublayer called once from a shared one.
    """
    records = {id(t): [] for t in targets}

    def hook(target):
        call = type(target).call

        def recorded(*args, **kwargs):
            out = call(target, *args, **kwargs)
            records[id(target)].append((tuple(args[0].shape), tuple(out.shape)))
            return out

        return recorded

    for t in targets:
        _keras_compat.replace_call(t, hook(t))
    try:
        zeros = []
        for t in model.inputs:
            _static(tuple(t.shape)[1:], model)
            zeros.append(np.zeros((1, *tuple(t.shape)[1:]), t.dtype))
        model(_batches.pack_inputs(model, zeros), training=False)
    finally:
        for t in targets:
            _keras_compat.restore_call(t)
    return records


def _sublayer_rows(model, parents):
    """(rows, {name: layer}) of the selectable sublayers of `parents` called once per forward."""
    found = [(p, path, sub) for p in parents for path, sub in sublayers.selectable_sublayers(p)]
    if not found:
        return {}, {}
    records = probe_calls(model, [sub for _, _, sub in found])
    rows, objects = {}, {}
    for parent, path, sub in found:
        calls = records[id(sub)]
        if len(calls) != 1:  # shared across blocks (ALBERT) or never called: not selectable
            continue
        name = sublayers.qualified_name(parent, path)
        inner = walk.inner(sub)
        rows.setdefault(id(parent), []).append(_cost(name, inner, *calls[0]))
        objects[name] = inner
    return rows, objects


def cost_table(model, classifier="auto"):
    """Per-layer costs of every selectable layer of `model` except the classifier.

    A channel's units are its weights plus its input map, C' D^2 + H W (docs/METHODS.md 1.1).

    Args:
      model (keras.Model): a built Functional or Sequential model with a fixed input size (a
        wrapped model too).
      classifier (str | None): the head's layer name, "auto" (the layer producing the output),
        or None.

    Returns:
      CostTable: one `LayerCost` per selectable layer, in graph order, indexable by name;
        `full_units` is the cost of full fine-tuning.

    Raises:
      ValueError: for a model that is not built or has no fixed input size.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, name="conv1"),
      ...     keras.layers.Conv2D(16, 3, name="conv2"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="classifier"),
      ... ])
      >>> costs = tx.sparse_update.cost_table(model)
      >>> costs["conv2"].units_per_channel  # 16 * 3 * 3 weights + a 6 x 6 input map
      180
      >>> costs.full_units  # 3 channels of conv1 at 8 * 9 + 64, 8 of conv2 at 180
      1848
    """
    walk.check_cloneable(model)
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError("cost_table needs a built model with an Input (keras.Input((H, W, C))).")
    if classifier == "auto":
        classifier = find_classifier(model)
    names = {walk.inner(l).name for l in walk.flatten_layers(model)}
    if classifier is not None and classifier not in names:
        raise ValueError(f"classifier {classifier!r} is not a layer of the model.")
    rows, objects = [], {}
    # How often the model's graph calls each layer (nested graphs inlined, KerasHub backbones
    # included). A layer it never calls sits inside a nested model with a call of its own (a
    # subclassed model): not a node of the graph, so not selectable here.
    calls_of = steps.call_counts(steps.graph_steps(model))
    called = [l for l in walk.flatten_layers(model) if calls_of.get(id(l), 0)]
    # Selectable layers inside custom layers (attention projections, feed-forward layers of
    # transformer blocks), in the place of their parent.
    every = sublayer_parents(model)
    parents = {id(l): every[id(l)] for l in called if id(l) in every}
    inside, objects = _sublayer_rows(model, [parents[k] for k in parents])
    for layer in called:
        inner = walk.inner(layer)
        calls = calls_of[id(layer)]
        if id(layer) in parents and calls == 1:
            rows.extend(inside.get(id(parents[id(layer)]), []))
            continue
        if inner.name == classifier or not is_selectable(inner):
            continue
        if calls != 1:
            raise ValueError(
                f"Layer {inner.name!r} is called {calls} times; shared layers are not supported."
            )
        rows.append(layer_cost(layer))
        objects[inner.name] = inner
    if not rows:
        raise ValueError(
            "The model has no selectable layer ("
            f"{', '.join(kinds.names_of(lambda k: k.selectable))}) besides the classifier."
        )
    return CostTable(rows, classifier=classifier, layers=objects)


_BYTES = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(b|kb|kib|mb|mib|units?)?\s*$", re.I)
_FACTORS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def units_from_bytes(nbytes, bytes_per_element=BYTES_PER_UNIT):
    """Memory units that fit in `nbytes` (one unit = one stored element).

    Args:
      nbytes (int | float): a positive size in bytes.
      bytes_per_element (int): bytes of one unit (4: float32).

    Returns:
      int: the whole units that fit.

    Raises:
      ValueError: for a size or element size that is not positive.

    Examples:
      >>> tx.sparse_update.units_from_bytes(256 * 1024)
      65536
    """
    number = isinstance(nbytes, (int, float, np.integer, np.floating)) and nbytes is not True
    if not number or nbytes is False or not np.isfinite(nbytes) or nbytes <= 0:
        raise ValueError(f"nbytes must be a positive number, got {nbytes!r}.")
    if bytes_per_element <= 0:
        raise ValueError(f"bytes_per_element must be positive, got {bytes_per_element!r}.")
    return int(nbytes // bytes_per_element)


def parse_budget(value, bytes_per_element=BYTES_PER_UNIT):
    """A budget in units from an int/float (units) or a string: "27946", "109KiB", "111784B", "2MB".

    Args:
      value (int | float | str): whole units, or a size with a suffix (B, KB, KiB, MB, MiB, ...).
      bytes_per_element (int): bytes of one unit (4: float32).

    Returns:
      int: the budget in units.

    Raises:
      ValueError: for a fraction of a unit, a non-finite number or an unreadable string.

    Examples:
      >>> tx.sparse_update.parse_budget("109KiB")  # 111,616 bytes of float32
      27904
      >>> tx.sparse_update.parse_budget(27_946)
      27946
    """
    if isinstance(value, bool):
        raise ValueError(f"A budget must be a number of units or a size string, got {value!r}.")
    if isinstance(value, (int, np.integer)):  # any size: Python ints do not overflow
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value) or value != int(value):
            raise ValueError(f"A budget in units must be a whole number, got {value!r}.")
        return int(value)
    if isinstance(value, str):
        m = _BYTES.match(value)
        if m:
            number, unit = float(m.group(1)), (m.group(2) or "units").lower()
            if unit.startswith("unit"):
                return parse_budget(number)
            return units_from_bytes(number * _FACTORS[unit], bytes_per_element)
    raise ValueError(
        f"Cannot read the budget {value!r}: give units (27946) or bytes with a suffix "
        "(111784B, 109KiB, 0.1MB)."
    )
