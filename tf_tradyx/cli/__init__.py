"""The command-line programs installed with the package (absl flags; `--helpshort` lists them):

    tf-tradyx-prune             prune at initialization, train, evaluate, report (prune_at_init)
    tf-tradyx-finetune          fine-tune under a memory budget (finetune_under_budget)
    tf-tradyx-prune-finetune    PX-prune a pretrained net, then TraDy-fine-tune it
                                (prune_then_finetune)

Each module defines its own flags, so import only the one you run.
"""

__all__ = []
