"""Every use of a private Keras or TensorFlow API in tf_tradyx, in one place, with the reason.

Keras 3 has no public API for a few things both methods need (listing a model's graph nodes so
that `tf_tradyx._graph` can interpret it op by op, finding an optimizer's per-variable state, swapping a layer's kernel for a masked tensor
during one call), and Keras' TensorFlow trainer breaks `model.fit` under a multi-worker
MultiWorkerMirroredStrategy (mended by `fix_multi_worker_fit`). Each helper below wraps one such
use; `tests/test_keras_compat.py` exercises every one of them, so an upgrade of Keras that changes
an internal fails there, loudly and by name, not deep inside a pruning round. The tested range
is `keras>=3.15,<4` (setup.cfg).
"""

import contextlib
import functools
import inspect

import keras
import tensorflow as tf
from keras.src.applications import convnext  # ConvNeXt's own layers have no public name.
from keras.src.backend.common import global_state  # Call context and name scopes.
from keras.src.backend.tensorflow import random as tf_random  # Dropout from a drawn seed.
from keras.src.backend.tensorflow import trainer as tf_trainer  # model.fit under MWMS, below.
from keras.src.layers import layer as keras_layer  # CallContext, to call a layer in training.
from keras.src.models.functional import Functional  # No public class for "plain Functional".
from keras.src.utils import io_utils  # print_msg honours interactive logging; not exported.
from tensorflow.python.ops import control_flow_util  # No public "am I traced for XLA?".

TESTED_KERAS = "3.15"


class KerasInternalsChanged(RuntimeError):
    """A private Keras API tf_tradyx relies on is missing or changed in this Keras version."""


def _changed(what, error):
    return KerasInternalsChanged(
        f"tf_tradyx relies on the Keras internal {what}, which Keras {keras.__version__} does not "
        f"provide as expected ({type(error).__name__}: {error}). tf_tradyx is tested with Keras "
        f"{TESTED_KERAS}; install it (pip install 'keras>=3.15,<4') or report this."
    )


# ---- models and their graphs -----------------------------------------------------------------


def is_graph_model(model):
    """True for Sequential models and plain Functional models (not subclasses with their own
    __init__/call): only those can be cloned layer by layer and interpreted op by op. Keras exports
    `keras.Model` (which may be subclassed) but not the Functional class that tells them apart."""
    if isinstance(model, keras.Sequential) or type(model) is Functional:
        return True
    return isinstance(model, Functional) and type(model).__init__ is Functional.__init__


def runs_its_graph(model):
    """True when calling `model` runs its Functional graph: plain Functional and Sequential models,
    and Functional subclasses that keep Functional's `call` (KerasHub backbones build their graph
    in `__init__` and keep Keras' call), so that interpreting the graph computes the model. Keras
    exports neither the Functional class nor a way to tell."""
    if isinstance(model, keras.Sequential):
        return type(model).call is keras.Sequential.call
    return isinstance(model, Functional) and type(model).call is Functional.call


def functional_graph(model):
    """The Functional graph of a model: Sequential models keep theirs in `_functional` (rebuilt
    on load and clone); Functional models are their own graph. None for an unbuilt Sequential."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model


def producer(tensor):
    """The operation that made a symbolic tensor (`KerasTensor._keras_history`), or None."""
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def inbound_nodes(layer):
    """The layer's call nodes in the graphs it belongs to (`Operation._inbound_nodes`)."""
    return list(layer._inbound_nodes)


def first_call_arguments(layer):
    """(args, kwargs) of the layer's first call in a graph, symbolic tensors included
    (`Node.arguments`): what a copy of the layer must be called on to be built the same way."""
    arguments = layer._inbound_nodes[0].arguments
    return tuple(arguments.args), dict(arguments.kwargs)


def outbound_nodes(layer):
    """The nodes that consume the layer's outputs (`Operation._outbound_nodes`)."""
    return list(layer._outbound_nodes)


