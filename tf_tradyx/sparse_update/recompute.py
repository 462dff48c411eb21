"""Recomputed frozen segments: the backward pass keeps only the tensors between segments.

ReLU networks need little for their backward pass once wrapped layers keep their sampled channels
and ReLUs keep bit masks (see `memory`). Other families do not: a frozen swish, GELU or hard-swish
keeps its float input for its own derivative, a squeeze-excite product both factors, a
LayerNormalization its input, a max pooling its input and output, a conv with a fused ReLU its float
output. Here the model's graph (nested models inlined) is cut into segments of consecutive steps,
and each runs under `tf.recompute_grad`: its forward pass keeps nothing, and the backward pass runs
it again from its inputs, one segment at a time. Cuts are chosen where the fewest bytes cross
(e.g. the narrow residual stream between inverted-residual blocks) by dynamic programming, with at
most `max_steps` steps per segment, which bounds both the recomputation and the backward pass's
transient memory. The price is one more forward pass per training step (measured:
benchmarks/memory.py, README).

Layers with randomness or state updated in training (dropout and noise layers, a BatchNormalization
that trains) are never recomputed: a second run would draw another mask or update statistics twice.
The forward values are the model's own; gradients equal the plain path's to float round-off.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tf_tradyx import _keras_compat
from tf_tradyx._graph import kinds, sublayers, walk
from tf_tradyx._graph import steps as graph_steps
from tf_tradyx.sparse_update import compact_relu

MAX_STEPS = 24
# Activations whose backward pass needs no float map (a softmax is only ever the model's output).
_FREE = (keras.activations.linear, keras.activations.softmax)


@dataclasses.dataclass
class Segment:
    steps: list
    inputs: list  # ids read from earlier segments
    outputs: list  # ids read by later segments (or model outputs)
    recompute: bool


def wanted(model, candidates):
    """Whether frozen-segment recomputation pays off: after the earliest candidate layer (nothing
    before it has a backward pass), the model has layers whose backward pass keeps float maps
    (smooth activations, products, LayerNormalization, max pooling, a frozen layer's fused ReLU).
    ReLU networks keep bit masks there, and their wide cut tensors would cost more than they save."""
    candidates, seen = set(candidates), False
    for step in graph_steps.op_steps(graph_steps.graph_steps(model)):
        inner = walk.inner(step.op)
        holds = any(c.startswith(inner.name + "/") for c in candidates)  # its sublayers
        if inner.name in candidates or holds:
            seen = True
        if seen and (holds or _keeps_float_maps(inner, inner.name in candidates)):
            return True
    return False


def _keeps_float_maps(layer, wrapped):
    """Whether a layer's own backward pass keeps a float map in a wrapped model: anything but a
    plain ReLU/ReLU6 (made a `CompactReLU` by `wrap`, or compacted inside a wrapped layer) or a
    linear activation; and products, LayerNormalization and max pooling."""
    kind = kinds.kind_of(layer)
    if kind.backward == "always":  # products (keras.ops ones too), LayerNorm, max pooling
        return True
    if not isinstance(layer, layers.Layer):
        return False  # other keras.ops op-layers
    if compact_relu.replaceable_relu(layer) is not False:
        return False
    if kind.backward == "unless_plain_relu":
        return True  # ReLU with a slope or threshold, LeakyReLU, ELU, PReLU
    fn = getattr(layer, "activation", None)
    if fn is None or fn in _FREE:
        return False
    return not (wrapped and compact_relu.compact_activation(fn) is not None)


def _alone(step):
    """A step that must run exactly once per forward pass (randomness, or state it updates), or
    a custom layer with wrapped sublayers, which recomputes its own blocks (`BlockRecompute`)."""
    return isinstance(step, graph_steps.OpStep) and (kinds.runs_once(step.op) or _holds(step.op))


def _holds(op):
    return bool(getattr(type(op), "_tradyx_sparse_sublayers", False))


def _nbytes(kt):
    dims = [d for d in kt.shape[1:]]
    if any(d is None for d in dims):
        return 0
    return int(np.prod(dims, dtype=np.int64)) * np.dtype(kt.dtype).itemsize


class SegmentedForward:
    """The model's forward pass, segment by segment; callable as the model's `call`."""

    def __init__(self, model, max_steps=MAX_STEPS):
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}.")
        if len(model.outputs) != 1:
            raise ValueError("Segment recomputation supports models with one output.")
        self.steps = graph_steps.graph_steps(model)
        self.inputs = [id(t) for t in model.inputs]
        self.output = id(model.outputs[0])
        self.segments = self._segments(max_steps)

    def _reads_writes(self):
        for step in self.steps:
            yield graph_steps.reads_writes(step)

    def _crossing(self):
        """bytes[k]: per-example bytes of the tensors made before step k and read at or after it."""
        n = len(self.steps)
        sizes, made, last = {}, {i: 0 for i in self.inputs}, {self.output: n}
        for step in self.steps:
            if isinstance(step, graph_steps.AliasStep):
                sizes.setdefault(step.dst, 0)  # the same tensor under another name: counted once
            else:
                for t in step.node.input_tensors + step.node.outputs:
                    sizes.setdefault(id(t), _nbytes(t))
        for k, (reads, writes) in enumerate(self._reads_writes()):
            for t in reads:
                last[t] = max(last.get(t, 0), k)
            for t in writes:
                made[t] = k + 1
        diff = np.zeros(n + 2, np.int64)
        for t, start in made.items():
            end = last.get(t, start - 1)
            if end >= start:
                diff[start] += sizes.get(t, 0)
                diff[end + 1] -= sizes.get(t, 0)
        return np.cumsum(diff)[: n + 1]

    def _segments(self, max_steps):
        n = len(self.steps)
        crossing = self._crossing()
        alone = [_alone(s) for s in self.steps]
        best = np.full(n + 1, np.inf)
        best[0], back = 0.0, [0] * (n + 1)
        for k in range(1, n + 1):
            for j in range(max(0, k - max_steps), k):
                inside = alone[j:k]
                if any(inside) and (k - j > 1):
                    continue  # a step that runs once sits in a segment of its own
                cost = best[j] + (crossing[k] if k < n else 0)
                if cost < best[k]:
                    best[k], back[k] = cost, j
        cuts, k = [], n
        while k > 0:
            cuts.append((back[k], k))
            k = back[k]
        segments = []
        rw = list(self._reads_writes())
        for j, k in reversed(cuts):
            made = {t for _, writes in rw[j:k] for t in writes}
            reads = [t for reads, _ in rw[j:k] for t in reads if t not in made]
            later = {t for reads, _ in rw[k:] for t in reads} | {self.output}
            segments.append(
                Segment(
                    steps=self.steps[j:k],
                    inputs=list(dict.fromkeys(reads)),
                    outputs=[
                        t for t in dict.fromkeys(w for _, ws in rw[j:k] for w in ws) if t in later
                    ],
                    recompute=not alone[j]
                    and not (
                        isinstance(self.steps[j], graph_steps.OpStep) and _holds(self.steps[j].op)
                    ),
                )
            )
        return segments

    def __call__(self, inputs, training=None, mask=None):
        tensors = dict(zip(self.inputs, keras.tree.flatten(inputs)))
        for seg in self.segments:
            if not (training and seg.recompute):
                for step in seg.steps:
                    graph_steps.run_step(step, tensors, training)
                continue

            def run(*values, _seg=seg):
                local = dict(zip(_seg.inputs, values))
                for step in _seg.steps:
                    graph_steps.run_step(step, local, training)
                return [local[t] for t in _seg.outputs]

            outputs = tf.recompute_grad(run)(*[tensors[t] for t in seg.inputs])
            tensors.update(zip(seg.outputs, outputs))
        return tensors[self.output]


def blocks(layer):
    """The layers inside a custom layer with wrapped sublayers that are recomputed one by one:
    the repeated blocks (a list of layers of one class, as a ViT encoder or a Swin stage holds
    them) that contain wrappers, searched down to the innermost repetition; else the layer itself
    (a BERT `TransformerEncoder` is one block)."""
    inside = [
        child
        for _, child in sublayers.children(layer)
        if not walk.is_sparse_update_wrapper(child) and _has_wrapper(child)
    ]
    classes = [type(child) for child in inside]
    repeated = [child for child in inside if classes.count(type(child)) > 1]
    if not repeated:
        return [layer]
    return [block for child in repeated for block in blocks(child)]


def _block_keeps_float_maps(block):
    """Whether anything inside a block keeps a float map for its backward pass (LayerNorm, GELU,
    softmax, dropout, a product...): only then does recomputing it from its input pay."""
    return any(
        _keeps_float_maps(s, walk.is_sparse_update_wrapper(s))
        or isinstance(s, (layers.Dropout, layers.MultiHeadAttention))
        for s in _keras_compat.all_sublayers(block)
    )


def _has_wrapper(layer):
    return any(walk.is_sparse_update_wrapper(s) for s in _keras_compat.all_sublayers(layer))


class BlockRecompute:
    """A block's `call` under `tf.recompute_grad` in training: its forward pass keeps only its
    inputs, and the backward pass runs it again. Its dropout layers take their seeds drawn once
    per forward pass, outside the recomputation, so the second run draws the same masks; a block
    with another random layer (noise, stochastic depth) is not recomputed."""

    def __init__(self, block):
        self.block = block
        self.call = block.call  # the bound method of the class (no replacement yet)
        inside = _keras_compat.all_sublayers(block)
        self.dropouts = [s for s in inside if isinstance(s, layers.Dropout) and s.rate > 0]
        self.replayable = not any(
            kinds.runs_once(s) for s in inside if not isinstance(s, layers.Dropout)
        )

    def __call__(self, *args, **kwargs):
        if not (self.replayable and _keras_compat.training_in_call_context()):
            return self.call(*args, **kwargs)
        leaves = tf.nest.flatten((args, kwargs))
        where = [i for i, v in enumerate(leaves) if tf.is_tensor(v)]
        seeds = [d.seed_generator.next() for d in self.dropouts]

        def run(*values):
            filled = list(leaves)
            for i, v in zip(where, values[: len(where)]):
                filled[i] = v
            a, k = tf.nest.pack_sequence_as((args, kwargs), filled)
            for d, seed in zip(self.dropouts, values[len(where) :]):
                _keras_compat.replace_call(d, _seeded_dropout(d, seed))
            try:
                # The backward pass runs this again outside the model's call: in training mode.
                with _keras_compat.call_context(self.block, training=True):
                    return self.call(*a, **k)
            finally:
                for d in self.dropouts:
                    _keras_compat.restore_call(d)

        return tf.recompute_grad(run)(*[leaves[i] for i in where], *seeds)


def _seeded_dropout(layer, seed):
    def call(inputs, training=False):
        if training and layer.rate > 0:
            return _keras_compat.dropout_with_seed(layer, inputs, seed)
        return inputs

    return call


def install(model, max_steps=MAX_STEPS):
    """Makes `model` (a wrapped model) run its forward pass in recomputed segments, and the
    blocks of its custom layers with wrapped sublayers one by one (`blocks`)."""
    forward = SegmentedForward(model, max_steps)
    _keras_compat.replace_call(model, forward)
    for layer in walk.flatten_layers(model):
        if _holds(layer):
            for block in blocks(layer.layer):
                if not _block_keeps_float_maps(block):
                    continue  # a patch embedding: its input is all it would keep
                if not isinstance(_keras_compat.replaced_call(block), BlockRecompute):
                    _keras_compat.replace_call(block, BlockRecompute(block))
    return forward


def installed(model):
    """The model's `SegmentedForward`, or None."""
    call = _keras_compat.replaced_call(model)
    return call if isinstance(call, SegmentedForward) else None
