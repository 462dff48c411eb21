"""The command-line programs installed with the package:

    tf-tradyx-prune             prune a network at initialization, train it, evaluate it
    tf-tradyx-finetune          fine-tune a pretrained network under a memory budget (TraDy)
    tf-tradyx-prune-finetune    PX-prune a pretrained network, then fine-tune it with TraDy

Each runs offline on the bundled CIFAR-10 sample by default; `<program> --helpshort` lists its
flags.
"""

__all__ = []
