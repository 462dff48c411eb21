"""The from-scratch CIFAR networks of the pruning-at-initialization literature (open_lth style)."""

import keras
from keras import layers


# PyTorch's kaiming_normal_ (fan_in, ReLU gain): an untruncated normal with std sqrt(2 / fan_in).
def _he_normal():
    return keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="untruncated_normal")


def _check_classes(num_classes):
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")


def _conv_bn(x, filters, kernel, stride, name, use_bias=False):
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=_he_normal(),
        name=f"{name}_conv",
    )(x)
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)


def resnet20(num_classes=10, input_shape=(32, 32, 3)):
    """CIFAR ResNet-20 (open_lth "cifar_resnet_20"): 22 prunable kernels, 270,896 weights at 10 classes.

    Args:
      num_classes (int): outputs of the classifier (logits).
      input_shape (tuple): the image shape, channels last.

    Returns:
      keras.Model: a Functional model with random (He normal) weights.

    Raises:
      ValueError: for a class count that is not a positive integer.

    Examples:
      >>> model = tx.models.resnet20(num_classes=10)
      >>> model.output_shape, model.count_params() > 270_000
      ((None, 10), True)
    """
    _check_classes(num_classes)
    inputs = keras.Input(input_shape, name="image")
    x = layers.ReLU(name="stem_relu")(_conv_bn(inputs, 16, 3, 1, "stem"))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"stage{stage + 1}_block{block + 1}"
            y = layers.ReLU(name=f"{name}_relu1")(_conv_bn(x, filters, 3, stride, f"{name}_1"))
            y = _conv_bn(y, filters, 3, 1, f"{name}_2")
            shortcut = x if stride == 1 else _conv_bn(x, filters, 1, stride, f"{name}_shortcut")
            x = layers.ReLU(name=f"{name}_relu2")(layers.Add(name=f"{name}_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=_he_normal(), name="classifier")(x)
    return keras.Model(inputs, outputs, name="resnet20")


VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_bn(num_classes=100, input_shape=(32, 32, 3)):
    """CIFAR VGG-16 with batch norm (open_lth "cifar_vgg_16"): 13 convs, global average pool, Dense.

    Args:
      num_classes (int): outputs of the final Dense (logits).
      input_shape (tuple): (height, width, channels) of the input.

    Returns:
      keras.Model: a Functional model with random weights.

    Raises:
      ValueError: for a `num_classes` that is not a positive integer.

    Examples:
      >>> model = tx.models.vgg16_bn(num_classes=100)
      >>> sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
      13
      >>> model.output_shape
      (None, 100)
    """
    _check_classes(num_classes)
    inputs = keras.Input(input_shape, name="image")
    x, conv = inputs, 0
    for item in VGG16_PLAN:
        if item == "M":
            x = layers.MaxPooling2D(2, name=f"pool{conv}")(x)
            continue
        conv += 1
        x = layers.ReLU(name=f"conv{conv}_relu")(
            _conv_bn(x, item, 3, 1, f"conv{conv}", use_bias=True)
        )
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=_he_normal(), name="classifier")(x)
    return keras.Model(inputs, outputs, name="vgg16_bn")
