"""Memory-budgeted fine-tuning (TraDy): update only sampled input channels of preselected layers.

    costs = cost_table(model)                         # units and FLOPs per input channel
    layers = rank_layers(model, data).top_k(0.97)     # RGN preselection, once per architecture
    sparse = wrap(model, budget=27_946, layers=layers, strategy="tradi", seed=0)
    sparse.compile(...); sparse.fit(..., callbacks=[ChannelResampler()])
    efficiency(sparse); selection(sparse); plain = strip(sparse)

See METHODS.md section 1 for the method and `api` for the optimizer-state rules.
"""

from tf_tradyx.sparse_update import memory  # noqa: F401 - sp.memory.retained_tensors(...)
from tf_tradyx.sparse_update.api import (Efficiency, attach, check_optimizer, efficiency,
                                         reset_optimizer_state, resample, selection, set_selection,
                                         sparse_kernels, sparse_layers, strip, wrap)
from tf_tradyx.sparse_update.callbacks import ChannelResampler, EfficiencyLogger, SelectionSummaries
from tf_tradyx.sparse_update.costs import (CostTable, LayerCost, cost_table, parse_budget,
                                           units_from_bytes)
from tf_tradyx.sparse_update.ranking import LayerRanking, rank_layers
from tf_tradyx.sparse_update.strategies import (NAMES as STRATEGIES, PAPER_SCHEMES, DetRGN,
                                                RandomChannels, SelectionContext, SparseUpdateScheme,
                                                Strategy, WholeVariables)
from tf_tradyx.sparse_update.compact import CompactReLU
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate
