"""The graph interpreter both methods stand on, in one place.

- `steps`: a model's layer graph as a flat list of typed steps (nested models inlined), and the
  functions that run them: PX/SynFlow's path networks, TraDy's call counts, segment recomputation
  and Velocity's watched forward pass all interpret a model through it.
- `kinds`: the one registry of layer kinds: what each kind of Keras layer is for the path networks,
  for pruning masks, for TraDy's channel selection, for recomputation and for finding the head.
- `walk`: walking a model's layers (nested models expanded, wrappers seen through).

Private Keras APIs are reached only through `tf_tradyx._keras_compat`.
"""

__all__ = []
