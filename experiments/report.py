"""Writes docs/RESULTS.md (and its plots) from the sweep's JSON files; no number is typed by hand.

    python experiments/report.py          # docs/RESULTS.md, docs/figures/*.png
    python experiments/report.py --smoke  # experiments/results/smoke/RESULTS.md, of the smoke cells

Reads the cells' JSON under experiments/results/ and, for the columns the user-facing benchmarks
measure, their JSON under benchmarks/results/ (memory.json, px_collapse.json, rankings/). Plots need
matplotlib (the `plots` extra).
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout: experiments, and its tf_tradyx

import tf_tradyx as tx  # noqa: E402
from experiments.cells import (  # noqa: E402
    PRETRAINED_METHODS,
    PRETRAINED_SPARSITIES,
    PX_METHODS,
    PX_VARIANTS,
    ROOT,
    TRADI_LONG,
    cell_id,
    px_pretrained_cells,
    results_dir,
    tradi_cells,
    tradi_long_cells,
)

BENCHMARK_RESULTS = os.path.join(ROOT, "benchmarks", "results")  # written by benchmarks/*.py
LABELS = {
    "dense": "Dense",
    "random": "Random",
    "magnitude": "Magnitude",
    "snip": "SNIP",
    "grasp": "GraSP",
    "synflow": "SynFlow (100 rounds)",
    "itersnip": "Iterative SNIP (100)",
    "ntk_sap": "NTK-SAP (20 rounds)",
    "prospr": "ProsPr",
    "px": "PX (100 rounds)",
    "px_floor": "PX, layer floor 0.005 (variant)",
}
TRADI_LABELS = {
    "full": "Full fine-tuning",
    "classifier": "Classifier only",
    "bias": "Bias only",
    "su": "SU (MCUNetV3 scheme)",
    "static_full_random": "Static Full Random",
    "dynamic_full_random": "Dynamic Full Random",
    "static_topk_random": "Static TopK Random",
    "tradi": "TraDy (dynamic TopK Random)",
    "dynamic_det_rgn": "Dynamic Det RGN",
    "velocity": "Velocity (weight-only budget)",
}
# One training step holds one selection, so a static variant costs what its dynamic one does and
# static TopK Random what TraDy does (same layers, same budget).
MEMORY_LABELS = {
    "full": "full",
    "classifier": "classifier",
    "bias": "bias",
    "su": "su",
    "tradi": "tradi",
    "static_topk_random": "tradi",
    "static_full_random": "dynamic_full_random",
    "dynamic_full_random": "dynamic_full_random",
    "dynamic_det_rgn": "dynamic_det_rgn",
}


def _load(directory):
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            payload = json.load(f)
        if "cell" in payload:
            out.append(payload)
    return out


def _pct(v):
    return "pending" if v is None else f"{100 * v:.2f}"


def _mean_std(values):
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _within_noise(a, b, noise, what="the difference"):
    """A note when two means differ by less than the largest seed std measured (None: unmeasured)."""
    if noise is None or abs(a - b) > noise:
        return ""
    return (
        f"; {what}, {_pct(abs(a - b))}, is within the largest seed std, {_pct(noise)}, "
        "so these seeds do not separate the two"
    )


def _mean_std_text(mean, std, n):
    if mean is None:
        return "pending"
    return f"{_pct(mean)} (1 seed)" if n == 1 else f"{_pct(mean)} ± {_pct(std)}"


def _px_section(cells, figdir, smoke):
    short = [c for c in cells if c["cell"]["epochs"] <= 3 or smoke]
    lines = ["## PX and its baselines: ResNet-20 on CIFAR-10", ""]
    if not cells:
        return lines + ["No cell has finished yet.", ""]
    sparsities = sorted(
        {c["cell"]["sparsity"] for c in short if c["cell"]["method"] != "dense"}
        | ({0.8926, 0.982} if not smoke else set())
    )
    acc = {(c["cell"]["method"], c["cell"]["sparsity"]): c["test_accuracy"] for c in short}
    dense = next((c["test_accuracy"] for c in short if c["cell"]["method"] == "dense"), None)
    epochs = short[0]["cell"]["epochs"] if short else 3
    lines += [
        f"Test accuracy (%) after {epochs} epochs, one seed; data: {_data_label(cells[0]['data'])}. "
        f"Dense: {_pct(dense)}.",
        "",
        "| method | "
        + " | ".join(f"{s:.2%} sparse" for s in sparsities)
        + f" | scoring time at {max(sparsities):.2%} |",
        "|---|" + "---|" * (len(sparsities) + 1),
    ]
    for m in PX_METHODS[1:] + list(PX_VARIANTS):
        t = next(
            (
                c.get("scoring_seconds")
                for c in short
                if c["cell"]["method"] == m and abs(c["cell"]["sparsity"] - max(sparsities)) < 1e-9
            ),
            None,
        )
        lines.append(
            f"| {LABELS[m]} | "
            + " | ".join(_pct(acc.get((m, s))) if _planned(m, s) else "not run" for s in sparsities)
            + f" | {'pending' if t is None else f'{t:.1f} s'} |"
        )
    lines += [
        "",
        "Scoring time is the wall clock of the pruning call inside the cell (100 images, "
        "rounds as labelled); `benchmarks/pruning_speed.py` times all methods side by side.",
        "",
    ]
    long_cells = [c for c in cells if c["cell"]["epochs"] == 10]
    if long_cells:
        lines += [
            "10 epochs at 98.20 % sparsity, seeds 0, 1, 2 (mean ± standard deviation):",
            "",
            "| method | seed 0 | seed 1 | seed 2 | mean ± std | below dense | "
            "empty layers per seed |",
            "|---|---|---|---|---|---|---|",
        ]
        dense_mean = _mean_std(
            [c["test_accuracy"] for c in long_cells if c["cell"]["method"] == "dense"]
        )[0]
        for m in ("dense", "snip", "synflow", "px"):
            mine = {c["cell"]["seed"]: c for c in long_cells if c["cell"]["method"] == m}
            by_seed = {s: c["test_accuracy"] for s, c in mine.items()}
            mean, std = _mean_std(list(by_seed.values()))
            below = (
                "n/a"
                if m == "dense"
                else "pending"
                if None in (mean, dense_mean)
                else f"{_pct(dense_mean - mean)} points"
            )
            empty = (
                "n/a"
                if m == "dense"
                else ", ".join(
                    str(len(_empty(mine[s]["layers"]))) if s in mine else "pending"
                    for s in (0, 1, 2)
                )
            )
            lines.append(
                f"| {LABELS[m]} | "
                + " | ".join(_pct(by_seed.get(s)) for s in (0, 1, 2))
                + f" | {_mean_std_text(mean, std, len(by_seed))} | {below} | {empty} |"
            )
        lines += [
            "",
            "*below dense*: the dense mean minus the method's mean, over the seeds each "
            "has finished. *empty layers*: layers whose mask keeps no weight. The seed sets the "
            "initialization and the order of training batches; the 100 pruning images are "
            "the same for every seed.",
            "",
        ]
    high = max(sparsities) if sparsities else None
    layer_rows = {
        c["cell"]["method"]: c["layers"]
        for c in short
        if high is not None
        and c["cell"]["method"] != "dense"
        and abs(c["cell"]["sparsity"] - high) < 1e-9
    }
    if {"px", "synflow", "snip"} & set(layer_rows):
        png = _density_plot(layer_rows, figdir, high)
        lines += [
            f"Per-layer density and fraction of connected output channels at {high:.2%}:",
            "",
            f"![per-layer density]({os.path.relpath(png, os.path.join(ROOT, 'docs'))})",
            "",
            "| method | min layer density | collapsed layers | mean connected outputs "
            "| kept weights > 0 |",
            "|---|---|---|---|---|",
        ]
        for m, rows in sorted(layer_rows.items(), key=lambda item: list(LABELS).index(item[0])):
            lines.append(
                f"| {LABELS[m]} | {min(r['density'] for r in rows):.4f} | "
                f"{len(_empty(rows))} | "
                f"{statistics.mean(r['connected_outputs'] for r in rows):.3f} | "
                f"{_positive(rows)} |"
            )
        lines += [
            "",
            "*kept weights > 0*: the share of kept weights that are positive, over the "
            "network; a sign-blind criterion keeps about half.",
            "",
        ]
    lines += _sign_bias_lines(short)
    lines += ["Claims under test (METHODS.md 2.5), checked on these numbers:", ""]
    long_means = {}
    for c in cells:
        if c["cell"]["epochs"] == 10:
            long_means.setdefault(c["cell"]["method"], {})[c["cell"]["seed"]] = c["test_accuracy"]
    variants = {m for m, _ in acc if m in PX_VARIANTS}
    lines += _px_claims(
        {k: a for k, a in acc.items() if k[0] not in variants},
        {m: r for m, r in layer_rows.items() if m not in variants},
        high,
        long_means,
    )
    if high is not None and ("px_floor", high) in acc and ("px", high) in acc:
        floor = layer_rows.get("px_floor", [])
        better = acc[("px_floor", high)] > acc[("px", high)]
        lines.append(
            f"- Not a claim: PX with a per-layer floor (`min_density=0.005`) empties "
            f"{len(_empty(floor))} layers and reaches "
            f"{_pct(acc[('px_floor', high)])} at {high:.2%} (plain PX "
            f"{_pct(acc[('px', high)])}), 3 epochs, one seed: keeping the branches alive "
            f"{'raises' if better else 'does not raise'} short-run accuracy here."
        )
    return lines + [""]


def _planned(method, sparsity):
    """Whether the sweep runs `method` at `sparsity`: a variant runs at 98.2 % only."""
    return method not in PX_VARIANTS or abs(sparsity - 0.982) < 1e-9


def _empty(rows):
    """Layers (names without the kernel suffix) whose masks keep no weight."""
    return [r["name"].split("/")[0] for r in rows if r["kept"] == 0]


def _positive(rows):
    rows = [r for r in rows if "kept_positive" in r and r["kept"]]
    if not rows:
        return "n/a"
    return f"{sum(r['kept_positive'] * r['kept'] for r in rows) / sum(r['kept'] for r in rows):.2f}"


def _sign_bias_lines(cells):
    """GraSP's kept set is sign-biased (theta * Hg favours one sign per layer); shown per sparsity
    next to its accuracy because it explains GraSP's slow start in the short protocol."""
    rows = sorted(
        (c["cell"]["sparsity"], c["cell"]["method"], _positive(c["layers"]), c)
        for c in cells
        if c["cell"]["method"] != "dense"
    )
    if not any(p != "n/a" for _, _, p, _ in rows):
        return []
    methods = [m for m in LABELS if m != "dense" and any(r[1] == m for r in rows)]
    sparsities = sorted({r[0] for r in rows})
    table = {(s, m): p for s, m, p, _ in rows}
    first = {(s, m): c["train_loss"][0] for s, m, _, c in rows}
    lines = [
        "Share of kept weights that are positive, and the first epoch's mean training loss "
        "(ln 10 = 2.30 is chance):",
        "",
        "| method | " + " | ".join(f"{s:.2%}: > 0 / loss" for s in sparsities) + " |",
        "|---|" + "---|" * len(sparsities),
    ]
    for m in methods:
        lines.append(
            f"| {LABELS[m]} | "
            + " | ".join(
                f"{table.get((s, m), 'pending')} / {first[(s, m)]:.2f}"
                if (s, m) in first
                else "pending"
                if _planned(m, s)
                else "not run"
                for s in sparsities
            )
            + " |"
        )
    lines.append("")
    biased = {}
    for (s, m), p in sorted(table.items()):
        if p != "n/a" and float(p) >= 0.6:
            biased.setdefault(m, []).append(s)
    for m, at in biased.items():
        lines += [
            f"{LABELS[m]} keeps a sign-biased set: "
            + ", ".join(
                f"{table[(s, m)]} of its kept weights are positive at {s:.2%} "
                f"(first-epoch loss {first[(s, m)]:.2f})"
                for s in at
            )
            + ". A layer "
            "whose kept weights are mostly of one sign sums its (post-ReLU, non-negative) "
            "inputs with one sign, which plausibly explains the slow start; that link is "
            "not proven here. The score itself is checked: H g matches finite "
            "differences (tests/test_pruning.py) and the convention (theta * Hg, lowest "
            "removed, temperature 200, inference mode) is METHODS.md's.",
            "",
        ]
    return lines


def _px_long_claim(runs, methods=("px", "snip", "synflow"), planned_seeds=3):
    """The 10-epoch claim, judged on the seeds every compared method has finished.

    Comparing means over different seed sets would mix seed luck into the verdict, so a seed only
    counts once PX, SNIP and SynFlow all have it; until all planned seeds are in the line says so.
    """
    if not all(runs.get(m) for m in methods):
        return []
    seeds = sorted(set.intersection(*(set(runs[m]) for m in methods)))
    if not seeds:
        return []
    stats = {m: _mean_std([runs[m][s] for s in seeds]) for m in methods}
    best = max(methods[1:], key=lambda m: stats[m][0])
    holds = stats["px"][0] >= stats[best][0]
    spread = max(std for _, std in stats.values()) if len(seeds) > 1 else None
    status = (
        ""
        if len(seeds) >= planned_seeds
        else f", provisional ({len(seeds)} of {planned_seeds} seeds in)"
    )
    line = (
        f"- PX >= SNIP and SynFlow at 98.20%, 10 epochs, mean of {len(seeds)} "
        f"seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}){status}: "
        f"{'holds' if holds else 'does not hold'} (PX {_pct(stats['px'][0])}, "
        f"best {LABELS[best]} {_pct(stats[best][0])}"
        f"{_within_noise(stats['px'][0], stats[best][0], spread)})."
    )
    return [line]


