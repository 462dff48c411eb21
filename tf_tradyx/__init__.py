"""tf_tradyx: Keras 3 model optimization for training under memory and compute budgets.

- `tf_tradyx.pruning`: pruning at initialization (PX and its baselines).
- `tf_tradyx.sparse_update`: memory-budgeted fine-tuning (TraDy).
- `tf_tradyx.models`: the networks both methods are evaluated on.
- `tf_tradyx.data`: datasets, offline folders and archives, preprocessing.
"""

__version__ = "0.1.0"

from tf_tradyx import data  # noqa: E402
from tf_tradyx import models  # noqa: E402
from tf_tradyx import pruning  # noqa: E402
from tf_tradyx import sparse_update  # noqa: E402
