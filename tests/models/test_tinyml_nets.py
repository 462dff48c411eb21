"""The tinyML networks: layer specs against the reference, pretrained weights that recognize photos,
preprocessing, the int8 -> float conversion, errors."""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import TESTDATA
from tf_tradyx.models import tinyml_nets as tinyml_lib

NETS = ("mbv2-w0.35", "mcunet-in1", "proxyless-w0.3")


def _photo(name):
    raw = tf.io.read_file(os.path.join(TESTDATA, f"{name}.jpg"))
    return tf.io.decode_jpeg(raw, channels=3).numpy()


@pytest.mark.parametrize("name", NETS)
def test_layer_specs_match_reference(name):
    with open(os.path.join(TESTDATA, "tinyml_nets_128px.json")) as f:
        ref = json.load(f)["networks"][tinyml_lib.NETWORKS[name]]
    model = tx.models.tinyml(name, feature_mix=True)
    convs = [
        l
        for l in model.layers
        if isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    assert len(convs) == ref["n_conv"]
    for layer, spec in zip(convs, ref["conv_layers"]):
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        source = model.get_layer(f"{layer.name}_pad") if layer.kernel_size[0] > 1 else layer
        got = {
            "in_channels": layer.input.shape[-1],
            "out_channels": layer.output.shape[-1],
            "kernel": list(layer.kernel_size),
            "stride": layer.strides[0],
            "depthwise": depthwise,
            "in_hw": source.input.shape[1],
            "out_hw": layer.output.shape[1],
        }
        assert got == {k: spec[k] for k in got}, f"{layer.name} vs {spec}"
    plain = tx.models.tinyml(name)  # The files' classifier sits on the last block.
    assert plain.get_layer("classifier").input.shape[-1] == ref["classifier_in"]
    # The sum of weights and input maps is the paper's full fine-tuning total.
    units = sum(
        int(np.prod(l.kernel.shape)) + l.input.shape[-1] * s["in_hw"] ** 2
        for l, s in zip(convs, ref["conv_layers"])
    )
    assert units == ref["full_finetune_units"]


@pytest.mark.parametrize("name", NETS)
def test_pretrained_recognizes_cat_and_espresso(name):
    model = tx.models.load_pretrained(name)
    pre = tx.models.preprocess(name)
    batch = np.stack([pre(_photo("chelsea")), pre(_photo("coffee"))])
    logits = model(batch, training=False).numpy()
    cat_top5, coffee_top5 = np.argsort(-logits, axis=1)[:, :5]
    assert set(cat_top5) & set(range(281, 286)), f"cat top-5 {cat_top5}"
    assert 967 in coffee_top5
    # A random-weight network of the same architecture does not: the weights matter.
    random_logits = tx.models.tinyml(name)(batch).numpy()
    assert 967 not in np.argsort(-random_logits, axis=1)[1, :1]


def test_new_head_keeps_features():
    base = tx.models.load_pretrained("mbv2-w0.35")
    model = tx.models.load_pretrained("mbv2-w0.35", num_classes=10)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 128, 128, 3)).astype(np.float32)
    features = lambda m: keras.Model(m.input, m.get_layer("pool").output)(x).numpy()
    np.testing.assert_allclose(features(model), features(base), rtol=1e-6)
    np.testing.assert_array_equal(model(x).numpy(), 0)  # Zero-initialized head.
    glorot = tx.models.load_pretrained("mbv2-w0.35", 10, head_initializer="glorot_uniform")
    assert np.abs(glorot.get_layer("classifier").kernel.numpy()).max() > 0


def test_other_input_sizes():
    model = tx.models.load_pretrained("mcunet-in1", input_size=160)
    assert model.input_shape == (None, 160, 160, 3)
    assert tx.models.preprocess("mcunet-in1", 160)(_photo("chelsea")).shape == (160, 160, 3)


def test_bad_input():
    with pytest.raises(ValueError, match="valid names.*mbv2-w0.35"):
        tx.models.tinyml("resnet-50")
    with pytest.raises(ValueError, match="num_classes"):
        tx.models.tinyml("mbv2-w0.35", num_classes=0)
    with pytest.raises(ValueError, match="multiple of 32"):
        tx.models.tinyml("mbv2-w0.35", input_size=100)
    with pytest.raises(ValueError, match="num_classes"):
        tx.models.load_pretrained("mbv2-w0.35", num_classes=-3)
    with pytest.raises(ValueError, match="num_classes"):
        tx.models.resnet20(0)
    with pytest.raises(ValueError, match="RGB"):
        tx.models.preprocess("mbv2-w0.35")(np.zeros((8, 8), np.uint8))
    assert tx.models.tinyml("mcunet-5fps").name == "mcunet_in1"  # The files' name.


