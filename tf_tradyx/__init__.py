"""tf_tradyx: Keras 3 model optimization for training under memory and compute budgets.

- `tf_tradyx.pruning`: pruning at initialization (PX and its baselines).
- `tf_tradyx.sparse_update`: memory-budgeted fine-tuning (TraDy).
- `tf_tradyx.models`: the networks both methods are evaluated on.
- `tf_tradyx.data`: datasets, offline folders and archives, preprocessing.
- `tf_tradyx.multi_worker`: `model.fit` on many workers (MultiWorkerMirroredStrategy).
"""

from tf_tradyx import data, models, multi_worker, pruning, run_outputs, sparse_update
from tf_tradyx._version import __version__

__all__ = [
    "data",
    "models",
    "pruning",
    "sparse_update",
    "run_outputs",
    "multi_worker",
    "__version__",
]