def _px_claims(acc, layer_rows, high, long_means=None):
    if high is None:
        return ["- pending"]
    at = {m: a for (m, s), a in acc.items() if abs(s - high) < 1e-9 and m != "dense"}
    out = []
    if "px" in at and len(at) > 1:
        others = {m: a for m, a in at.items() if m != "px"}
        best = max(others, key=others.get)
        out.append(
            f"- PX >= every baseline at {high:.2%}, 3 epochs, one seed: "
            f"{'holds' if at['px'] >= others[best] else 'does not hold'} (PX {_pct(at['px'])}, "
            f"best baseline {LABELS[best]} {_pct(others[best])})."
        )
    out += _px_long_claim(long_means or {})
    if "random" in at and len(at) > 1:
        worse = [LABELS[m] for m, a in at.items() if m != "random" and a <= at["random"]]
        out.append(
            "- every method beats Random: "
            + ("holds." if not worse else f"does not hold for {', '.join(worse)}.")
        )
    if "px" in layer_rows:
        empty = _empty(layer_rows["px"])
        line = (
            f"- PX leaves no layer collapsed: {'holds' if not empty else 'does not hold'} "
            f"(seed 0: {len(empty)} empty layers{': ' + ', '.join(empty) if empty else ''}"
            f"{'; the 10-epoch table counts them for every seed' if long_means else ''})."
        )
        if empty and all(re.fullmatch(r"stage\d_block\d_[12]_conv", n) for n in empty):
            line += (
                " All are convs of residual branches: the network stays connected through the "
                "shortcuts, so it still trains, but those blocks are gone. Why: PX's data term "
                "z1 weights only the 10 outputs, so inside the network the scores follow the "
                "theta^2 path mass, which a residual branch shares over many more weights than "
                "its shortcut; global iterative pruning thins the branch first and its mass, a "
                "product over two convs, then falls faster than the shortcut's."
            )
        out.append(line + _collapse_check())
        conn = {
            m: statistics.mean(r["connected_outputs"] for r in rows)
            for m, rows in layer_rows.items()
        }
        rivals = [m for m in ("snip", "grasp") if m in conn]
        if rivals:
            ok = all(conn["px"] > conn[m] for m in rivals)
            out.append(
                f"- PX keeps more output channels connected than "
                f"{' and '.join(LABELS[m] for m in rivals)}: {'holds' if ok else 'does not hold'} ("
                + ", ".join(f"{LABELS[m]} {conn[m]:.3f}" for m in ["px", *rivals])
                + ")."
            )
    return out or ["- pending"]


def _collapse_check():
    """A sentence from benchmarks/px_collapse.py: does the collapse survive data-calibrated BN
    statistics, and does a per-layer floor prevent it?"""
    path = os.path.join(BENCHMARK_RESULTS, "px_collapse.json")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        rows = {(r["method"], r["bn"], r["min_density"] > 0): r for r in json.load(f)["rows"]}
    parts = []
    cal, syn, syn_cal = (
        rows.get(k)
        for k in [
            ("px", "calibrated", False),
            ("synflow", "init", False),
            ("synflow", "calibrated", False),
        ]
    )
    if cal:
        parts.append(
            f"with every BN layer's moving statistics set from the pruning batch, PX still "
            f"empties {cal['empty']} layers"
            + (
                f" and SynFlow {syn_cal['empty']} (it empties {syn['empty']} with the fresh "
                f"statistics)"
                if syn and syn_cal
                else ""
            )
        )
    floor = rows.get(("px", "init", True))
    if floor:
        parts.append(
            f"`min_density={floor['min_density']:g}` keeps every layer (empty: "
            f"{floor['empty']}, mean connected outputs {floor['connected_outputs']:.3f})"
        )
    if not parts:
        return ""
    return (
        " Not an artefact of BN statistics at initialization (benchmarks/px_collapse.py, "
        "pruning only): " + "; ".join(parts) + "."
    )


def _data_label(label):
    """The sweep records where its data came from; a reader needs to know only which data."""
    return label.replace(" (../shared archive)", " (all 50,000 training and 10,000 test images)")


def _figure(figsize):
    """A matplotlib `Figure` made without pyplot: no backend is switched, no global figure kept."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _save(fig, figdir, name):
    os.makedirs(figdir, exist_ok=True)
    fig.tight_layout()
    path = os.path.join(figdir, name)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # a legend outside the axes stays in
    return path


def _short_layer(name):
    """ResNet-20's kernel names as tick labels: "stage2_block1_1_conv/kernel" -> "2.1a"."""
    m = re.match(r"stage(\d+)_block(\d+)_(\d+)_conv", name)
    if m:
        return f"{m[1]}.{m[2]}{'ab'[int(m[3]) - 1] if m[3] in '12' else m[3]}"
    m = re.match(r"stage(\d+)_block(\d+)_shortcut", name)
    if m:
        return f"{m[1]}.{m[2]}s"
    return name.split("/")[0].replace("_conv", "").replace("classifier", "fc")


