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
from tf_tradyx._graph import kinds, walk
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
        if inner.name in candidates:
            seen = True
        if seen and _keeps_float_maps(inner, inner.name in candidates):
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
    """A step that must run exactly once per forward pass (randomness, or state it updates)."""
    return isinstance(step, graph_steps.OpStep) and kinds.runs_once(step.op)


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
                    recompute=not alone[j],
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


def install(model, max_steps=MAX_STEPS):
    """Makes `model` (a wrapped model) run its forward pass in recomputed segments."""
    forward = SegmentedForward(model, max_steps)
    _keras_compat.replace_call(model, forward)
    return forward


def installed(model):
    """The model's `SegmentedForward`, or None."""
    call = _keras_compat.replaced_call(model)
    return call if isinstance(call, SegmentedForward) else None
