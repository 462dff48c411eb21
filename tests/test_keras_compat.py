"""Every private Keras API tf_tradyx uses (tf_tradyx/_keras_compat.py), exercised directly.

When a Keras release changes one of them, the failure is here, with the Keras version and the
internal's name in the message, instead of somewhere inside a pruning round or a resample.
"""

import hashlib
import inspect
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer  # what fix_multi_worker_fit wraps

from tf_tradyx import _keras_compat as compat

VERSION = f"Keras {keras.__version__} changed an internal tf_tradyx uses"


def _functional():
    inp = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name="hidden")(inp)
    out = keras.layers.Dense(2, name="out")(keras.layers.ReLU(name="act")(hidden))
    return keras.Model(inp, out)


def _sequential():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="d1"), keras.layers.Dense(2, name="d2")]
    )


def test_graph_models_are_told_apart_from_subclassed_ones():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    assert compat.is_graph_model(_functional()), VERSION
    assert compat.is_graph_model(_sequential()), VERSION
    assert not compat.is_graph_model(Sub()), VERSION


@pytest.mark.parametrize("build", [_functional, _sequential])
def test_nodes_in_call_order_lists_every_call_after_its_inputs(build):
    model = build()
    nodes = list(compat.nodes_in_call_order(compat.functional_graph(model)))
    names = [node.operation.name for node in nodes]
    assert names == [l.name for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    assert all(not node.is_input for node in nodes), VERSION


def test_call_context_args_name_training_for_layers_that_take_it():
    assert "training" in compat.call_context_args(keras.layers.Dropout(0.1)), VERSION
    inputs = keras.Input((2,))
    y = keras.ops.add(inputs, 1.0)
    op = compat.producer(y)
    assert "training" not in compat.call_context_args(op), VERSION


def test_print_msg_prints_to_stdout_or_to_absl_logging(capsys):
    compat.print_msg("hello from tf_tradyx")
    assert "hello from tf_tradyx" in capsys.readouterr().out, VERSION
    keras.config.disable_interactive_logging()
    try:
        compat.print_msg("quiet")
        assert "quiet" not in capsys.readouterr().out, VERSION
    finally:
        keras.config.enable_interactive_logging()


def test_replace_call_changes_the_forward_of_one_instance_only():
    model, other = _functional(), _functional()
    x = np.ones((2, 4), np.float32)
    before = np.asarray(model(x))
    compat.replace_call(model, lambda inputs, training=None, mask=None: inputs[:, :2] * 0 + 7.0)
    np.testing.assert_array_equal(np.asarray(model(x)), np.full((2, 2), 7.0))
    assert not np.allclose(np.asarray(other(x)), 7.0), VERSION
    compat.restore_call(model)
    np.testing.assert_array_equal(np.asarray(model(x)), before)


def test_convnext_private_layers_are_recognised():
    model = keras.applications.ConvNeXtTiny(
        input_shape=(32, 32, 3), weights=None, include_top=False
    )
    ops = [node.operation for node in compat.nodes_in_call_order(model)]
    scale = next(op for op in ops if compat.is_layer_scale(op))
    # (ConvNeXtTiny builds stochastic depth only with a drop-path rate; the class sits beside.)
    depth = sys.modules[type(scale).__module__].StochasticDepth(0.1)
    assert compat.is_stochastic_depth(depth), VERSION
    assert not compat.is_layer_scale(keras.layers.Dense(2)), VERSION
    assert not compat.is_stochastic_depth(keras.layers.Dropout(0.1)), VERSION


def test_graph_of_an_unbuilt_sequential_is_none():
    assert compat.functional_graph(keras.Sequential([keras.layers.Dense(2)])) is None, VERSION


def test_producer_nodes_and_parents():
    model = _functional()
    hidden, act, out = (model.get_layer(n) for n in ("hidden", "act", "out"))
    assert compat.producer(model.outputs[0]) is out, VERSION
    assert compat.producer(np.zeros(2)) is None
    assert len(compat.inbound_nodes(act)) == 1, VERSION
    assert len(compat.outbound_nodes(hidden)) == 1, VERSION
    assert compat.parent_layers(out) == [act], VERSION


def test_own_variables_are_in_save_order():
    class TwoVars(keras.layers.Layer):
        def build(self, shape):
            self.a = self.add_weight(name="a", shape=(2,), trainable=True)
            self.b = self.add_weight(name="b", shape=(3,), trainable=False)

        def call(self, x):
            return x

    layer = TwoVars()
    layer.build((1,))
    store = {}
    layer.save_own_variables(store)
    own = compat.layer_own_variables(layer)
    assert [v.name for v in own] == ["a", "b"], VERSION
    assert [tuple(store[str(i)].shape) for i in range(len(own))] == [(2,), (3,)], VERSION


def test_call_training_argument_is_detected():
    assert compat.call_has_training_arg(keras.layers.Dropout(0.5)), VERSION

    class NoTraining(keras.layers.Layer):
        def call(self, x):
            return x

    assert not compat.call_has_training_arg(NoTraining()), VERSION


def test_set_untracked_does_not_add_a_weight():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    before = len(layer.weights)
    compat.set_untracked(layer, "_tmp", keras.Variable(np.zeros(2)))
    assert len(layer.weights) == before, VERSION


@pytest.mark.parametrize(
    "make,slots",
    [
        (lambda: keras.optimizers.SGD(0.1, momentum=0.9), 1),
        (lambda: keras.optimizers.Adam(0.1), 2),
        (lambda: keras.optimizers.RMSprop(0.1), 1),
    ],
)
def test_optimizer_slots_index_and_weight_decay(make, slots):
    opt = make()
    a, b = keras.Variable(np.ones((3, 2)), name="a"), keras.Variable(np.ones(4), name="b")
    opt.build([a, b])
    assert compat.optimizer_tracked_variables(opt) == [a, b], VERSION
    assert compat.optimizer_variable_index(opt, b) == 1, VERSION
    assert compat.optimizer_variable_index(opt, keras.Variable(np.ones(1))) is None, VERSION
    lists = compat.optimizer_slot_lists(opt)
    assert len(lists) == slots, (VERSION, [k for k, _ in lists])
    for _, per_var in lists:
        assert tuple(per_var[0].shape) == (3, 2) and tuple(per_var[1].shape) == (4,), VERSION
    decayed = keras.optimizers.AdamW(0.1, weight_decay=0.1)
    decayed.exclude_from_weight_decay(var_list=[a])
    decayed.build([a, b])
    assert not compat.optimizer_decays(decayed, a) and compat.optimizer_decays(decayed, b), VERSION


def test_a_missing_internal_names_itself_and_the_keras_version():
    class NoInternals:
        pass

    with pytest.raises(compat.KerasInternalsChanged, match=r"_get_variable_index.*Keras 3"):
        compat.optimizer_variable_index(NoInternals(), None)
    with pytest.raises(compat.KerasInternalsChanged, match="tested with Keras"):
        compat.optimizer_tracked_variables(NoInternals())


def test_a_lambda_layer_is_copied_with_its_function():
    layer = keras.layers.Lambda(lambda t, k: t * k, output_shape=(4,), arguments={"k": 3.0})
    copy = compat.copy_lambda(layer)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(np.asarray(copy(x)), 3.0 * x)
    assert copy.name == layer.name and copy is not layer, VERSION


def test_xla_tracing_is_told_apart_and_the_train_step_can_be_rebuilt():
    seen = []

    def probe(x):
        seen.append(compat.tracing_for_xla())
        return x + 1

    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    tf.function(probe)(tf.constant(1.0))
    probe(tf.constant(1.0))
    assert seen == [True, False, False]

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])
    model.compile("sgd", "mse", jit_compile=True)
    assert compat.compiled_with_xla(model)
    model.train_on_batch(np.ones((2, 2)), np.ones((2, 1)))
    first = model.train_function
    compat.rebuild_train_function(model)
    assert model.train_function is not first
    model.compile("sgd", "mse", jit_compile=False)
    assert not compat.compiled_with_xla(model)
    compat.rebuild_train_function(model)  # no train function yet: nothing to do
    assert model.train_function is None


