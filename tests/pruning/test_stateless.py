"""stateless.VariableValues: a masked model run on other values of its variables must compute what
the model itself computes after those values are assigned, and must never write a variable:
replaced kernels and masks, training-mode statistics, BatchNormalization reset to its initial
affine map or given the batch's statistics (checked against the statistics computed directly and
against a training-mode pass), gradients through a replaced mask, and the refusals."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import pruning_cnn, pruning_data
from tf_tradyx.pruning import stateless

TOL = dict(rtol=1e-5, atol=1e-5)


def _masked():
    model = tx.pruning.wrap(pruning_cnn())
    x, _ = pruning_data()
    return model, x


def _snapshot(model):
    return [v.numpy().copy() for v in model.variables]


def _assert_unchanged(model, snapshot):
    for v, old in zip(model.variables, snapshot):
        np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)


def _restore(model, snapshot):
    for v, old in zip(model.variables, snapshot):
        v.assign(old)


def _assigned_call(model, replacements, x, training=False):
    """The reference: the model's own call after assigning `replacements` ([(variable, value)]),
    then every variable put back. Returns (outputs, non-trainable values after the call)."""
    snapshot = _snapshot(model)
    try:
        for var, value in replacements:
            var.assign(value)
        out = model(x, training=training).numpy()
        return out, [v.numpy().copy() for v in model.non_trainable_variables]
    finally:
        _restore(model, snapshot)


def _two_batch_norm_model(momentum=0.9, trainable=True):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(7, name="d1")(inputs)
    h = keras.layers.BatchNormalization(momentum=momentum, name="bn_a")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Dense(6, name="d2")(h)
    bn_b = keras.layers.BatchNormalization(momentum=momentum, name="bn_b")
    bn_b.trainable = trainable
    h = bn_b(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(h))


def test_current_values_are_the_variables_and_run_the_model_unchanged():
    model, x = _masked()
    values = stateless.VariableValues(model)
    trainable, non_trainable = values.current()
    assert len(trainable) == len(model.trainable_variables) > 0
    assert len(non_trainable) == len(model.non_trainable_variables) > 0
    for got, var in zip(
        trainable + non_trainable, model.trainable_variables + model.non_trainable_variables
    ):
        np.testing.assert_array_equal(got, var.numpy(), err_msg=var.path)
        assert values.get((trainable, non_trainable), var) is got
    before = _snapshot(model)
    out, after = values.call((trainable, non_trainable), x, training=False)
    np.testing.assert_allclose(out, model(x, training=False), rtol=1e-6, atol=1e-6)
    for a, b in zip(after, non_trainable):  # inference updates no statistics
        np.testing.assert_array_equal(a, b)
    _assert_unchanged(model, before)


def test_replaced_kernel_mask_and_statistics_compute_what_the_assigned_model_computes():
    model, x = _masked()
    values = stateless.VariableValues(model)
    rng = np.random.default_rng(5)
    c1 = model.get_layer("masked_c1")
    bn = model.get_layer("bn1")
    kernel, mask = c1.layer.kernel, c1.masks[0]
    replacements = [
        (kernel, rng.normal(size=kernel.shape).astype(np.float32)),
        (mask, (rng.random(mask.shape) < 0.5).astype(np.float32)),
        (bn.moving_mean, rng.normal(size=bn.moving_mean.shape).astype(np.float32)),
    ]
    current = values.current()
    untouched = current[0] + current[1]
    for var, value in replacements:
        values.put(current, var, tf.constant(value))
    for var, value in replacements:  # each value at its own variable's place
        np.testing.assert_array_equal(values.get(current, var), value)
    replaced_ids = {id(values.get(current, var)) for var, _ in replacements}
    kept = [t for t in current[0] + current[1] if id(t) not in replaced_ids]
    assert len(kept) == len(untouched) - 3 and all(any(k is u for u in untouched) for k in kept)
    before = _snapshot(model)
    out, _ = values.call(current, x, training=False)
    _assert_unchanged(model, before)  # nothing written
    expected, _ = _assigned_call(model, replacements, x)
    np.testing.assert_allclose(out, expected, **TOL)
    assert not np.allclose(out, model(x, training=False), atol=1e-3)  # the replacements mattered


def test_a_training_call_returns_the_new_statistics_without_writing_them():
    model, x = _masked()
    values = stateless.VariableValues(model)
    before = _snapshot(model)
    out, after = values.call(values.current(), x, training=True)
    _assert_unchanged(model, before)
    expected_out, expected_after = _assigned_call(model, [], x, training=True)
    np.testing.assert_allclose(out, expected_out, **TOL)
    for a, b, var in zip(after, expected_after, model.non_trainable_variables):
        np.testing.assert_allclose(a, b, **TOL, err_msg=var.path)
    bn = model.get_layer("bn1")
    moved = values.get(([], after), bn.moving_mean)
    assert not np.allclose(moved, bn.moving_mean.numpy())  # the statistics did move


def test_reset_batch_norm_scales_is_gamma_one_beta_zero():
    model, x = _masked()
    bn = model.get_layer("bn1")
    assert not np.allclose(bn.gamma.numpy(), 1.0)  # the fixture's BN is not at its initial map
    values = stateless.VariableValues(model)
    current = values.current()
    values.reset_batch_norm_scales(current)
    np.testing.assert_array_equal(values.get(current, bn.gamma), np.ones(8, np.float32))
    np.testing.assert_array_equal(values.get(current, bn.beta), np.zeros(8, np.float32))
    before = _snapshot(model)
    out, _ = values.call(current, x, training=False)
    _assert_unchanged(model, before)
    expected, _ = _assigned_call(model, [(bn.gamma, np.ones(8)), (bn.beta, np.zeros(8))], x)
    np.testing.assert_allclose(out, expected, **TOL)


def test_reset_batch_norm_scales_skips_a_layer_without_gamma_or_beta():
    inputs = keras.Input((4,))
    h = keras.layers.BatchNormalization(center=False, scale=False, name="bn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    values = stateless.VariableValues(model)
    current = values.current()
    copy = ([*current[0]], [*current[1]])
    values.reset_batch_norm_scales(current)
    assert all(a is b for a, b in zip(current[0] + current[1], copy[0] + copy[1]))


def test_batch_statistics_are_those_of_the_batch_norm_input():
    """Computed directly: mean and (biased) variance over batch and positions of bn1's input, in
    the network with a replaced first kernel (the network that the values describe)."""
    model, x = _masked()
    values = stateless.VariableValues(model)
    c1 = model.get_layer("masked_c1")
    bn = model.get_layer("bn1")
    new_kernel = 2.0 * c1.layer.kernel.numpy()
    current = values.current()
    values.put(current, c1.layer.kernel, tf.constant(new_kernel))
    before = _snapshot(model)
    values.use_batch_statistics(current, x)
    _assert_unchanged(model, before)
    snapshot = _snapshot(model)
    try:
        c1.layer.kernel.assign(new_kernel)
        bn_input = keras.Model(model.input, bn.input)(x).numpy()
    finally:
        _restore(model, snapshot)
    np.testing.assert_allclose(
        values.get(current, bn.moving_mean), bn_input.mean(axis=(0, 1, 2)), **TOL
    )
    np.testing.assert_allclose(
        values.get(current, bn.moving_variance), bn_input.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5
    )


def test_batch_statistics_make_inference_equal_a_training_pass_through_stacked_batch_norms():
    """With each BatchNormalization given its batch statistics (the second one's measured after
    the first normalizes by batch statistics), an inference pass is a training-mode pass."""
    model = _two_batch_norm_model()
    x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    for bn in (model.get_layer("bn_a"), model.get_layer("bn_b")):
        bn.moving_mean.assign(np.full(bn.moving_mean.shape, 3.0, np.float32))
        bn.moving_variance.assign(np.full(bn.moving_variance.shape, 0.2, np.float32))
    values = stateless.VariableValues(model)
    assert [bn.name for bn in values.batch_norms] == ["bn_a", "bn_b"]
    current = values.current()
    values.use_batch_statistics(current, x)
    out, _ = values.call(current, x, training=False)
    expected, _ = _assigned_call(model, [], x, training=True)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    stale, _ = values.call(values.current(), x, training=False)
    assert not np.allclose(stale, expected, atol=1e-2)  # the moving statistics were far off


def test_batch_statistics_carry_no_gradient():
    model = _two_batch_norm_model()
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32))
    values = stateless.VariableValues(model)
    d1 = model.get_layer("d1")
    kernel = tf.convert_to_tensor(d1.kernel)
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        current = values.current()
        values.put(current, d1.kernel, kernel)
        values.use_batch_statistics(current, x)
        stats = values.get(current, model.get_layer("bn_a").moving_mean)
        total = tf.reduce_sum(stats)
    assert tape.gradient(total, kernel) is None


def test_a_gradient_through_a_replaced_mask_is_the_gradient_on_the_mask_variable():
    model, x = _masked()
    values = stateless.VariableValues(model)
    layer = model.get_layer("masked_pw")
    mask_var = layer.masks[0]
    weights = tf.constant(np.random.default_rng(1).normal(size=(len(x), 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(mask_var.value)  # the backend variable behind the Keras one
        total = tf.reduce_sum(model(x, training=False) * weights)
    expected = tape.gradient(total, mask_var.value)

    @tf.function(autograph=False)
    def mask_gradient(x):
        mask = tf.convert_to_tensor(mask_var)
        current = values.current()
        values.put(current, mask_var, mask)
        with tf.GradientTape() as tape:
            tape.watch(mask)
            out, _ = values.call(current, x, training=False)
            total = tf.reduce_sum(out * weights)
        return tape.gradient(total, mask)

    got = mask_gradient(tf.constant(x)).numpy()
    assert np.abs(expected.numpy()).max() > 0
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("problem", ["frozen", "momentum_one"])
def test_batch_norms_whose_statistics_cannot_be_read_are_refused_by_name(problem):
    if problem == "frozen":
        model = _two_batch_norm_model(trainable=False)
    else:
        model = _two_batch_norm_model(momentum=1.0)
    values = stateless.VariableValues(model)
    current = values.current()
    copy = ([*current[0]], [*current[1]])
    x = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="bn_b" if problem == "frozen" else "bn_a"):
        values.use_batch_statistics(current, x)
    assert all(a is b for a, b in zip(current[0] + current[1], copy[0] + copy[1]))


def test_a_variable_of_another_model_has_no_place():
    model, _ = _masked()
    values = stateless.VariableValues(model)
    foreign = keras.Variable(np.zeros(3, np.float32))
    with pytest.raises(KeyError):
        values.get(values.current(), foreign)
    with pytest.raises(KeyError):
        values.put(values.current(), foreign, tf.zeros(3))


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
