"""The cells of the paper-claim sweep: what runs, in which order, and where each result is kept.

A cell is one training run, a JSON-able dict ({"suite": "px", "method": ..., "sparsity": ...,
"seed": ..., "epochs": ...} or {"suite": "tradi", "strategy": ..., "seed": ..., "epochs": ...});
its result is one JSON file, `<results>/<suite>/<cell_id>.json`. Shared by the runner (sweep.py)
and the report (report.py); imports nothing heavy.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")  # committed; smoke runs go to results/smoke/ (ignored)

PX_METHODS = [
    "dense",
    "random",
    "magnitude",
    "snip",
    "grasp",
    "synflow",
    "itersnip",
    "ntk_sap",
    "prospr",
    "px",
]
# Variants beyond the methods: name -> (pruner, keyword arguments). "px_floor" is PX with a
# per-layer floor, the remedy for the residual-branch collapse that RESULTS.md reports.
PX_VARIANTS = {"px_floor": ("px", {"min_density": 0.005})}
# Rounds of the iterative methods (the rest run one shot): the papers' settings; smoke runs take 5.
ROUNDS = {"synflow": 100, "itersnip": 100, "px": 100, "ntk_sap": 20}
PX_SPARSITIES = [0.8926, 0.982, 0.7379, 0.956]  # the last two "if time allows"
LONG_METHODS = ["px", "synflow", "snip", "dense"]
TRADI_STRATEGIES = [
    "full",
    "classifier",
    "bias",
    "su",
    "static_full_random",
    "dynamic_full_random",
    "static_topk_random",
    "tradi",
    "dynamic_det_rgn",
    "velocity",
]
TRADI_TWO_SEEDS = {"tradi", "su", "static_topk_random", "full"}
TRADI_BUDGET = 27_946
TRADI_TRAIN_PER_CLASS = 1_000  # 10,000 images, class-balanced, fixed
TRADI_EPOCHS = 9  # ~2.4 h for the 13 runs on 2 cores (6 epochs measured 1.5 h)
# The longer protocol, where an independent PyTorch simulation put TraDy ahead of SU: every
# training image, 30 epochs (5 of warm-up), batch 128; hours per run, so the cells resume by epoch.
TRADI_LONG = {"epochs": 30, "train_per_class": 5_000, "batch": 128, "warmup_epochs": 5}
TRADI_LONG_STRATEGIES = ["tradi", "su"]


def results_dir(smoke):
    return os.path.join(RESULTS, "smoke") if smoke else RESULTS


def px_cells(smoke, long_runs):
    if smoke:
        return [
            {"suite": "px", "method": m, "sparsity": 0.9, "seed": 0, "epochs": 1, "smoke": True}
            for m in ("dense", "random", "synflow", "px")
        ]
    if long_runs:  # The claim compares PX, SynFlow and SNIP over seeds; dense is the reference.
        order = [(m, s) for s in (0, 1, 2) for m in LONG_METHODS if m != "dense"]
        order += [("dense", s) for s in (0, 1, 2)]
        return [
            {"suite": "px", "method": m, "sparsity": 0.982, "seed": s, "epochs": 10}
            for m, s in order
        ]
    cells = [{"suite": "px", "method": "dense", "sparsity": 0.0, "seed": 0, "epochs": 3}]
    # The claims are judged at the highest sparsity: its cells run first, PX and SynFlow leading.
    order = [
        "px",
        "synflow",
        "snip",
        "random",
        "magnitude",
        "itersnip",
        "grasp",
        "ntk_sap",
        "prospr",
    ]
    for sparsity in sorted(PX_SPARSITIES, key=lambda s: s != 0.982):
        cells += [
            {"suite": "px", "method": m, "sparsity": sparsity, "seed": 0, "epochs": 3}
            for m in order
        ]
        if sparsity == 0.8926:  # Both required sparsities are done: the variants, at 98.2 %.
            cells += [
                {"suite": "px", "method": m, "sparsity": 0.982, "seed": 0, "epochs": 3}
                for m in PX_VARIANTS
            ]
    return cells


def tradi_cells(smoke):
    if smoke:
        return [
            {"suite": "tradi", "strategy": s, "seed": 0, "epochs": 1, "smoke": True}
            for s in ("classifier", "su", "tradi")
        ]
    cells = [
        {"suite": "tradi", "strategy": s, "seed": 0, "epochs": TRADI_EPOCHS}
        for s in TRADI_STRATEGIES
    ]
    cells += [
        {"suite": "tradi", "strategy": s, "seed": 1, "epochs": TRADI_EPOCHS}
        for s in TRADI_STRATEGIES
        if s in TRADI_TWO_SEEDS
    ]
    return cells


def tradi_long_cells(smoke):
    """TraDy and SU at the long protocol, two seeds each, alternating so the first pair compares."""
    if smoke:
        return [
            {"suite": "tradi", "strategy": s, "seed": 0, "epochs": 2, "train_per_class": 20,
             "batch": 32, "warmup_epochs": 1, "smoke": True}
            for s in TRADI_LONG_STRATEGIES
        ]  # fmt: skip
    return [
        {"suite": "tradi", "strategy": s, "seed": seed, **TRADI_LONG}
        for seed in (0, 1)
        for s in TRADI_LONG_STRATEGIES
    ]


# PX's second setting: prune the ImageNet-pretrained MobileNetV2-w0.35, then fine-tune it (all
# unpruned weights) on CIFAR-10 with the TraDy sweep's protocol. Dense: the TraDy sweep's "full" cell.
PRETRAINED_METHODS = ["px", "snip", "synflow", "magnitude", "random"]
PRETRAINED_SPARSITIES = [0.8, 0.5]


def px_pretrained_cells(smoke):
    if smoke:
        return [
            {"suite": "px_pretrained", "method": m, "sparsity": 0.8, "seed": 0, "epochs": 1,
             "smoke": True}
            for m in ("px", "magnitude")
        ]  # fmt: skip
    return [
        {"suite": "px_pretrained", "method": m, "sparsity": s, "seed": 0, "epochs": TRADI_EPOCHS}
        for s in PRETRAINED_SPARSITIES
        for m in PRETRAINED_METHODS
    ]


def all_cells():
    """Every cell of RESULTS.md in the order that settles the claims soonest: the PX sweep at the
    two required sparsities, the TraDy sweep, the 10-epoch PX runs, the optional sparsities, PX on
    the pretrained network, then the long TraDy-vs-SU runs."""
    px = px_cells(False, False)
    required = [c for c in px if c["sparsity"] in (0.0, 0.982, 0.8926)]
    optional = [c for c in px if c not in required]
    return (
        required
        + tradi_cells(False)
        + px_cells(False, True)
        + optional
        + px_pretrained_cells(False)
        + tradi_long_cells(False)
    )


def cell_id(cell):
    if cell["suite"] in ("px", "px_pretrained"):
        return f"{cell['method']}_s{cell['sparsity']:.4f}_seed{cell['seed']}_e{cell['epochs']}"
    name = f"{cell['strategy']}_seed{cell['seed']}_e{cell['epochs']}"
    if "train_per_class" in cell:  # a protocol other than the sweep's: say which in the name
        name += f"_n{10 * cell['train_per_class']}_b{cell['batch']}_w{cell['warmup_epochs']}"
    return name


def cell_path(cell):
    """The cell's result; it exists only once the cell is complete."""
    return os.path.join(
        results_dir(cell.get("smoke", False)), cell["suite"], cell_id(cell) + ".json"
    )


def backup_dir(cell):
    """The epoch checkpoint of an unfinished cell, a `keras.callbacks.BackupAndRestore` directory
    (see resumable.py); deleted once the cell's JSON is written."""
    return os.path.join(
        results_dir(cell.get("smoke", False)), cell["suite"], "partial", cell_id(cell)
    )
