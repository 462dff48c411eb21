"""`keras.layers.MultiHeadAttention` in the path networks of PX and SynFlow, as one graph node.

The layer's own `call` is one step of the graph, so the path networks compute it here from its
parts, each treated as the same operation written with `keras.ops` would be (docs/METHODS.md 2.5):

  q, k, v = the query, key and value projections (EinsumDense: weighted, their masked kernels)
  q       = q / sqrt(key_dim)                      a constant scale (a path weight)
  s       = einsum(k, q)                           bilinear: the product rule
  p       = softmax(s), masks applied              the real pass's probabilities; z1's gate is
                                                   (p (1 - p))^2, the diagonal of its Jacobian
  o       = einsum(p, v)                           bilinear: paths through v carry p^2 (the
                                                   probabilities as gates), paths through p
                                                   carry v^2
  y       = the output projection (EinsumDense)

In z2, SynFlow and connect the softmax is the identity and each bilinear factor passes the other's
paths with unit gain. Attention masks (`attention_mask`, `use_causal_mask`) act in the real pass
only: z1's gates are 0 where the real probabilities are, and the data-free passes see every
position. Dropout is the identity (inference).

The pass object supplies the mode-dependent pieces: `sub_weighted`, `constant_scale`, `bilinear`
and `attention_softmax` (`tf_tradyx.pruning.paths`).
"""

import inspect
import math

from keras import ops

from tf_tradyx.pruning import path_ops

# Keras' equations for rank-3 inputs, attention over the sequence axis (attention_axes None or
# (1,)): projected tensors are (batch, positions, heads, key_dim).
DOT_EQUATION = "aecd,abcd->acbe"  # (key, query) -> scores (batch, heads, query, key)
COMBINE_EQUATION = "acbe,aecd->abcd"  # (probabilities, value) -> (batch, query, heads, dim)


def _arguments(layer, args, kwargs):
    """The call's arguments by name (query, value, key, attention_mask, use_causal_mask...)."""
    bound = inspect.signature(layer.call).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def attention(path_pass, op, layer, args, kwargs):
    """The MultiHeadAttention `layer` (called as graph node `op`) computed by `path_pass`.

    Raises:
      UnsupportedLayerError: for inputs of another rank than 3, or a call that returns the
        attention scores.
    """
    given = _arguments(layer, args, kwargs)
    query, value = given["query"], given["value"]
    key = value if given.get("key") is None else given["key"]
    if len(query.shape) != 3 or len(value.shape) != 3 or len(key.shape) != 3:
        raise path_ops.unsupported(layer, "attention over inputs of rank other than 3")
    if given.get("return_attention_scores"):
        raise path_ops.unsupported(layer, "a call that returns the attention scores")
    q = path_pass.sub_weighted(op, layer.query_dense, query)
    k = path_pass.sub_weighted(op, layer.key_dense, key)
    v = path_pass.sub_weighted(op, layer.value_dense, value)
    q = path_pass.constant_scale(q, 1.0 / math.sqrt(float(layer.key_dim)))
    s = path_pass.bilinear(op, lambda a, b: ops.einsum(DOT_EQUATION, a, b), [k, q])
    mask = _attention_mask(given, s)
    p = path_pass.attention_softmax(op, s, mask)
    o = path_pass.bilinear(op, lambda a, b: ops.einsum(COMBINE_EQUATION, a, b), [p, v])
    return path_pass.sub_weighted(op, layer.output_dense, o)


def _attention_mask(given, scores):
    """The boolean mask (batch or 1, 1, query, key) the real softmax applies, or None."""
    mask = given.get("attention_mask")
    if mask is not None:
        mask = ops.expand_dims(ops.cast(mask, "bool"), axis=-3)
    if given.get("use_causal_mask"):
        n_q, n_k = scores.shape[-2], scores.shape[-1]
        causal = ops.cast(ops.tril(ops.ones((n_q, n_k))), "bool")[None, None]
        mask = causal if mask is None else ops.logical_and(mask, causal)
    return mask


def masked_softmax(scores, mask):
    """Keras' masked softmax over the last axis: masked scores get a large negative number."""
    if mask is not None:
        large_negative = -1e9 if scores.dtype != "float16" else -3e4
        scores = scores + (1.0 - ops.cast(mask, scores.dtype)) * large_negative
    return ops.softmax(scores, axis=-1)
