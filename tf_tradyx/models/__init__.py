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
    """A from-scratch network by name ("resnet20", "vgg16_bn") or a tinyML one (random weights)."""
    if name in BUILDERS:
        return BUILDERS[name](num_classes=num_classes, **kwargs)
    return tinyml(name, num_classes=num_classes, **kwargs)