def layer_own_variables(layer):
    """A layer's own variables in the order `save_own_variables` numbers them ("0", "1", ...)."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def own_variable_key(layer, variable):
    """The key under which `layer.save_own_variables` stores `variable` in a `.keras` file or
    weights store ("0", "1", ...: its position among the layer's own variables, trainable ones
    first), so that a loader reads each value by what it is, not by a position written down."""
    own = layer_own_variables(layer)
    for i, v in enumerate(own):
        if v is variable:
            return str(i)
    raise ValueError(f"{variable.path!r} is not one of {layer.name!r}'s own variables.")


def call_has_training_arg(layer):
    """Whether `layer.call` takes `training=` (Keras inspects the signature once, privately)."""
    return bool(getattr(layer, "_call_has_training_arg", False))


def set_untracked(obj, name, value):
    """Sets an attribute without Keras' tracking: a masked kernel tensor put in place of a layer's
    kernel variable for the duration of one call must not become a tracked weight, and Python-side
    state on a model (a sampler) must not be wrapped into a tracked structure."""
    object.__setattr__(obj, name, value)


def tracked_sublayers(layer):
    """The sublayers Keras tracks on `layer` (`Layer._layers`), in the order it tracked them."""
    return list(layer._layers)


def all_sublayers(layer):
    """Every layer inside `layer`, depth first, itself excluded (`Layer._flatten_layers`)."""
    return list(layer._flatten_layers(include_self=False, recursive=True))


def swap_sublayer(parent, attribute, index, new):
    """Puts `new` where `parent.<attribute>` (or `parent.<attribute>[index]`) holds a sublayer,
    also in the list Keras tracks it in, at the same position: Keras has no API to replace a
    sublayer of a built layer (its tracker is locked after `build`), and the position keeps the
    order of `weights`, so that a wrapped layer's weights line up with the plain layer's.

    Returns:
      The layer that was there.
    """
    holder = getattr(parent, attribute)
    old = holder if index is None else holder[index]
    tracked = parent._layers
    position = next((i for i, layer in enumerate(tracked) if layer is old), None)
    if position is None:
        raise ValueError(f"{old.name!r} is not a tracked sublayer of {parent.name!r}.")
    tracked[position] = new
    ids = parent._tracker.stored_ids["layers"]
    ids.discard(id(old))
    ids.add(id(new))
    if index is None:
        object.__setattr__(parent, attribute, new)
    else:
        list.__setitem__(holder, index, new)  # a TrackedList: no second tracking
    return old


def training_in_call_context():
    """The `training` value Keras resolved for the layer call in progress (None outside one):
    a layer's own `call` may not take `training=` while its sublayers do, and Keras keeps the
    resolved value only in its private call context."""
    context = global_state.get_global_attribute("current_call_ctx", None)
    return getattr(context, "training", None)


@contextlib.contextmanager
def call_context(layer, training):
    """Runs the block inside as if `layer` had been called with `training=`: its sublayers read
    the mode from Keras' private call context, which a recomputation in the backward pass (outside
    any call of the model) does not have."""
    previous = global_state.get_global_attribute("current_call_ctx", None)
    context = keras_layer.CallContext(entry_layer=layer)
    context.set_value("training", training)
    global_state.set_global_attribute("current_call_ctx", context)
    try:
        yield
    finally:
        global_state.set_global_attribute("current_call_ctx", previous)


def dropout_with_seed(layer, inputs, seed):
    """What `keras.layers.Dropout.call(inputs, training=True)` computes, from a seed drawn
    beforehand (`layer.seed_generator.next()`) instead of one it draws itself: the same mask,
    and the same again when the call is recomputed in the backward pass. Keras' backend takes
    only integers or seed generators as seeds; its TensorFlow dropout is reproduced with its own
    helpers for the seed's dtype and the noise shape."""
    if layer.rate == 1.0:
        return tf.zeros_like(inputs)
    noise_shape = tf_random._get_concrete_noise_shape(inputs, layer.noise_shape)
    return tf.nn.experimental.stateless_dropout(
        inputs, rate=layer.rate, noise_shape=noise_shape, seed=tf_random._cast_seed(seed)
    )


# ---- optimizers ----------------------------------------------------------------------------------


def optimizer_variable_index(optimizer, variable):
    """The index of `variable` among the optimizer's trainable variables (its slot lists use it),
    or None when the optimizer does not track it."""
    try:
        return optimizer._get_variable_index(variable)
    except (KeyError, ValueError):
        return None
    except AttributeError as e:
        raise _changed("Optimizer._get_variable_index", e) from e


def optimizer_tracked_variables(optimizer):
    """The trainable variables an optimizer was built for, in its slot order."""
    try:
        return list(optimizer._trainable_variables)
    except AttributeError as e:
        raise _changed("Optimizer._trainable_variables", e) from e


def optimizer_slot_lists(optimizer):
    """Every attribute of the optimizer holding one slot variable (or None) per tracked variable,
    each of its variable's shape: SGD's momentums, Adam's moments, RMSprop's velocities... Keras
    has no public listing of per-variable state; this finds it by shape."""
    refs = optimizer_tracked_variables(optimizer)
    out = []
    for key, value in vars(optimizer).items():
        if key in ("_trainable_variables", "_variables") or not isinstance(value, (list, tuple)):
            continue
        slots = list(value)
        if len(slots) == len(refs) and all(
            s is None or (isinstance(s, keras.Variable) and tuple(s.shape) == tuple(r.shape))
            for s, r in zip(slots, refs)
        ):
            out.append((key, slots))
    return out


def optimizer_decays(optimizer, variable):
    """Whether the optimizer's decoupled weight decay applies to `variable` (its exclusion lists)."""
    try:
        return bool(optimizer._use_weight_decay(variable))
    except AttributeError as e:
        raise _changed("Optimizer._use_weight_decay", e) from e


def parent_layers(layer):
    """The operations whose outputs feed the layer's first call (`Node.parent_nodes`)."""
    return [parent.operation for node in inbound_nodes(layer)[:1] for parent in node.parent_nodes]


def copy_lambda(layer):
    """A new Lambda layer with the same Python function. Cloning through get_config/from_config
    would deserialize the function, which Keras' safe mode refuses for a user who loads nothing;
    the function object is at hand, so it is reused. Its output shape lives in `_output_shape`."""
    return keras.layers.Lambda(
        layer.function,
        output_shape=layer._output_shape,
        mask=layer.mask,
        arguments=dict(layer.arguments),
        name=layer.name,
        dtype=layer.dtype_policy,
    )


def is_layer_scale(op):
    """ConvNeXt's LayerScale (x * gamma, per channel) from `keras.applications`, which Keras keeps
    private: path-based scoring treats it as an affine layer."""
    return isinstance(op, convnext.LayerScale)


def is_stochastic_depth(op):
    """ConvNeXt's StochasticDepth (the identity at inference) from `keras.applications`."""
    return isinstance(op, convnext.StochasticDepth)


def nodes_in_call_order(graph):
    """The call nodes of a Functional graph (not its inputs), deepest first: every node after the
    nodes it reads from, Keras' own `Function._run_through_graph` order. `_nodes_by_depth` is the
    only listing Keras keeps of a graph's nodes."""
    try:
        by_depth = graph._nodes_by_depth
    except AttributeError as e:
        raise _changed("Function._nodes_by_depth", e) from e
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.operation and not node.is_input:
                yield node


def call_context_args(op):
    """The call-context arguments (e.g. "training") a layer's call accepts, which Keras records
    privately in `_call_context_args`; empty for op-layers."""
    return getattr(op, "_call_context_args", {})


def print_msg(message, line_break=True):
    """Prints like Keras' own progress messages (`io_utils.print_msg`): to absl logging when the
    user turned interactive logging off (`keras.config.disable_interactive_logging`), else to
    stdout. Keras exports the switch but not the printer."""
    io_utils.print_msg(message, line_break=line_break)


def replace_call(model, call):
    """Makes `model(x)` run `call(inputs, training=None, mask=None)` instead of the Functional
    graph interpreter, for this instance only (Keras has no hook for a custom forward of a
    Functional model; `Layer.__call__` looks `call` up on the instance)."""
    object.__setattr__(model, "call", call)


def replaced_call(model):
    """What `replace_call` put on this instance, or None."""
    return model.__dict__.get("call")


def restore_call(model):
    """Undoes `replace_call`."""
    model.__dict__.pop("call", None)


def rebuild_train_function(model):
    """Makes Keras trace `model`'s train step again at its next call, also in the middle of `fit`
    (which reads `model.train_function` at every step). `make_train_function` is a method of
    Keras' TensorFlow trainer, not documented API."""
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def compiled_with_xla(model):
    """True when `model` was compiled to run its train step with XLA (`jit_compile`, which Keras
    resolves from "auto" at compile time: True on GPUs)."""
    return bool(getattr(model, "jit_compile", False)) and not getattr(model, "run_eagerly", False)


# ---- TensorFlow: what is being traced ---------------------------------------------------------


def tracing_for_xla():
    """True while a function compiled by XLA is being traced (`tf.function(jit_compile=True)`, which
    Keras uses for train steps by default on GPUs). XLA needs static shapes: a size read from a
    variable is compiled in as a constant, so every new value compiles the step again; a layer
    picks its static sizes while tracing instead. TensorFlow marks XLA tracing only through this
    private helper."""
    try:
        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    except AttributeError as err:  # pragma: no cover - a TensorFlow upgrade
        raise _changed(
            "tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext", err
        ) from err


