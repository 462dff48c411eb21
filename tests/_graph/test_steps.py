"""The graph interpreter: typed steps in call order, nested models inlined, calls counted per
graph, and a step-by-step run that computes the model itself."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_tradyx import _keras_compat
from tf_tradyx._graph import steps as graph_steps


def _functional():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu", name="d1")(inputs)
    h = keras.layers.Dense(3, name="d2")(h)
    return keras.Model(inputs, keras.layers.Add(name="add")([h, inputs[:, :3]]))


def _sequential():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="s1"), keras.layers.Dense(2, name="s2")]
    )


@pytest.mark.parametrize("build", [_functional, _sequential])
def test_run_graph_visits_every_operation_after_its_inputs_and_computes_the_model(build):
    keras.utils.set_random_seed(0)
    model = build()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    visited = []

    def call(op, *args, **kwargs):
        visited.append(op.name)
        return op(*args, **kwargs)

    steps = graph_steps.graph_steps(model)
    y = graph_steps.run_graph(model, steps, tf.constant(x), call)
    # Every step reads only tensors made by earlier steps or the model input.
    made = {id(model.inputs[0])}
    for step in steps:
        reads, writes = graph_steps.reads_writes(step)
        assert set(reads) <= made
        made |= set(writes)
    assert all(isinstance(s, graph_steps.OpStep) for s in steps)
    assert len(visited) == len(steps)
    # The same arithmetic as Keras' own call: identical up to float32 round-off of one Dense.
    np.testing.assert_allclose(np.asarray(y), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    assert graph_steps.output_operation(model, steps) is steps[-1].op


def test_nested_models_are_inlined_with_alias_steps_and_calls_are_counted_per_graph():
    keras.utils.set_random_seed(0)
    inner = _sequential()
    inp = keras.Input((4,))
    outer = keras.Model(inp, keras.layers.Dense(2, name="top")(inner(inp)))
    steps = graph_steps.graph_steps(outer)
    ops = [s.op.name for s in graph_steps.op_steps(steps)]
    assert ops == ["s1", "s2", "top"]
    aliases = [s for s in steps if isinstance(s, graph_steps.AliasStep)]
    assert len(aliases) == 2  # the nested model's input and output boundaries
    x = np.ones((2, 4), np.float32)
    tensors = {id(outer.inputs[0]): tf.constant(x)}
    for step in steps:
        graph_steps.run_step(step, tensors)
    np.testing.assert_allclose(tensors[id(outer.outputs[0])], outer(x), rtol=1e-6)
    assert graph_steps.output_operation(outer, steps).name == "top"
    # A layer built into a dropped graph first: its node list has two calls, this graph one.
    layer = keras.layers.Dense(2, name="d")
    first = keras.Input((3,))
    keras.Model(first, layer(first))
    second = keras.Input((3,))
    model = keras.Model(second, layer(second))
    assert len(_keras_compat.inbound_nodes(layer)) == 2
    assert graph_steps.call_counts(graph_steps.graph_steps(model))[id(layer)] == 1


def test_a_shared_layer_is_counted_once_per_call():
    inputs = keras.Input((3,))
    shared = keras.layers.Dense(3, name="shared")
    model = keras.Model(inputs, shared(shared(inputs)))
    counts = graph_steps.call_counts(graph_steps.graph_steps(model))
    assert counts == {id(shared): 2}


def test_run_step_passes_training_only_to_layers_that_take_it():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    h = keras.layers.Dropout(0.5, name="drop")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten(name="flat")(h))
    steps = graph_steps.graph_steps(model)
    x = tf.ones((64, 4))
    seen = {}

    def call(op, *args, **kwargs):
        seen[op.name] = kwargs.get("training")
        return op(*args, **kwargs)

    graph_steps.run_graph(model, steps, x, call, training=True)
    assert seen == {"drop": True, "flat": None}  # Flatten's call takes no training argument
    # In training, dropout zeroes about half the inputs; at inference none.
    tensors = {id(model.inputs[0]): x}
    graph_steps.run_step(steps[0], tensors, training=True)
    dropped = np.mean(np.asarray(tensors[steps[0].outputs[0]]) == 0)
    assert 0.3 < dropped < 0.7
    graph_steps.run_step(steps[0], tensors, training=False)
    np.testing.assert_array_equal(np.asarray(tensors[steps[0].outputs[0]]), np.asarray(x))


def test_steps_are_immutable_records():
    steps = graph_steps.graph_steps(_functional())
    with pytest.raises(AttributeError):
        steps[0].op = None


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
