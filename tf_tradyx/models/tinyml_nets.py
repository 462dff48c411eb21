"""The three ImageNet-pretrained tinyML networks of the TraDy paper as float Keras 3 models.

The shipped files are int8 post-training-quantized networks with batch norm folded into every conv
(MIT HAN Lab tiny-training). Here they become float Conv2D / DepthwiseConv2D layers with bias:
weight = int8 * w_scale (per output channel), bias = int32 * x_scale * w_scale. ReLU6 stands where
the int8 model clamps its output to [0, 6] (output zero point -128: first conv, pointwise1,
depthwise); pointwise2 is linear; residual adds have no activation.

Padding follows the files' symmetric (k - 1) // 2 convention, also for stride 2. Keras "same" pads
asymmetrically for stride 2 and ruins the pretrained weights, so every conv is ZeroPadding2D + "valid".
"""

import json
import math
import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
# Public name -> file stem. MCUNet-in1 is called mcunet-5fps in the tiny-training files.
NETWORKS = {
    "mbv2-w0.35": "mbv2-w0.35",
    "mcunet-in1": "mcunet-5fps",
    "proxyless-w0.3": "proxyless-w0.3",
}
_ALIASES = {"mcunet-5fps": "mcunet-in1"}
# Feature-mix 1x1 conv the papers' budgets count but the pretrained files lack (MCUNet has none).
FEATURE_MIX_CHANNELS = {"mbv2-w0.35": 448, "proxyless-w0.3": 384}


def canonical_name(name):
    """Validates a network name; returns its public spelling."""
    name = _ALIASES.get(name, name)
    if name not in NETWORKS:
        raise ValueError(
            f"Unknown tinyML network {name!r}; valid names: {sorted(NETWORKS)} "
            "(mcunet-5fps is accepted for mcunet-in1)."
        )
    return name


def load_config(name):
    """The layer configuration (dict) of a network, from the JSON shipped with the package.

    Args:
      name (str): a tinyML network of `NETWORKS` ("mbv2-w0.35", "mcunet-in1", "proxyless-w0.3").

    Returns:
      dict: the network's layers: "first_conv", "blocks" (one dict per block), and the rest.

    Raises:
      ValueError: for an unknown name, listing the valid ones.

    Examples:
      >>> config = tx.models.load_config("mbv2-w0.35")
      >>> "first_conv" in config, len(config["blocks"]) > 10
      (True, True)
      >>> tx.models.load_config("resnet20")
      Traceback (most recent call last):
      ...
      ValueError: Unknown tinyML network 'resnet20'; valid names: [...]...
    """
    with open(os.path.join(ASSETS, NETWORKS[canonical_name(name)] + ".json")) as f:
        return json.load(f)


