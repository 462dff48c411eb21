"""A model's layer graph as a flat list of typed steps, and the functions that run them.

Why our own interpreter: Keras runs a Functional model as one call, but both methods need to run
it one operation at a time: PX and SynFlow compute a modified version of every layer (unit or
squared weights, recorded gates), TraDy counts how often each layer is called and recomputes
segments of the graph in the backward pass, Velocity watches the outputs of chosen layers. All of
them read the same steps, made here once, in an order where every step comes after the steps it
reads from (Keras' own `Function._run_through_graph` order). Nested models are inlined: their
boundaries become `AliasStep`s, so a backbone inside a model is walked like any other layer.

Tensors are named by the `id` of their symbolic `KerasTensor`; `run_step` computes a step from a
dict of them.
"""

import dataclasses

import keras

from tf_tradyx import _keras_compat


@dataclasses.dataclass(frozen=True, eq=False)
class OpStep:
    """Calls `op` on the arguments of its graph `node`.

    Attributes:
      op: the Keras operation (a layer, or the op-layer of a `keras.ops` call).
      node: the graph node of this call (its arguments and symbolic outputs).
      inputs: ids of the symbolic tensors the call reads.
      outputs: ids of the symbolic tensors it makes.
    """

    op: object
    node: object
    inputs: tuple
    outputs: tuple


@dataclasses.dataclass(frozen=True, eq=False)
class AliasStep:
    """A nested model's boundary: the tensor `dst` is the tensor `src` under another name.

    Attributes:
      dst: id of the symbolic tensor on the far side of the boundary.
      src: id of the symbolic tensor it equals.
      tensor: the symbolic tensor named by `dst`.
    """

    dst: int
    src: int
    tensor: object


def graph_steps(model):
    """The steps of a Functional or Sequential model, nested models inlined.

    Args:
      model: a built Functional or Sequential model.

    Returns:
      A list of `OpStep` and `AliasStep`, every step after the steps it reads from.
    """
    steps = []

    def visit(model):
        for node in _keras_compat.nodes_in_call_order(_keras_compat.functional_graph(model)):
            op = node.operation
            if _keras_compat.runs_its_graph(op):  # nested models, KerasHub backbones too
                inner = _keras_compat.functional_graph(op)
                for kt, outer in zip(inner.inputs, node.input_tensors):
                    steps.append(AliasStep(id(kt), id(outer), kt))
                visit(op)
                for outer, kt in zip(node.outputs, inner.outputs):
                    steps.append(AliasStep(id(outer), id(kt), outer))
                continue
            ins = tuple(id(t) for t in node.input_tensors)
            steps.append(OpStep(op, node, ins, tuple(id(t) for t in node.outputs)))

    visit(model)
    return steps


def op_steps(steps):
    """The `OpStep`s of `steps`, in order."""
    return [step for step in steps if isinstance(step, OpStep)]


def reads_writes(step):
    """(ids read, ids written) by one step."""
    if isinstance(step, AliasStep):
        return (step.src,), (step.dst,)
    return step.inputs, step.outputs


def run_step(step, tensors, training=None, call_fn=None):
    """Runs one step on `tensors` ({id: tensor}, updated in place).

    Args:
      step: an `OpStep` or `AliasStep`.
      tensors: the values computed so far, by symbolic tensor id.
      training: passed explicitly to layers whose call takes `training` (a recomputed step runs
        outside the model's call, where Keras' call context would supply it); None leaves it.
      call_fn: `call_fn(op, *args, **kwargs)` computes the operation in its place (the path
        networks compute modified layers so); None calls the operation itself.
    """
    if isinstance(step, AliasStep):
        tensors[step.dst] = tensors[step.src]
        return
    args, kwargs = step.node.arguments.fill_in(tensors)
    if training is not None and _keras_compat.call_has_training_arg(step.op):
        kwargs["training"] = training
    values = call_fn(step.op, *args, **kwargs) if call_fn is not None else step.op(*args, **kwargs)
    for kt_id, value in zip(step.outputs, keras.tree.flatten(values)):
        tensors[kt_id] = value


def run_graph(model, steps, inputs, call_fn=None, training=None):
    """The model's (first) output computed step by step.

    Args:
      model: the model `steps` were made from.
      steps: `graph_steps(model)`.
      inputs: the value of the model's input; for several inputs, a list in the order of
        `model.inputs`.
      call_fn, training: as in `run_step`.

    Returns:
      The value of the model's output.
    """
    values = keras.tree.flatten(inputs) if len(model.inputs) > 1 else [inputs]
    tensors = {id(t): v for t, v in zip(model.inputs, values)}
    for step in steps:
        run_step(step, tensors, training, call_fn)
    return tensors[id(model.outputs[0])]


def output_operation(model, steps):
    """The operation (inside nested models too) that makes the model's first output, or None."""
    made_by, source = {}, id(model.outputs[0])
    for step in steps:
        if isinstance(step, AliasStep):
            made_by[step.dst] = step
        else:
            made_by.update({t: step for t in step.outputs})
    while isinstance(made_by.get(source), AliasStep):
        source = made_by[source].src
    step = made_by.get(source)
    return step.op if step is not None else None


def call_counts(steps):
    """{id(operation): how many times the graph calls it}.

    Unlike a layer's node list, which also holds the nodes of graphs Keras built and dropped (a
    Sequential model is rebuilt on load and on clone), this counts only the calls in this model.
    """
    counts = {}
    for step in op_steps(steps):
        counts[id(step.op)] = counts.get(id(step.op), 0) + 1
    return counts