# ---- Keras: who is calling -------------------------------------------------------------------


def training_call_entry():
    """The outermost layer (the model, in `fit` and `train_on_batch`) of the Keras call in
    progress when that call trains, else None. Keras keeps the call stack's context (the entry
    layer, `training`) privately; a layer reads it to check the optimizer of the model that trains
    it before the first step, on every training path."""
    try:
        context = global_state.get_global_attribute("current_call_ctx")
        if context is None or not context.get_value("training"):
            return None
        return context.entry_layer
    except AttributeError as err:
        raise _changed("the layer call context (current_call_ctx)", err) from err


def applying_optimizer():
    """The optimizer whose `apply` is running (Keras opens a name scope with the optimizer as its
    caller around the update and the variable constraints), or None: a variable constraint uses it
    to reach the optimizer's own copies of the variable (its EMA average)."""
    try:
        stack = global_state.get_global_attribute("name_scope_stack") or []
        callers = [scope.caller for scope in stack]
    except AttributeError as err:
        raise _changed("the name scope stack (name_scope_stack)", err) from err
    for caller in reversed(callers):
        if isinstance(caller, keras.optimizers.Optimizer):
            return caller
    return None


def optimizer_average(optimizer, variable):
    """The optimizer's exponential moving average of `variable` (`use_ema=True`), or None. Keras
    writes it into the variable in `finalize_variable_values`, after the variable's constraint."""
    if not getattr(optimizer, "use_ema", False):
        return None
    index = optimizer_variable_index(optimizer, variable)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if index is None or averages is None:
        return None
    return averages[index]


# ---- Keras: model.fit under MultiWorkerMirroredStrategy -----------------------------------------

MULTI_WORKER_FIT_KERAS = "3.15.1"  # the Keras release the fix below was written for and checked on

# What the fix wraps, with the parameters it was written against (the guard checks them).
_MULTI_WORKER_FIT_INTERNALS = {
    "TensorFlowTrainer._maybe_symbolic_build": ("self", "iterator", "data_batch"),
    "reduce_per_replica": ("values", "strategy", "reduction"),
    "_collective_all_reduce_multi_worker": ("strategy",),
}


def _multi_worker(strategy):
    """Keras' own test for "MultiWorkerMirroredStrategy with more than one worker"."""
    return strategy is not None and tf_trainer._collective_all_reduce_multi_worker(strategy)


