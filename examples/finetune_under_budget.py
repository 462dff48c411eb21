"""Fine-tune a pretrained tinyML network under a memory budget (TraDy or a baseline).

The program is the installed console script `tf-tradyx-finetune` (tf_tradyx/cli/finetune_under_budget.py); this file runs
the same from a checkout:

    python examples/finetune_under_budget.py --helpshort
"""

from tf_tradyx.cli import finetune_under_budget

if __name__ == "__main__":
    finetune_under_budget.run()