def _conv(x, spec, name, relu6):
    """One conv of the files: symmetric zero padding, valid conv with bias, optional ReLU6."""
    k = spec["kernel_size"][0]
    pad = (k - 1) // 2
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    if spec["depthwise"]:
        x = layers.DepthwiseConv2D(k, strides=spec["stride"], padding="valid", name=name)(x)
    else:
        x = layers.Conv2D(
            spec["out_channel"], k, strides=spec["stride"], padding="valid", name=name
        )(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if relu6 else x


def _check_args(input_size, num_classes):
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if not isinstance(input_size, int) or input_size < 32 or input_size % 32:
        raise ValueError(
            f"input_size must be a positive multiple of 32 (the networks downsample by "
            f"32), got {input_size!r}."
        )


def tinyml(name, input_size=128, num_classes=1000, feature_mix=False):
    """Builds "mbv2-w0.35", "mcunet-in1" or "proxyless-w0.3" as a Functional model (random weights).

    Layer names follow the files' paths: first_conv, blocks_<i>_{pointwise1,depthwise,pointwise2},
    feature_mix, classifier.

    Args:
      name (str): "mbv2-w0.35", "mcunet-in1" (or its alias "mcunet-5fps") or "proxyless-w0.3".
      input_size (int): the input's height and width, a multiple of 32.
      num_classes (int): outputs of the classifier.
      feature_mix (bool): keep the network's feature-mix 1x1 conv before the classifier.

    Returns:
      keras.Model: a Functional model with random weights (`load_pretrained` loads ImageNet's).

    Raises:
      ValueError: for an unknown name, an `input_size` that is not a multiple of 32, or a
        `num_classes` that is not a positive integer.

    Examples:
      >>> model = tx.models.tinyml("mbv2-w0.35", input_size=64, num_classes=10)
      >>> model.input_shape, model.output_shape
      ((None, 64, 64, 3), (None, 10))
      >>> model.layers[1].name, model.layers[-1].name
      ('first_conv_pad', 'classifier')
      >>> tx.models.tinyml("mbv2-w0.35", input_size=100)
      Traceback (most recent call last):
      ...
      ValueError: input_size must be a positive multiple of 32 ...
    """
    name = canonical_name(name)
    _check_args(input_size, num_classes)
    cfg = load_config(name)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = _conv(inputs, cfg["first_conv"], "first_conv", relu6=True)
    for i, block in enumerate(cfg["blocks"]):
        shortcut = x
        if block["pointwise1"] is not None:
            x = _conv(x, block["pointwise1"], f"blocks_{i}_pointwise1", relu6=True)
        x = _conv(x, block["depthwise"], f"blocks_{i}_depthwise", relu6=True)
        x = _conv(x, block["pointwise2"], f"blocks_{i}_pointwise2", relu6=False)
        if block["residual"] is not None:
            x = layers.Add(name=f"blocks_{i}_add")([x, shortcut])
    if feature_mix and name in FEATURE_MIX_CHANNELS:
        x = layers.Conv2D(FEATURE_MIX_CHANNELS[name], 1, name="feature_mix")(x)
        x = layers.ReLU(6.0, name="feature_mix_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name.replace(".", "_").replace("-", "_"))


def _dequantized(arrays, path, spec):
    w = arrays[f"{path}/weight"].astype(np.float64)
    w_scales = arrays[f"{path}/w_scales"].astype(np.float64)
    bias = arrays[f"{path}/bias"].astype(np.float64) * spec["quant"]["x_scale"] * w_scales
    return w * w_scales[:, None, None, None], bias


def _set_conv(layer, w_oihw, bias):
    if isinstance(layer, layers.DepthwiseConv2D):
        kernel = w_oihw.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    else:
        kernel = w_oihw.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


def load_pretrained(name, num_classes=None, input_size=128, head_initializer="zeros"):
    """The network with its ImageNet weights, dequantized from the shipped int8 files.

    Args:
      name: "mbv2-w0.35", "mcunet-in1" or "proxyless-w0.3".
      num_classes: None keeps the 1000-way ImageNet classifier; an int replaces it with a new Dense
        head initialized by `head_initializer` ("zeros" or "glorot_uniform"), bias zero.
      input_size: a multiple of 32 (the weights were trained at 128).

    Returns:
      keras.Model: a float32 Functional model on (input_size, input_size, 3) images in [-1, 1]
        (see `preprocess`), returning logits; its head is the Dense layer "classifier".

    Raises:
      ValueError: for an unknown name, an input size that is not a multiple of 32, or an invalid
        `num_classes` or `head_initializer`.

    Examples:
      >>> model = tx.models.load_pretrained("mbv2-w0.35", num_classes=10)
      >>> model.input_shape, model.output_shape
      ((None, 128, 128, 3), (None, 10))
      >>> float(np.abs(model.get_layer("classifier").kernel).max())  # a new, zero head
      0.0
    """
    name = canonical_name(name)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be None or a positive integer, got {num_classes!r}.")
    if head_initializer not in ("zeros", "glorot_uniform"):
        raise ValueError(
            f"head_initializer must be 'zeros' or 'glorot_uniform', got {head_initializer!r}."
        )
    model = tinyml(name, input_size=input_size, num_classes=num_classes or 1000)
    cfg = load_config(name)
    with np.load(os.path.join(ASSETS, NETWORKS[name] + ".npz")) as arrays:
        arrays = dict(arrays)
    _set_conv(model.get_layer("first_conv"), *_dequantized(arrays, "first_conv", cfg["first_conv"]))
    for i, block in enumerate(cfg["blocks"]):
        for part in ("pointwise1", "depthwise", "pointwise2"):
            if block[part] is not None:
                _set_conv(
                    model.get_layer(f"blocks_{i}_{part}"),
                    *_dequantized(arrays, f"blocks/{i}/{part}", block[part]),
                )
    head = model.get_layer("classifier")
    if num_classes is None:
        w, b = _dequantized(arrays, "classifier", cfg["classifier"])
        head.set_weights([w[:, :, 0, 0].T.astype(np.float32), b.astype(np.float32)])
    else:
        init = keras.initializers.get(head_initializer)
        head.set_weights(
            [np.asarray(init(head.kernel.shape), np.float32), np.zeros(head.bias.shape, np.float32)]
        )
    return model


def preprocess(name, input_size=128):
    """A function: one uint8 RGB image (H, W, 3), any size -> float32 (input_size, input_size, 3).

    Photos: shorter side resized (bilinear) to ceil(input_size / 0.875) (147 at 128), then a centre
    crop. Small images (shorter side <= 64, e.g. CIFAR) are resized straight to input_size. Values are
    scaled to [-1, 1] by pixel / 127.5 - 1, the networks' int8 input convention. Works eagerly on
    numpy arrays and inside `tf.data` `.map`.

    Args:
      name (str): "mbv2-w0.35", "mcunet-in1" or "proxyless-w0.3".
      input_size (int): the side of the images the network takes.

    Returns:
      Callable: uint8 image (H, W, 3) -> float32 (input_size, input_size, 3) in [-1, 1].

    Raises:
      ValueError: for an unknown name or an input size that is not a positive integer.

    Examples:
      >>> pre = tx.models.preprocess("mbv2-w0.35")
      >>> image = np.full((32, 32, 3), 255, np.uint8)
      >>> x = pre(image)
      >>> tuple(x.shape), float(x[0, 0, 0])
      ((128, 128, 3), 1.0)
    """
    canonical_name(name)
    if not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}.")
    resize_to = math.ceil(input_size / 0.875)

    def fn(image):
        image = tf.convert_to_tensor(image)
        if image.shape.rank != 3 or (image.shape[-1] is not None and image.shape[-1] != 3):
            raise ValueError(
                f"preprocess expects one RGB image (H, W, 3), got shape {image.shape}."
            )
        image = tf.cast(image, tf.float32)
        shape = tf.shape(image)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        short = tf.minimum(h, w)

        def small():
            return tf.image.resize(image, (input_size, input_size), method="bilinear")

        def photo():
            scale = resize_to / short
            new_h = tf.cast(tf.round(h * scale), tf.int32)
            new_w = tf.cast(tf.round(w * scale), tf.int32)
            resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear")
            top = (new_h - input_size) // 2
            left = (new_w - input_size) // 2
            return tf.image.crop_to_bounding_box(resized, top, left, input_size, input_size)

        out = tf.cond(short <= 64.0, small, photo)
        out = tf.ensure_shape(out, (input_size, input_size, 3))
        return out / 127.5 - 1.0

    return fn
