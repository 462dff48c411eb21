"""Memory-budgeted fine-tuning (TraDy): update only sampled input channels of preselected layers.

    costs = cost_table(model)  # units and FLOPs per input channel
    layers = rank_layers(model, data).top_k(0.97)  # once per architecture
    sparse = wrap(model, budget=27_946, strategy=TraDy(layers), seed=0)
    sparse.compile(...); sparse.fit(..., callbacks=[ChannelResampler()])
    efficiency(sparse); selection(sparse); plain = strip(sparse)

The guides "Fine-tuning under a memory budget" (docs/guides/fine_tuning_under_budget.md) and
"Choosing a budget" (docs/guides/choosing_a_budget.md) walk through a complete run; the method is
stated in docs/METHODS.md 1.1.
"""

from tf_tradyx.sparse_update import memory, recompute
from tf_tradyx.sparse_update.callbacks import ChannelResampler, EfficiencyLogger, SelectionSummaries
from tf_tradyx.sparse_update.compact_relu import CompactReLU
from tf_tradyx.sparse_update.costs import (
    CostTable,
    LayerCost,
    channel_norms,
    cost_table,
    parse_budget,
    units_from_bytes,
)
from tf_tradyx.sparse_update.efficiency_report import Efficiency, efficiency
from tf_tradyx.sparse_update.layer_ranking import LayerRanking, rank_layers
from tf_tradyx.sparse_update.optimizer_state import check_optimizer, reset_optimizer_state
from tf_tradyx.sparse_update.sampler import (
    Sampler,
    draws,
    resample,
    sampler_of,
    selection,
    set_selection,
    sparse_kernels,
    sparse_layers,
)
from tf_tradyx.sparse_update.sparse_sublayers import SparseSublayers, SparseUpdatableLayer
from tf_tradyx.sparse_update.strategies import NAMES as STRATEGIES
from tf_tradyx.sparse_update.strategies import (
    PAPER_SCHEMES,
    SU,
    DetRGN,
    RandomChannels,
    SelectionContext,
    SparseUpdateScheme,
    Strategy,
    TraDy,
    Velocity,
    WholeVariables,
)
from tf_tradyx.sparse_update.transforms import attach, strip, wrap
from tf_tradyx.sparse_update.wrapper import ChannelSparseUpdate

__all__ = [
    # transforms
    "wrap",
    "attach",
    "strip",
    # layers inside custom layers (transformer blocks)
    "SparseSublayers",
    "SparseUpdatableLayer",
    # strategies
    "Strategy",
    "TraDy",
    "RandomChannels",
    "DetRGN",
    "SU",
    "SparseUpdateScheme",
    "Velocity",
    "WholeVariables",
    "SelectionContext",
    "STRATEGIES",
    "PAPER_SCHEMES",
    # sampling at run time
    "Sampler",
    "sampler_of",
    "resample",
    "draws",
    "selection",
    "set_selection",
    "sparse_layers",
    "sparse_kernels",
    "reset_optimizer_state",
    "check_optimizer",
    # callbacks
    "ChannelResampler",
    "EfficiencyLogger",
    "SelectionSummaries",
    # costs and efficiency
    "CostTable",
    "LayerCost",
    "cost_table",
    "parse_budget",
    "units_from_bytes",
    "channel_norms",
    "Efficiency",
    "efficiency",
    # layer preselection
    "LayerRanking",
    "rank_layers",
    # layers
    "ChannelSparseUpdate",
    "CompactReLU",
    # what a train step keeps (a module: memory.retained_bytes, memory.retained_tensors)
    "memory",
    # frozen segments recomputed in the backward pass (a module: recompute.installed, ...)
    "recompute",
]
