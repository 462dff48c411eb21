"""Finding selectable layers inside custom layers: which layers are entered, the paths and names
of their sublayers, the opt-in protocol and its bad uses."""

import keras
import numpy as np
import pytest

from tf_tradyx._graph import sublayers


class _Declared(keras.layers.Layer):
    """A user layer that opts in for two of its three Dense layers."""

    def __init__(self, declare=None, **kwargs):
        super().__init__(**kwargs)
        self.up = keras.layers.Dense(6, name="up")
        self.down = keras.layers.Dense(4, name="down")
        self.gate = keras.layers.Dense(4, name="gate")
        self.norm = keras.layers.LayerNormalization(name="norm")
        self._declare = declare

    def call(self, x):
        return self.norm(x + self.down(self.up(x)) * self.gate(x))

    def get_sparse_update_sublayers(self):
        return self._declare(self) if self._declare else [self.up, self.down]


class _Undeclared(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(4)

    def call(self, x):
        return self.fc(x)


class _Stack(keras.layers.Layer):
    """Blocks in a list attribute, as KerasHub's ViT encoder holds them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [_Declared(name=f"block_{i}") for i in range(2)]

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def get_sparse_update_sublayers(self):
        return [b.up for b in self.blocks]


def _built(layer, shape=(2, 3, 4)):
    layer(np.ones(shape, "float32"))
    return layer


def test_multi_head_attention_and_declaring_layers_are_entered_others_are_not():
    assert sublayers.enters(keras.layers.MultiHeadAttention(2, 4))
    assert sublayers.enters(_Declared())
    assert not sublayers.enters(_Undeclared())  # no promise about how it uses its kernel
    assert not sublayers.enters(keras.layers.Dense(3))
    assert not sublayers.enters(keras.Sequential([keras.layers.Dense(3)]))


def test_the_projections_of_multi_head_attention_are_found_by_path_and_named_by_path():
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")
    x = np.ones((1, 5, 6), "float32")
    mha(x, x)
    found = sublayers.selectable_sublayers(mha)
    assert [p for p, _ in found] == [
        ("_query_dense",),
        ("_key_dense",),
        ("_value_dense",),
        ("_output_dense",),
    ]
    assert all(sublayers.resolve(mha, p) is s for p, s in found)
    names = [sublayers.qualified_name(mha, p) for p, _ in found]
    assert names == ["mha/query", "mha/key", "mha/value", "mha/attention_output"]


def test_a_declaring_layer_gives_exactly_what_it_declares_through_lists_too():
    layer = _built(_Declared(name="blk"))
    assert [p for p, _ in sublayers.selectable_sublayers(layer)] == [("up",), ("down",)]
    stack = _built(_Stack(name="stack"))
    found = sublayers.selectable_sublayers(stack)
    assert [p for p, _ in found] == [("blocks[0]", "up"), ("blocks[1]", "up")]
    assert [sublayers.qualified_name(stack, p) for p, _ in found] == [
        "stack/block_0/up",
        "stack/block_1/up",
    ]


def test_declaring_a_foreign_or_unselectable_layer_is_refused_by_name():
    foreign = keras.layers.Dense(3, name="foreign")
    layer = _built(_Declared(declare=lambda self: [foreign], name="blk"))
    with pytest.raises(ValueError, match="'foreign', which is not held in one of its attributes"):
        sublayers.selectable_sublayers(layer)
    layer = _built(_Declared(declare=lambda self: [self.norm], name="blk"))
    with pytest.raises(ValueError, match="'norm' .LayerNormalization., which TraDy cannot select"):
        sublayers.selectable_sublayers(layer)


def test_replace_puts_the_new_layer_where_keras_tracks_the_old_one_in_order():
    layer = _built(_Declared(name="blk"))
    before = [tuple(v.shape) for v in layer.weights]
    new = keras.layers.Dense(4, name="down")
    new.build((None, 6))
    old = sublayers.replace(layer, ("down",), new)
    assert old.name == "down" and layer.down is new
    after = layer.weights
    assert [tuple(v.shape) for v in after] == before  # same position, same order
    assert after[2] is new.kernel and after[3] is new.bias
    assert any(s is new for s in layer._flatten_layers()) and not any(
        s is old for s in layer._flatten_layers()
    )


def test_a_path_that_leads_nowhere_says_where_it_stopped():
    layer = _built(_Declared(name="blk"))
    with pytest.raises(ValueError, match="stopped at 'missing'"):
        sublayers.resolve(layer, ("missing",))
    with pytest.raises(ValueError, match="stopped at 'blocks.5.'"):
        sublayers.resolve(_built(_Stack(name="s")), ("blocks[5]", "up"))
    with pytest.raises(ValueError, match="Not a sublayer path step"):
        sublayers.resolve(layer, ("up.kernel",))


def test_round_trips_tells_a_config_that_rebuilds_from_one_that_does_not():
    class Broken(keras.layers.Layer):
        def get_config(self):
            return {**super().get_config(), "derived": 3}  # the constructor refuses it

    assert sublayers.round_trips(keras.layers.MultiHeadAttention(2, 4))
    assert not sublayers.round_trips(Broken())
