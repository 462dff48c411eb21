"""The networks both methods are evaluated on: from-scratch CIFAR nets for pruning at
initialization, ImageNet-pretrained tinyML nets for memory-budgeted fine-tuning."""

from tf_tradyx.models.cifar import resnet20, vgg16_bn
from tf_tradyx.models.tinyml_nets import NETWORKS, load_config, load_pretrained, preprocess, tinyml

__all__ = [
    "get",
    "BUILDERS",
    "resnet20",
    "vgg16_bn",
    "NETWORKS",
    "load_config",
    "load_pretrained",
    "preprocess",
    "tinyml",
]

BUILDERS = {"resnet20": resnet20, "vgg16_bn": vgg16_bn}


def get(name, num_classes=10, **kwargs):
    """A from-scratch network by name ("resnet20", "vgg16_bn") or a tinyML one (random weights).

    Args:
      name (str): a key of `BUILDERS`, or a tinyML network of `NETWORKS`.
      num_classes (int): outputs of the classifier.
      **kwargs: the builder's other arguments (`input_shape` for the CIFAR networks,
        `input_size` and `feature_mix` for the tinyML ones).

    Returns:
      keras.Model: a Functional model with random weights.

    Raises:
      ValueError: for an unknown name or invalid arguments.

    Examples:
      >>> model = tx.models.get("resnet20", num_classes=10)
      >>> model.output_shape
      (None, 10)
      >>> tx.models.get("mcunet-in1", num_classes=5, input_size=64).input_shape
      (None, 64, 64, 3)
    """
    if name in BUILDERS:
        return BUILDERS[name](num_classes=num_classes, **kwargs)
    return tinyml(name, num_classes=num_classes, **kwargs)