def test_own_variable_key_is_where_save_own_variables_stores_the_variable():
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    store = {}
    bn.save_own_variables(store)
    for var in bn.weights:
        key = compat.own_variable_key(bn, var)
        np.testing.assert_array_equal(store[key], np.asarray(var))
        assert store[key].shape == var.shape, VERSION
    with pytest.raises(ValueError, match="not one of"):
        compat.own_variable_key(bn, keras.Variable(np.zeros(3)))


def test_the_training_call_entry_and_the_applying_optimizer_are_found():
    seen = {}

    class Probe(keras.layers.Layer):
        def call(self, x):
            seen.setdefault("entry", []).append(compat.training_call_entry())
            return x

    def constraint(value):
        seen.setdefault("optimizer", []).append(compat.applying_optimizer())
        return value

    inputs = keras.Input((2,))
    dense = keras.layers.Dense(1, kernel_constraint=constraint)
    model = keras.Model(inputs, dense(Probe()(inputs)))
    optimizer = keras.optimizers.SGD(0.1, use_ema=True)
    model.compile(optimizer, "mse")
    model.train_on_batch(np.ones((2, 2)), np.ones((2, 1)))
    model.predict_on_batch(np.ones((2, 2)))
    assert seen["entry"][-2:] == [model, None], VERSION  # train_on_batch, then predict
    assert seen["optimizer"] and all(o is optimizer for o in seen["optimizer"]), VERSION
    assert compat.training_call_entry() is None and compat.applying_optimizer() is None
    average = compat.optimizer_average(optimizer, dense.kernel)
    assert tuple(average.shape) == tuple(dense.kernel.shape), VERSION
    assert compat.optimizer_average(keras.optimizers.SGD(), dense.kernel) is None


