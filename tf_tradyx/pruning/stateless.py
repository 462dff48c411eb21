"""Runs a masked model on other values of its variables, without writing any of them.

NTK-SAP scores networks whose weights are fresh draws, and ProsPr differentiates through SGD steps
taken from the current weights; neither may change the model it prunes. Both go through Keras'
`model.stateless_call`, with value lists built here: the model's current values with some
replaced. Each replacement is a tensor, so a gradient tape can watch it (a mask, a drawn kernel).
"""

import tensorflow as tf
from keras import layers

from tf_tradyx._graph import walk


class VariableValues:
    """The variable lists `model.stateless_call` takes, and where each variable sits in them."""

    def __init__(self, model):
        self.model = model
        self.trainable = list(model.trainable_variables)
        self.non_trainable = list(model.non_trainable_variables)
        self._where = {id(v): (0, i) for i, v in enumerate(self.trainable)}
        self._where.update({id(v): (1, i) for i, v in enumerate(self.non_trainable)})
        self.batch_norms = walk.layers_of_type(model, layers.BatchNormalization)

    def current(self):
        """[trainable values], [non-trainable values]: tensors of the variables as they are now."""
        return (
            [tf.convert_to_tensor(v) for v in self.trainable],
            [tf.convert_to_tensor(v) for v in self.non_trainable],
        )

    def get(self, values, variable):
        which, i = self._where[id(variable)]
        return values[which][i]

    def put(self, values, variable, value):
        """Replaces `variable`'s value in `values` ([trainable], [non-trainable]), in place."""
        which, i = self._where[id(variable)]
        values[which][i] = value

    def call(self, values, x, training):
        """(outputs, non-trainable values after the call): the model run on `values`."""
        return self.model.stateless_call(values[0], values[1], x, training=training)

    def reset_batch_norm_scales(self, values):
        """Every BatchNormalization at its initial affine transform: gamma 1, beta 0."""
        for bn in self.batch_norms:
            for var, fill in ((bn.gamma, 1.0), (bn.beta, 0.0)):
                if var is not None:
                    self.put(values, var, tf.fill(var.shape, tf.constant(fill, var.dtype)))

    def use_batch_statistics(self, values, x):
        """Sets every BatchNormalization's moving statistics in `values` to the batch statistics of
        the network that `values` describes on `x` (constants: no gradient flows through them).

        Read from the training-mode moving-average update started at zero:
        new = momentum * 0 + (1 - momentum) * batch, so batch = new / (1 - momentum). A frozen
        layer (no update), batch renormalization or momentum 1 would not give them: refused.
        """
        bad = [
            bn.name
            for bn in self.batch_norms
            if not bn.trainable or getattr(bn, "renorm", False) or not 0.0 <= bn.momentum < 1.0
        ]
        if bad:
            raise ValueError(
                f"BatchNormalization layers {bad} are frozen (trainable=False), use renorm, or have "
                "momentum >= 1: their batch statistics cannot be read from a training-mode pass. "
                "Make them trainable with momentum < 1 while pruning (pruning at initialization "
                "normally sees a fresh, trainable network)."
            )
        start = ([*values[0]], [*values[1]])
        for bn in self.batch_norms:
            for var in (bn.moving_mean, bn.moving_variance):
                self.put(start, var, tf.zeros(var.shape, var.dtype))
        _, after = self.call(start, x, training=True)
        after = ([], after)
        for bn in self.batch_norms:
            for var in (bn.moving_mean, bn.moving_variance):
                batch = self.get(after, var) / (1.0 - bn.momentum)
                self.put(values, var, tf.stop_gradient(batch))