def _density_plot(layer_rows, figdir, sparsity):
    fig = _figure((9, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    names = []
    for m in ("px", "synflow", "snip", "grasp"):
        if m in layer_rows:
            names = names or [r["name"] for r in layer_rows[m]]
            top.plot([max(r["density"], 1e-5) for r in layer_rows[m]], marker=".", label=LABELS[m])
            bottom.plot(
                [r["connected_outputs"] for r in layer_rows[m]], marker=".", label=LABELS[m]
            )
    stages = [re.match(r"stage(\d+)", n) for n in names]
    for i in range(1, len(names)):  # a line where each stage starts
        here, before = stages[i], stages[i - 1]
        if here and (not before or here[1] != before[1]):
            for ax in (top, bottom):
                ax.axvline(i - 0.5, color="0.8", lw=0.8, zorder=0)
    top.set_yscale("log")
    top.set_ylabel("density (log; empty = 1e-5)")
    top.set_title(
        f"ResNet-20 per layer at {sparsity:.2%} sparsity "
        "(ticks: stage.block, a/b = first/second conv, s = shortcut)",
        fontsize=10,
    )
    top.legend(fontsize=8, ncols=2)
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("connected output channels")
    bottom.set_xticks(range(len(names)), [_short_layer(n) for n in names], rotation=90, fontsize=8)
    bottom.set_xlabel("layer, in graph order")
    return _save(fig, figdir, "px_layer_density.png")


def _ranking_plot(ranking, figdir):
    fig = ranking.figure(0.97)
    fig.axes[0].set_title(
        f"MobileNetV2-w0.35: {len(ranking.top_k(0.97))} of {len(ranking.scores)} layers hold "
        "97 % of the RGN"
    )
    return _save(fig, figdir, "ranking_mbv2-w0.35.png")


def _memory(smoke):
    path = os.path.join(BENCHMARK_RESULTS, "memory.json")
    if smoke or not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = json.load(f)["rows"]
    out = {}
    for r in rows:
        if (
            r["net"] == "mbv2-w0.35"
            and r["batch"] == 64
            and not r.get("simulate")
            and (r["budget"] in (None, 27946))
        ):
            out[r["strategy"]] = r["tensor_overhead_mb"]
    return out


def _ranking_lines(smoke, figdir):
    path = os.path.join(results_dir(smoke), "tradi", "ranking_mbv2-w0.35.json")
    if not os.path.exists(path):
        return ["Layer ranking: pending.", ""]
    ranking = tx.sparse_update.LayerRanking.load(path)
    k = len(ranking.top_k(0.97))
    png = _ranking_plot(ranking, figdir)
    lines = [
        f"Layer ranking (RGN over {ranking.info.get('epochs')} epochs of full fine-tuning, "
        f"{ranking.info.get('steps')} steps, shuffled batches): {k} of {len(ranking.scores)} "
        f"layers hold 97 % of the RGN; highest: {', '.join(ranking.ranked[:3])}. The ranking "
        f"is `{os.path.relpath(path, ROOT)}` in the repository.",
        "",
        f"![cumulative RGN]({os.path.relpath(png, os.path.join(ROOT, 'docs'))})",
        "",
    ]
    other_path = os.path.join(BENCHMARK_RESULTS, "rankings", "mbv2-w0.35.json")
    if not smoke and os.path.exists(other_path):
        other = tx.sparse_update.LayerRanking.load(other_path)
        mine, theirs = ranking.top_k(0.97), other.top_k(0.97)
        lines += [
            f"The ranking is a property of the architecture (the paper: Spearman >= 0.8 across "
            f"datasets and seeds): against the ranking from {other.info.get('epochs')} epoch "
            f"on the bundled 1,000-image sample (`benchmarks/results/rankings/`, used by the "
            f"memory benchmark), Spearman {ranking.spearman(other):.3f}; that one keeps "
            f"{len(theirs)} layers, {len(set(mine) ^ set(theirs))} differ. The memory column "
            f"below was measured with its set; its earliest layer is {theirs[0]}, this one's "
            f"{mine[0]}"
            + (
                ", so it reaches at least as deep into the network."
                if ranking.layers.index(theirs[0]) <= ranking.layers.index(mine[0])
                else "."
            ),
            "",
        ]
    return lines


def _tradi_section(cells, figdir, smoke):
    lines = ["## TraDy and its baselines: pretrained MobileNetV2-w0.35 (128 px) on CIFAR-10", ""]
    lines += _ranking_lines(smoke, figdir)
    if not cells:
        return lines + ["No cell has finished yet.", ""]
    memory = _memory(smoke)
    c0 = cells[0]
    lines += [
        f"Training set: {c0['train_images']:,} class-balanced images of the training split; "
        f"evaluation: the full test split; {c0['cell']['epochs']} epochs, SGD without momentum, "
        "peak learning rate 0.0125 with 1 warm-up epoch and cosine decay, batch 64; budget "
        "27,946 units. Memory: training overhead above the forward pass at batch 64, "
        "measured (benchmarks/memory.py, TensorFlow allocator); one step holds one selection, so "
        "a static variant shows the figure of its dynamic counterpart.",
        "",
        "| strategy | accuracy % (seeds) | mean | units | activation sparsity | "
        "weight-derivative sparsity | FLOPs saved | memory overhead MB | training min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    means = {}
    for s, label in TRADI_LABELS.items():
        runs = sorted(
            (c for c in cells if c["cell"]["strategy"] == s), key=lambda c: c["cell"]["seed"]
        )
        if not runs:
            lines.append(f"| {label} | pending | | | | | | | |")
            continue
        accs = [c["test_accuracy"] for c in runs]
        mean, std = _mean_std(accs)
        means[s] = (mean, std, len(accs))
        e = runs[0]["efficiency"]
        mem = memory.get(MEMORY_LABELS.get(s, ""))
        lines.append(
            f"| {label} | {', '.join(_pct(a) for a in accs)} | {_pct(mean)}"
            f"{' ± ' + _pct(std) if len(accs) > 1 else ''} | {e['units']:,} | "
            f"{e['activation_sparsity']:.1%} | {e['weight_derivative_sparsity']:.1%} | "
            f"{e['weight_derivative_flops_saved']:.1%} | "
            f"{'' if mem is None else f'{max(mem, 0.0):.1f}'} | "
            f"{statistics.mean(c['train_seconds'] for c in runs) / 60:.1f} |"
        )
    total = sum(c["train_seconds"] for c in cells)
    lines += [
        "",
        f"*training min*: wall clock of `fit` per run (mean over seeds) on the 2 shared "
        f"cores, so only a rough guide; all {len(cells)} runs so far took {total / 3600:.2f} h "
        "of training.",
    ]
    lines.append("")
    if memory and means:
        png = _accuracy_memory_plot(means, memory, figdir)
        lines += [
            f"![accuracy against memory]({os.path.relpath(png, os.path.join(ROOT, 'docs'))})",
            "",
        ]
    lines += ["Claims under test (METHODS.md 1.5-1.8), checked on these numbers:", ""]
    lines += _tradi_claims(means)
    units = {c["cell"]["strategy"]: c["efficiency"]["units"] for c in cells}
    if "velocity" in units and "tradi" in units:
        lines.append(
            f"- Not a claim, what the budgets hide: Velocity's budget counts weights only; the "
            f"neurons it selects keep {units['velocity']:,} units (their weights plus the whole "
            f"input map of every layer with a selected neuron), {units['velocity'] / units['tradi']:.0f} "
            f"times TraDy's {units['tradi']:,}, whose budget counts both."
        )
    return lines + [""]


def _strategy_means(cells):
    """{strategy: (mean, std, seeds)} of test accuracy."""
    out = {}
    for s in {c["cell"]["strategy"] for c in cells}:
        accs = [c["test_accuracy"] for c in cells if c["cell"]["strategy"] == s]
        out[s] = (*_mean_std(accs), len(accs))
    return out


def _tradi_claims(means):
    def m(s):
        return means[s][0] if s in means else None

    stds = [v[1] for v in means.values() if v[2] > 1]
    noise = max(stds) if stds else None

    def resolved(a, b, what="the difference"):
        return _within_noise(a, b, noise, what)

    out = []
    rivals = [
        r for r in ("su", "velocity", "static_full_random", "static_topk_random") if r in means
    ]
    if m("tradi") is not None and rivals:
        ok = all(m("tradi") >= m(r) for r in rivals)
        closest = min(rivals, key=lambda r: abs(m("tradi") - m(r)))
        out.append(
            "- TraDy >= SU, Velocity and every static variant: "
            + ("holds" if ok else "does not hold")
            + " ("
            + ", ".join(f"{TRADI_LABELS[r]} {_pct(m(r))}" for r in rivals)
            + f"; TraDy {_pct(m('tradi'))}"
            + resolved(m("tradi"), m(closest), f"the gap to {TRADI_LABELS[closest]}")
            + ")."
        )
    for dyn, static in (
        ("dynamic_full_random", "static_full_random"),
        ("tradi", "static_topk_random"),
    ):
        if m(dyn) is not None and m(static) is not None:
            out.append(
                f"- dynamic beats static ({TRADI_LABELS[dyn]} vs {TRADI_LABELS[static]}): "
                f"{'holds' if m(dyn) > m(static) else 'does not hold'} "
                f"({_pct(m(dyn))} vs {_pct(m(static))}"
                f"{resolved(m(dyn), m(static))})."
            )
    if m("tradi") is not None and m("full") is not None:
        gap = 100 * (m("full") - m("tradi"))
        out.append(
            f"- TraDy within 3 points of full fine-tuning: "
            f"{'holds' if gap <= 3 else 'does not hold'} (gap {gap:.2f} points)."
        )
    spread = [f"{TRADI_LABELS[r]} ±{_pct(v[1])}" for r, v in means.items() if v[2] > 1]
    if spread:
        out.append("- seed spread (std over two seeds): " + ", ".join(spread) + ".")
    return out or ["- pending"]


def _accuracy_memory_plot(means, memory, figdir):
    """Accuracy against measured memory, one marker per strategy named in a legend (points that
    share a spot stay readable), the seed std as capped error bars."""
    fig = _figure((8, 4.2))
    ax = fig.subplots()
    markers = "osD^v<>ph*X"
    placed = []
    for i, (s, (mean, std, seeds)) in enumerate(means.items()):
        mem = memory.get(MEMORY_LABELS.get(s, ""))
        if mem is None:
            continue
        x = max(mem, 0.05)
        while any(abs(x / px - 1) < 0.1 and abs(mean - py) < 0.004 for px, py in placed):
            x *= 1.25  # side by side, not on top of each other: the legend names each marker
        placed.append((x, mean))
        label = TRADI_LABELS[s] + (f" (±{100 * std:.2f}, {seeds} seeds)" if seeds > 1 else "")
        ax.errorbar(
            x,
            100 * mean,
            yerr=100 * std if seeds > 1 else None,
            fmt=markers[i % len(markers)],
            markersize=5,
            capsize=6,
            elinewidth=1.5,
            capthick=1.5,
            alpha=0.85,
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xlabel(
        "measured training-memory overhead, MB (batch 64; below 0.05 drawn at 0.05; "
        "equal points side by side)"
    )
    ax.set_ylabel("test accuracy %")
    ax.set_title("CIFAR-10, 9 epochs; error bars: ± std over the seeds (legend)", fontsize=9)
    ax.grid(True, which="major", color="0.9")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return _save(fig, figdir, "tradi_accuracy_memory.png")


def _px_pretrained_section(cells, dense, smoke):
    """PX's second setting: prune the pretrained network, then fine-tune it (one seed)."""
    lines = [
        "## PX on a pretrained network: MobileNetV2-w0.35 (ImageNet) pruned, then fine-tuned on "
        "CIFAR-10",
        "",
    ]
    if not cells:
        return lines + [
            "No cell has finished yet (`python experiments/sweep.py px-pretrained`).",
            "",
        ]
    c0 = cells[0]
    lines += [
        "This network has no BatchNormalization layer (it is folded into the convs of the shipped "
        "files), so nothing rescales a thinned layer's output during fine-tuning. "
        "Each method prunes every conv of the ImageNet-pretrained network (the new 10-class head "
        "stays dense; it has random weights while the scorers run, then starts fine-tuning from "
        f"zero) on 10 images per class; then every unpruned weight is fine-tuned on "
        f"{c0['train_images']:,} class-balanced training images for {c0['cell']['epochs']} epochs "
        "with the TraDy table's protocol (SGD, peak learning rate 0.0125, 1 warm-up epoch, cosine, "
        "batch 64); test accuracy on the full test split, one seed. Pruned weights stay exactly "
        "zero through fine-tuning (checked in every cell). Dense: the TraDy table's full "
        f"fine-tuning, seed 0: {_pct(dense)}.",
        "",
        "| method | "
        + " | ".join(f"{s:.0%} sparse: accuracy / empty layers" for s in PRETRAINED_SPARSITIES)
        + " | scoring time at 80 % (a busy machine) |",
        "|---|" + "---|" * (len(PRETRAINED_SPARSITIES) + 1),
    ]
    got = {(c["cell"]["method"], c["cell"]["sparsity"]): c for c in cells}
    for m in PRETRAINED_METHODS:
        cols = []
        for sp in PRETRAINED_SPARSITIES:
            c = got.get((m, sp))
            cols.append(
                "pending"
                if c is None
                else f"{_pct(c['test_accuracy'])} / {len(_empty(c['layers']))}"
            )
        t = got.get((m, 0.8), {}).get("scoring_seconds")
        lines.append(
            f"| {LABELS[m]} | {' | '.join(cols)} | {'pending' if t is None else f'{t:.1f} s'} |"
        )
    lines += [
        "",
        *_pretrained_losses(got),
        "",
        "Claim under test (METHODS.md 2.5, the PX paper's transfer setting):",
        "",
    ]
    for sp in PRETRAINED_SPARSITIES:
        at = {m: got[(m, sp)]["test_accuracy"] for m in PRETRAINED_METHODS if (m, sp) in got}
        if "px" not in at or len(at) < len(PRETRAINED_METHODS):
            lines.append(f"- PX keeps accuracy closest to dense at {sp:.0%} sparsity: pending.")
            continue
        ref = dense if dense is not None else max(at.values())
        closest = min(at, key=lambda m: abs(ref - at[m]))
        lines.append(
            f"- PX keeps accuracy closest to dense at {sp:.0%} sparsity: "
            f"{'holds' if closest == 'px' else 'does not hold'} (PX {_pct(at['px'])}"
            + ("" if closest == "px" else f", closest {LABELS[closest]} {_pct(at[closest])}")
            + f", dense {_pct(dense)})."
        )
    return lines + [""]


def _pretrained_losses(got):
    """Why a cell ends at chance: its training loss per epoch (first, highest, last), and whether
    its masks cut the network (`connected`: the share of outputs still joined to the input)."""
    lines = [
        "Training loss per epoch (chance: ln 10 = 2.30), first / highest / last, and the share of "
        "the network's outputs still joined to its input by kept weights:",
        "",
        "| method | sparsity | first | highest | last | outputs joined to the input |",
        "|---|---|---|---|---|---|",
    ]
    for (m, sp), c in sorted(got.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        loss = c["history"]["loss"]
        joined = c.get("connected")
        lines.append(
            f"| {LABELS[m]} | {sp:.0%} | {loss[0]:.2f} | {max(loss):.2f} | {loss[-1]:.2f} | "
            f"{'n/a' if joined is None else f'{joined:.0%}'} |"
        )
    lines.append("")
    chance = [(m, sp) for (m, sp), c in got.items() if c["history"]["loss"][-1] > 2.25]
    for m, sp in sorted(chance, key=lambda k: (-k[1], k[0])):
        c = got[(m, sp)]
        loss = c["history"]["loss"]
        why = (
            "its masks cut the network (no output depends on the input), so nothing can be learnt"
            if c.get("connected") == 0.0
            else f"the loss rose to {max(loss):.2f} (epoch {loss.index(max(loss)) + 1}) and came "
            "back only to chance: the fine-tuning diverged"
            if max(loss) > loss[0] + 0.2
            else "its loss stayed at chance from the first epoch"
        )
        lines.append(f"- {LABELS[m]} at {sp:.0%} ends at chance: {why}.")
    return lines


def _tradi_long_section(cells, short_means):
    """TraDy against SU at the long protocol, next to the 9-epoch figures."""
    lines = ["## TraDy vs SU at a longer protocol", ""]
    p = TRADI_LONG
    lines += [
        f"Every training image (50,000), {p['epochs']} epochs ({p['warmup_epochs']} of warm-up), "
        f"batch {p['batch']}, otherwise the TraDy table's protocol (SGD without momentum, peak "
        "learning rate 0.0125, cosine; 27,946 units for TraDy, the MCUNetV3 scheme for SU); two "
        "seeds each. An independent PyTorch simulation of the same methods at this protocol put "
        "TraDy ahead (80.5 vs 79.5)"
        + (
            f"; the 9-epoch table above has {'TraDy' if short_means['tradi'][0] > short_means['su'][0] else 'SU'} ahead."
            if {"tradi", "su"} <= set(short_means)
            else "."
        ),
        "",
        "| strategy | seed 0 | seed 1 | mean | 9-epoch mean (table above) | training h per run |",
        "|---|---|---|---|---|---|",
    ]
    means = {}
    for s in ("tradi", "su"):
        runs = {c["cell"]["seed"]: c for c in cells if c["cell"]["strategy"] == s}
        accs = [runs[k]["test_accuracy"] for k in sorted(runs)]
        mean, std = _mean_std(accs)
        if accs:
            means[s] = (mean, std, len(accs))
        hours = (
            f"{statistics.mean(c['train_seconds'] for c in runs.values()) / 3600:.2f}"
            if runs
            else "pending"
        )
        lines.append(
            f"| {TRADI_LABELS[s]} | {_pct(runs[0]['test_accuracy']) if 0 in runs else 'pending'} | "
            f"{_pct(runs[1]['test_accuracy']) if 1 in runs else 'pending'} | "
            f"{_mean_std_text(mean, std, len(accs))} | "
            f"{_pct(short_means[s][0]) if s in short_means else 'pending'} | {hours} |"
        )
    lines += ["", "Does the ordering flip with length?", ""]
    if len(means) == 2 and all(v[2] == 2 for v in means.values()):
        long_lead = means["tradi"][0] > means["su"][0]
        short_lead = (
            short_means["tradi"][0] > short_means["su"][0]
            if {"tradi", "su"} <= set(short_means)
            else None
        )
        noise = max(v[1] for v in means.values())
        lines.append(
            f"- at this protocol {'TraDy' if long_lead else 'SU'} leads "
            f"({_pct(means['tradi'][0])} vs {_pct(means['su'][0])}"
            f"{_within_noise(means['tradi'][0], means['su'][0], noise)}); at 9 epochs "
            f"{'TraDy' if short_lead else 'SU'} led: the ordering "
            f"{'flips' if short_lead is not None and long_lead != short_lead else 'does not flip'}."
        )
    else:
        lines.append(
            "- pending (both strategies need both seeds; `python experiments/sweep.py tradi --long`, "
            "hours per run, resumes by epoch)."
        )
    return lines + [""]


def render(smoke=False):
    """(path, text) of the report; draws its plots on the way."""
    base = results_dir(smoke)
    figdir = os.path.join(base if smoke else os.path.join(ROOT, "docs"), "figures")
    px = _load(os.path.join(base, "px"))
    planned = {cell_id(c) for c in tradi_cells(smoke)}  # cells of an older protocol are left out
    tradi = [c for c in _load(os.path.join(base, "tradi")) if cell_id(c["cell"]) in planned]
    lines = [
        "# Results",
        "",
        "Generated by `python experiments/report.py` from the JSON files in "
        "`experiments/results/`; nothing here is typed by hand. Reproduce a table with "
        "`python experiments/sweep.py px` (3-epoch sweep), `python experiments/sweep.py px --long` "
        "(10-epoch runs) or `python experiments/sweep.py tradi`, or all of them with "
        "`python experiments/sweep.py all`; cells that finished are not run again, and a cell "
        "stopped mid-training resumes from its last finished epoch. "
        "Machine: 2 CPU cores, no GPU.",
        "",
    ]
    lines += _px_section(px, figdir, smoke)
    lines += _tradi_section(tradi, figdir, smoke)
    long_ids = {cell_id(c) for c in tradi_long_cells(smoke)}
    tradi_long = [c for c in _load(os.path.join(base, "tradi")) if cell_id(c["cell"]) in long_ids]
    lines += _tradi_long_section(tradi_long, _strategy_means(tradi))
    pretrained_ids = {cell_id(c) for c in px_pretrained_cells(smoke)}
    pretrained = [
        c
        for c in _load(os.path.join(base, "px_pretrained"))
        if cell_id(c["cell"]) in pretrained_ids
    ]
    dense = next(
        (
            c["test_accuracy"]
            for c in tradi
            if c["cell"]["strategy"] == "full" and not c["cell"]["seed"]
        ),
        None,
    )
    lines += _px_pretrained_section(pretrained, dense, smoke)
    path = os.path.join(base, "RESULTS.md") if smoke else os.path.join(ROOT, "docs", "RESULTS.md")
    return path, "\n".join(lines)


def write(smoke=False):
    path, text = render(smoke)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the report of the smoke cells")
    print("wrote", write(smoke=parser.parse_args().smoke))


if __name__ == "__main__":
    main()