def test_runs_its_graph_tells_functional_subclasses_that_keep_kerass_call():
    class Built(keras.Model):  # a KerasHub-style backbone: graph built in __init__
        def __init__(self):
            inputs = keras.Input((3,))
            super().__init__(inputs, keras.layers.Dense(2)(inputs))

    class OwnCall(Built):
        def call(self, inputs):
            return inputs

    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    assert compat.runs_its_graph(_functional()), VERSION
    assert compat.runs_its_graph(_sequential()), VERSION
    assert compat.runs_its_graph(Built()), VERSION
    assert not compat.runs_its_graph(OwnCall()), VERSION
    assert not compat.runs_its_graph(Subclassed()), VERSION


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))


# ---- model.fit under MultiWorkerMirroredStrategy (keras-team/keras#20585), Keras 3.15.1 -------

# sha256 of the source of the two Keras internals fix_multi_worker_fit wraps, as in Keras 3.15.1.
MULTI_WORKER_FIT_SOURCES = {
    "TensorFlowTrainer._maybe_symbolic_build": (
        "92a504f5eba9b29f81f1bf26180bdd5bf5186b06b7bda426534b90d2d02bc1c2"
    ),
    "reduce_per_replica": "2e7d54b1e6edc29a8c6a7e6b66cd4c8be3ba7842412c93753ac3afe169fa7fb8",
}


def test_the_multi_worker_fit_fix_wraps_keras_3_15_1_internals_unchanged():
    """Red when Keras changes either internal (a fix upstream, or a refactor): then check whether
    keras-team/keras#20585 is fixed (tests/integration/test_multi_worker.py, without the fix) and
    drop or re-check `fix_multi_worker_fit`, and update the fingerprints."""
    assert compat.MULTI_WORKER_FIT_KERAS == "3.15.1"
    internals = {
        "TensorFlowTrainer._maybe_symbolic_build": (
            tf_trainer.TensorFlowTrainer._maybe_symbolic_build
        ),
        "reduce_per_replica": tf_trainer.reduce_per_replica,
    }
    sources = {name: inspect.getsource(f) for name, f in internals.items()}  # unwraps the fix
    # The two statements the fix exists for (trainer.py:731 and :841 in Keras 3.15.1).
    assert "self.distribute_strategy.reduce(" in sources["TensorFlowTrainer._maybe_symbolic_build"]
    assert 'strategy.reduce("MEAN", v, axis=0)' in sources["reduce_per_replica"]
    for name, source in sources.items():
        digest = hashlib.sha256(source.encode()).hexdigest()
        assert digest == MULTI_WORKER_FIT_SOURCES[name], (
            f"{VERSION}: keras.src.backend.tensorflow.trainer.{name} differs from Keras "
            f"{compat.MULTI_WORKER_FIT_KERAS}, which fix_multi_worker_fit was written for."
        )


@pytest.fixture
def keras_trainer_restored(monkeypatch):
    """Puts Keras' own functions back after a test that installs the fix."""
    cls = tf_trainer.TensorFlowTrainer
    monkeypatch.setattr(cls, "_maybe_symbolic_build", cls.__dict__["_maybe_symbolic_build"])
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", tf_trainer.reduce_per_replica)
    return tf_trainer


def _fit_tiny(strategy):
    x = np.linspace(0, 1, 16, dtype="float32").reshape(8, 2)
    ds = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")]
        )
        model.compile("sgd", "mse")
    return model.fit(ds, epochs=1, verbose=0).history["loss"]


def test_the_multi_worker_fit_fix_mends_what_keras_3_15_breaks(keras_trainer_restored, monkeypatch):
    """Keras' own "multi-worker MWMS?" test forced on for a one-device MirroredStrategy, so that
    fit takes Keras' multi-worker branches in this process: unpatched, the scalar metric results
    are reduced along an axis 0 they lack (red here once Keras fixes trainer.py:841); patched,
    fit runs and reports the same loss as without the forcing. Other strategies are untouched."""
    tf_trainer = keras_trainer_restored
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    expected = _fit_tiny(strategy)
    keras_predicate = tf_trainer._collective_all_reduce_multi_worker
    monkeypatch.setattr(tf_trainer, "_collective_all_reduce_multi_worker", lambda strategy: True)
    with pytest.raises(ValueError, match="Invalid reduction dimension 0"):
        _fit_tiny(strategy)
    compat.fix_multi_worker_fit()
    compat.fix_multi_worker_fit()  # idempotent: wrapped once
    assert tf_trainer.reduce_per_replica.__wrapped__.__name__ == "reduce_per_replica"
    assert not hasattr(tf_trainer.reduce_per_replica.__wrapped__, "tf_tradyx_multi_worker_fix")
    np.testing.assert_allclose(_fit_tiny(strategy), expected, rtol=1e-6)
    monkeypatch.setattr(tf_trainer, "_collective_all_reduce_multi_worker", keras_predicate)
    np.testing.assert_allclose(_fit_tiny(tf.distribute.get_strategy()), expected, rtol=1e-6)


def test_the_multi_worker_fit_fix_refuses_internals_it_was_not_written_for(
    keras_trainer_restored, monkeypatch
):
    tf_trainer = keras_trainer_restored
    keras_reduce = tf_trainer.reduce_per_replica
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", lambda values, strategy: values)
    with pytest.raises(compat.KerasInternalsChanged, match=r"reduce_per_replica.*Keras 3\.15\.1"):
        compat.fix_multi_worker_fit()
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", keras_reduce)
    monkeypatch.delattr(tf_trainer, "_collective_all_reduce_multi_worker")
    with pytest.raises(compat.KerasInternalsChanged, match="no such function"):
        compat.fix_multi_worker_fit()


def test_a_layer_is_bound_with_the_call_signature_set_on_it():
    class PassOn(keras.layers.Layer):
        def __init__(self, inner, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner
            compat.set_call_signature(self, inspect.signature(inner.call))

        def call(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    inputs = keras.Input((3, 4))
    inner = keras.layers.MultiHeadAttention(1, 2)
    outputs = PassOn(inner)(inputs, inputs, key=inputs, use_causal_mask=True)
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    expected = inner(x, x, key=x, use_causal_mask=True)
    np.testing.assert_allclose(keras.Model(inputs, outputs)(x), expected, rtol=1e-6)