def _first_local(value, strategy):
    """This worker's first replica's component of a distributed value; other values as they are."""
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _build_from_a_local_batch(original):
    """Keras 3.15's `TensorFlowTrainer._maybe_symbolic_build` (backend/tensorflow/trainer.py:713),
    called by `fit` and `evaluate` before the first step, takes one batch of the distributed
    dataset, a structure `(x, y)` of PerReplica values, and reduces the whole structure in one
    call, `self.distribute_strategy.reduce("MEAN", batch, axis=None)` (trainer.py:731).
    `Strategy.reduce` is documented for one DistributedValues or tensor, not a nest (TensorFlow's
    distribute_lib.py:1780 says "TODO: support `value` being a nest"). MirroredStrategy happens to
    accept one (`MirroredExtended._reduce_to` maps over the nest, mirrored_strategy.py:789);
    `CollectiveAllReduceExtended._reduce_to` (MultiWorkerMirroredStrategy,
    collective_all_reduce_strategy.py:957) does not: it passes the tuple to
    `CrossDeviceOps.reduce`, whose `_make_tensor_into_per_replica` calls `convert_to_tensor` on
    it, hence "Attempt to convert a value (PerReplica:{...}) ... to a Tensor"
    (keras-team/keras#20585). The reduced batch is only read for its shapes and dtypes
    (`Trainer._symbolic_build` turns it into KerasTensors), so under a multi-worker strategy this
    passes Keras this worker's first replica's batch instead, with the same shapes and no
    communication. Upstream fix: reduce leaf by leaf, or take the local results, at trainer.py:731.
    """

    @functools.wraps(original)
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is None or not _multi_worker(strategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:  # as Keras does: the first batch of the epoch iterator
            batch = next(batches)
            data_batch = keras.tree.map_structure(lambda v: _first_local(v, strategy), batch)
            break
        return original(self, data_batch=data_batch)

    _maybe_symbolic_build.tf_tradyx_multi_worker_fix = True
    return _maybe_symbolic_build


def _mean_of_scalars_over_replicas(original):
    """Keras 3.15's `reduce_per_replica` (backend/tensorflow/trainer.py:778) reduces what
    `train_step`/`test_step` return in each replica (the metric results: scalars) with
    `reduction="auto"`, which is "mean" off TPUs. For MirroredStrategy it averages the replicas'
    values, `tf.reduce_mean(local_results, axis=0)` (trainer.py:855); under a multi-worker
    MultiWorkerMirroredStrategy it takes a separate branch, `strategy.reduce("MEAN", v, axis=0)`
    (trainer.py:841), which reduces along a batch axis that a scalar does not have: "Invalid
    reduction dimension 0 for input with 0 dimensions" inside the traced train step, once the
    build above passes. For rank-0 values under a multi-worker strategy this reduces across the
    replicas only (`axis=None`), the mean MirroredStrategy computes; everything else (other
    strategies, reductions, values with a batch axis) goes to Keras unchanged. Upstream fix:
    `axis=None` for scalars at trainer.py:841.
    """

    @functools.wraps(original)
    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not _multi_worker(strategy):
            return original(values, strategy, reduction)

        def reduce(value):
            local = _first_local(value, strategy)
            if tf.is_tensor(local) and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return keras.tree.map_structure(reduce, values)

    reduce_per_replica.tf_tradyx_multi_worker_fix = True
    return reduce_per_replica


def _multi_worker_fit_internals():
    """The internals the fix wraps, after checking they take the parameters it was written for."""
    trainer_class = getattr(tf_trainer, "TensorFlowTrainer", None)
    found = {
        "TensorFlowTrainer._maybe_symbolic_build": getattr(
            trainer_class, "_maybe_symbolic_build", None
        ),
        "reduce_per_replica": getattr(tf_trainer, "reduce_per_replica", None),
        "_collective_all_reduce_multi_worker": getattr(
            tf_trainer, "_collective_all_reduce_multi_worker", None
        ),
    }
    for name, parameters in _MULTI_WORKER_FIT_INTERNALS.items():
        function = found[name]
        got = tuple(inspect.signature(function).parameters) if callable(function) else None
        if got != parameters:
            raise KerasInternalsChanged(
                f"tf_tradyx's fix for model.fit under MultiWorkerMirroredStrategy wraps the Keras "
                f"internal keras.src.backend.tensorflow.trainer.{name}{parameters}, written for "
                f"Keras {MULTI_WORKER_FIT_KERAS}; Keras {keras.__version__} has "
                f"{'no such function' if got is None else name + str(got)}. Install "
                f"keras=={MULTI_WORKER_FIT_KERAS} or report this."
            )
    return trainer_class, found


def fix_multi_worker_fit():
    """Makes `model.fit`, `evaluate` and `predict` work under
    `tf.distribute.MultiWorkerMirroredStrategy` with several workers, for any Keras model (keras-team/keras#20585: "Attempt to convert a value
    (PerReplica:{...})"). Two statements of Keras' TensorFlow trainer are at fault (see
    `_build_from_a_local_batch` and `_mean_of_scalars_over_replicas`); each is wrapped, for this
    process, so that it changes nothing unless the model's strategy is a multi-worker
    MultiWorkerMirroredStrategy, where Keras raises. Idempotent. Raises `KerasInternalsChanged`
    when this Keras no longer has those internals as Keras 3.15.1 has them."""
    trainer_class, found = _multi_worker_fit_internals()
    build = found["TensorFlowTrainer._maybe_symbolic_build"]
    if not getattr(build, "tf_tradyx_multi_worker_fix", False):
        trainer_class._maybe_symbolic_build = _build_from_a_local_batch(build)
    reduce = found["reduce_per_replica"]
    if not getattr(reduce, "tf_tradyx_multi_worker_fix", False):
        # Looked up as a module global by the train, test and predict functions at each trace.
        tf_trainer.reduce_per_replica = _mean_of_scalars_over_replicas(reduce)


def set_call_signature(layer, signature):
    """Makes Keras read `signature` as `layer.call`'s (`Layer._call_signature`, read once in
    `Layer.__init__`): a wrapper whose `call(*args, **kwargs)` passes everything on to the layer
    it wraps is then bound like that layer (Keras refuses a `**kwargs` argument that mixes
    tensors and flags, e.g. MultiHeadAttention's `key=` and `use_causal_mask=`)."""
    if not isinstance(getattr(layer, "_call_signature", None), inspect.Signature):
        raise KerasInternalsChanged(
            "keras.layers.Layer no longer keeps its call signature in `_call_signature`."
        )
    layer._call_signature = signature
