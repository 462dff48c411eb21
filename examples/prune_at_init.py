"""Prune a network at initialization, train it and report (PX or a baseline).

The program is the installed console script `tf-tradyx-prune` (tf_tradyx/cli/prune_at_init.py); this file runs
the same from a checkout:

    python examples/prune_at_init.py --helpshort
"""

from tf_tradyx.cli import prune_at_init

if __name__ == "__main__":
    prune_at_init.run()
