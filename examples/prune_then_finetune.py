"""PX-prune a pretrained network, then fine-tune it with TraDy under a memory budget.

The program is the installed console script `tf-tradyx-prune-finetune` (tf_tradyx/cli/prune_then_finetune.py); this file runs
the same from a checkout:

    python examples/prune_then_finetune.py --helpshort
"""

from tf_tradyx.cli import prune_then_finetune

if __name__ == "__main__":
    prune_then_finetune.run()