def test_preprocess_photo_is_centre_crop_of_147_resize():
    photo = _photo("chelsea")  # 300 x 451
    out = tx.models.preprocess("mbv2-w0.35")(photo).numpy()
    resized = tf.image.resize(photo.astype(np.float32), (147, 221)).numpy()
    np.testing.assert_allclose(out, resized[9:137, 46:174] / 127.5 - 1, atol=1e-5)
    assert out.min() >= -1 and out.max() <= 1


def test_preprocess_small_images_resize_straight_and_map_in_tf_data():
    sample = tx.data.cifar10_sample("test").take(3)
    pre = tx.models.preprocess("proxyless-w0.3")
    outs = list(sample.map(lambda x, y: (pre(x), y)).as_numpy_iterator())
    first = next(iter(sample))[0].numpy().astype(np.float32)
    expected = tf.image.resize(first, (128, 128)).numpy() / 127.5 - 1
    np.testing.assert_allclose(outs[0][0], expected, atol=1e-5)
    assert outs[0][0].shape == (128, 128, 3)


def _int8_conv(q_in, spec, w_int8, bias_int32, w_scales):
    """The int8 inference of one conv in numpy (tiny-training semantics), returns real output."""
    quant = spec["quant"]
    k, stride = spec["kernel_size"][0], spec["stride"]
    pad = (k - 1) // 2
    x = q_in.astype(np.int64) - quant["x_zero"]  # Padding is real zero = the zero point.
    x = np.pad(x, [(pad, pad), (pad, pad), (0, 0)])
    h_out = (x.shape[0] - k) // stride + 1
    out_c = w_int8.shape[0]
    acc = np.zeros((h_out, h_out, out_c), np.int64)
    for i in range(h_out):
        for j in range(h_out):
            patch = x[i * stride : i * stride + k, j * stride : j * stride + k, :]  # (k, k, C)
            if spec["depthwise"]:
                acc[i, j] = np.einsum("hwc,chw->c", patch, w_int8[:, 0].astype(np.int64))
            else:
                acc[i, j] = np.einsum("hwc,ochw->o", patch, w_int8.astype(np.int64))
    acc += bias_int32
    scale = quant["x_scale"] * w_scales / quant["y_scale"]
    q_out = np.clip(np.round(acc * scale) + quant["y_zero"], -128, 127)
    return (q_out - quant["y_zero"]) * quant["y_scale"]


@pytest.mark.parametrize(
    "path", ["first_conv", "blocks/1/depthwise", "blocks/3/pointwise2", "blocks/5/pointwise1"]
)
def test_float_layer_matches_int8_simulation_within_one_step(path):
    cfg = tinyml_lib.load_config("mbv2-w0.35")
    parts = path.split("/")
    spec = cfg[parts[0]] if len(parts) == 1 else cfg["blocks"][int(parts[1])][parts[2]]
    with np.load(os.path.join(tinyml_lib.ASSETS, "mbv2-w0.35.npz")) as f:
        w, b, s = f[f"{path}/weight"], f[f"{path}/bias"], f[f"{path}/w_scales"]
    model = tx.models.load_pretrained("mbv2-w0.35")
    name = path.replace("/", "_")
    rng = np.random.default_rng(3)
    q_in = rng.integers(-128, 128, (9, 9, spec["in_channel"]))
    x = ((q_in - spec["quant"]["x_zero"]) * spec["quant"]["x_scale"]).astype(np.float32)
    layer_in = keras.Input(x.shape)
    y = layer_in
    if spec["kernel_size"][0] > 1:
        y = model.get_layer(f"{name}_pad")(y)
    y = model.get_layer(name)(y)
    if spec["quant"]["y_zero"] == -128:
        y = model.get_layer(f"{name}_relu6")(y)
    float_out = keras.Model(layer_in, y)(x[None]).numpy()[0]
    int8_out = _int8_conv(q_in, spec, w, b, s)
    # int8 can only represent [(-128 - zero) * scale, (127 - zero) * scale]; for the ReLU6 layers that
    # range is [0, 6] and the float model clamps the same way. Inside it, rounding costs half a step.
    step, zero = spec["quant"]["y_scale"], spec["quant"]["y_zero"]
    lo, hi = (-128 - zero) * step, (127 - zero) * step
    err = np.abs(np.clip(float_out, lo, hi) - int8_out)
    assert err.max() <= 0.5 * step + 1e-4, err.max() / step
    assert ((float_out > lo + step) & (float_out < hi - step)).mean() > 0.2  # Not all clamped.


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
