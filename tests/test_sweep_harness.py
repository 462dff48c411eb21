"""The experiment harness behind docs/RESULTS.md: cell lists, resume, and the generated claim checks.

No training here: the claim checks run on hand-made cell results whose verdicts are known.
"""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import results_report  # noqa: E402
import sweep  # noqa: E402


def test_all_cells_hold_every_cell_once_in_claims_first_order():
    cells = sweep.all_cells()
    ids = [(c["suite"], sweep.cell_id(c)) for c in cells]
    assert len(ids) == len(set(ids))
    expected = (sweep.px_cells(False, False) + sweep.tradi_cells(False) + sweep.px_cells(False, True))
    assert sorted(ids) == sorted((c["suite"], sweep.cell_id(c)) for c in expected)
    kinds = [("long" if c.get("epochs") == 10 else c["suite"]) if c["suite"] == "px"
             and c["sparsity"] not in (0.7379, 0.956) else ("optional" if c["suite"] == "px" else "tradi")
             for c in cells]
    first = {k: kinds.index(k) for k in set(kinds)}
    last = {k: len(kinds) - 1 - kinds[::-1].index(k) for k in set(kinds)}
    assert last["px"] < first["tradi"] <= last["tradi"] < first["long"] <= last["long"] < first["optional"]
    # the highest sparsity runs first, PX leading
    assert [sweep.cell_id(c) for c in cells[1:3]] == ["px_s0.9820_seed0_e3", "synflow_s0.9820_seed0_e3"]
    # the 10-epoch runs: every seed of the claim's three methods before the dense reference
    long_ids = [sweep.cell_id(c) for c in sweep.px_cells(False, True)]
    assert len(long_ids) == 12 and all(i.startswith("dense") for i in long_ids[9:])
    assert long_ids[:3] == ["px_s0.9820_seed0_e10", "synflow_s0.9820_seed0_e10", "snip_s0.9820_seed0_e10"]
    # two seeds exactly where the issue asks
    seeds = {}
    for c in sweep.tradi_cells(False):
        seeds.setdefault(c["strategy"], set()).add(c["seed"])
    assert {s for s, v in seeds.items() if len(v) == 2} == sweep.TRADI_TWO_SEEDS


def test_finished_cells_are_not_run_again(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "results_dir", lambda smoke: str(tmp_path))
    cells = sweep.px_cells(True, False)[:2]
    for c in cells:
        os.makedirs(os.path.dirname(sweep.cell_path(c)), exist_ok=True)
        with open(sweep.cell_path(c), "w") as f:
            json.dump({"cell": c}, f)
    calls = []
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: calls.append(a))
    assert sweep.run_cells(cells, commit=False) == 0
    assert calls == []


def _layers(density, connected, positive=0.5):
    return [{"name": f"l{i}", "kept": 0 if d == 0 else 10, "density": d, "connected_outputs": c,
             "kept_positive": positive} for i, (d, c) in enumerate(zip(density, connected))]


def test_px_claim_checks():
    high = 0.982
    acc = {("px", high): 0.50, ("snip", high): 0.40, ("grasp", high): 0.30, ("random", high): 0.35,
           ("dense", 0.0): 0.70}
    layers = {"px": _layers([0.1, 0.02], [1.0, 0.9]), "snip": _layers([0.3, 0.0], [1.0, 0.0]),
              "grasp": _layers([0.2, 0.01], [1.0, 0.5])}
    out = "\n".join(results_report._px_claims(acc, layers, high))
    assert "PX >= every baseline at 98.20%, 3 epochs, one seed: holds" in out
    assert "best baseline SNIP 40.00" in out
    assert "every method beats Random: does not hold for GraSP." in out
    assert "PX leaves no layer collapsed: holds (seed 0: 0 empty layers)" in out
    assert "than SNIP and GraSP: holds (PX (100 rounds) 0.950, SNIP 0.500, GraSP 0.750)" in out
    acc[("snip", high)] = 0.55
    layers["px"] = _layers([0.0, 0.02], [0.0, 0.9])
    out = "\n".join(results_report._px_claims(acc, layers, high))
    assert "PX >= every baseline at 98.20%, 3 epochs, one seed: does not hold" in out
    long_runs = {"px": {0: 0.60, 1: 0.62, 2: 0.61}, "snip": {0: 0.58, 1: 0.66, 2: 0.60},
                 "synflow": {0: 0.59, 1: 0.6, 2: 0.61}, "dense": {0: 0.9, 1: 0.9, 2: 0.9}}
    out = "\n".join(results_report._px_claims(acc, layers, high, long_runs))
    assert ("10 epochs, mean of 3 seeds (0, 1, 2): does not hold (PX 61.00, best SNIP 61.33; "
            "the difference, 0.33, is within the largest seed std, 4.16, so these seeds do not separate "
            "the two)") in out
    long_runs["px"] = {0: 0.62, 1: 0.62, 2: 0.62}
    long_runs["snip"] = {0: 0.58, 1: 0.59, 2: 0.60}
    out = "\n".join(results_report._px_claims(acc, layers, high, long_runs))
    assert "10 epochs, mean of 3 seeds (0, 1, 2): holds (PX 62.00, best SynFlow (100 rounds) 60.00)." in out
    assert ("PX leaves no layer collapsed: does not hold (seed 0: 1 empty layers: l0; the "
            "10-epoch table counts them for every seed).") in out
    assert results_report._px_claims({}, {}, None) == ["- pending"]


def test_the_ten_epoch_claim_compares_only_seeds_every_method_has():
    runs = {"px": {0: 0.55}, "synflow": {0: 0.50}}
    assert results_report._px_long_claim(runs) == []  # SNIP not in yet: nothing to judge
    runs["snip"] = {1: 0.70}
    assert results_report._px_long_claim(runs) == []  # no seed shared by all three
    runs["snip"][0] = 0.52
    runs["px"][1] = 0.40  # PX's seed 1 must not count until SynFlow has seed 1 too
    (line,) = results_report._px_long_claim(runs)
    assert "mean of 1 seed (0), provisional (1 of 3 seeds in): holds (PX 55.00, best SNIP 52.00)" in line


def test_a_px_variant_is_reported_but_never_judged_as_a_baseline(tmp_path):
    def cell(method, sparsity, acc, density):
        return {"cell": {"suite": "px", "method": method, "sparsity": sparsity, "seed": 0, "epochs": 3},
                "data": "test", "test_accuracy": acc, "train_loss": [2.0], "scoring_seconds": 1.0,
                "layers": _layers(density, [1.0 if d else 0.0 for d in density])}
    cells = [cell("dense", 0.0, 0.7, [1.0, 1.0]), cell("px", 0.982, 0.50, [0.0, 0.1]),
             cell("snip", 0.982, 0.45, [0.05, 0.05]), cell("px_floor", 0.982, 0.60, [0.01, 0.09])]
    out = "\n".join(results_report._px_section(cells, str(tmp_path), smoke=False))
    assert "PX >= every baseline at 98.20%, 3 epochs, one seed: holds" in out  # 0.60 is PX's own
    assert "| PX, layer floor 0.005 (variant) | not run | 60.00 | 1.0 s |" in out
    assert ("empties 0 layers and reaches 60.00 at 98.20% (plain PX 50.00), 3 epochs, one seed: "
            "keeping the branches alive raises short-run accuracy here.") in out
    assert "PX leaves no layer collapsed: does not hold (seed 0: 1 empty layers: l0)" in out
    cells.append(cell("snip", 0.8926, 0.6, [0.2, 0.2]))
    out = "\n".join(results_report._px_section(cells, str(tmp_path), smoke=False))
    assert "| PX, layer floor 0.005 (variant) | not run | 0.50 / 2.00 |" in out


def test_the_ten_epoch_table_counts_empty_layers_per_seed(tmp_path):
    def cell(method, seed, epochs, acc, density):
        return {"cell": {"suite": "px", "method": method, "sparsity": 0.982 if method != "dense" else 0.0,
                         "seed": seed, "epochs": epochs}, "data": "test", "test_accuracy": acc,
                "train_loss": [2.0], "layers": _layers(density, [1.0 if d else 0.0 for d in density])}
    cells = [cell("dense", 0, 3, 0.7, [1.0, 1.0]), cell("px", 0, 3, 0.5, [0.0, 0.1]),
             cell("px", 0, 10, 0.60, [0.0, 0.0, 0.1]), cell("px", 2, 10, 0.64, [0.1, 0.0, 0.1]),
             cell("snip", 1, 10, 0.55, [0.1, 0.1, 0.1])]
    out = "\n".join(results_report._px_section(cells, str(tmp_path), smoke=False))
    assert "| PX (100 rounds) | 60.00 | pending | 64.00 | 62.00 ± 2.83 | pending | 2, pending, 1 |" in out
    assert "| SNIP | pending | 55.00 | pending | 55.00 (1 seed) | pending | pending, 0, pending |" in out
    assert "| Dense | pending | pending | pending | pending | n/a | n/a |" in out
    # with dense in, each method's gap is the dense mean minus its own (the 3-epoch dense is not used)
    cells += [cell("dense", 0, 10, 0.70, [1.0, 1.0]), cell("dense", 1, 10, 0.68, [1.0, 1.0])]
    out = "\n".join(results_report._px_section(cells, str(tmp_path), smoke=False))
    assert "| PX (100 rounds) | 60.00 | pending | 64.00 | 62.00 ± 2.83 | 7.00 points | 2, pending, 1 |" in out
    assert "| SNIP | pending | 55.00 | pending | 55.00 (1 seed) | 14.00 points | pending, 0, pending |" in out
    assert "| Dense | 70.00 | 68.00 | pending | 69.00 ± 1.41 | n/a | n/a |" in out


def test_kept_positive_is_weighted_by_kept_weights():
    rows = [{"kept": 30, "kept_positive": 1.0}, {"kept": 10, "kept_positive": 0.0},
            {"kept": 0, "kept_positive": 0.0}]
    assert results_report._positive(rows) == "0.75"
    assert results_report._positive([{"kept": 3}]) == "n/a"  # cells from before the field


@pytest.mark.parametrize("tradi,verdict", [(0.90, "holds"), (0.85, "does not hold")])
def test_tradi_claim_checks(tradi, verdict):
    means = {"tradi": (tradi, 0.01, 2), "su": (0.88, 0.0, 2), "static_topk_random": (0.87, 0.0, 2),
             "static_full_random": (0.86, 0.0, 1), "dynamic_full_random": (0.89, 0.0, 1),
             "full": (0.92, 0.005, 2)}
    out = "\n".join(results_report._tradi_claims(means))
    assert f"TraDy >= SU and every static variant: {verdict}" in out
    assert f"(Dynamic Full Random vs Static Full Random): holds (89.00 vs 86.00)" in out
    assert f"(TraDy (dynamic TopK Random) vs Static TopK Random): {verdict}" in out
    gap = 100 * (0.92 - tradi)
    assert f"within 3 points of full fine-tuning: {'holds' if gap <= 3 else 'does not hold'} " \
           f"(gap {gap:.2f} points)" in out
    assert "TraDy (dynamic TopK Random) ±1.00" in out and "Full fine-tuning ±0.50" in out
    assert results_report._tradi_claims({}) == ["- pending"]


def test_tradi_claims_flag_differences_inside_the_seed_spread():
    means = {"tradi": (0.885, 0.01, 2), "su": (0.88, 0.0, 2), "static_topk_random": (0.87, 0.0, 2),
             "static_full_random": (0.86, 0.0, 1), "dynamic_full_random": (0.865, 0.0, 1)}
    out = "\n".join(results_report._tradi_claims(means))
    assert ("every static variant: holds (SU (MCUNetV3 scheme) 88.00, Static Full Random 86.00, "
            "Static TopK Random 87.00; TraDy 88.50; the gap to SU (MCUNetV3 scheme), 0.50, is within "
            "the largest seed std, 1.00, so these seeds do not separate the two).") in out
    assert ("holds (86.50 vs 86.00; the difference, 0.50, is within the largest seed std, 1.00, "
            "so these seeds do not separate the two).") in out
    assert "holds (88.50 vs 87.00)." in out  # 1.5 points: outside the spread, no note


def test_tradi_claims_are_judged_as_soon_as_their_own_cells_are_in():
    means = {"static_full_random": (0.7221, 0.0, 1), "dynamic_full_random": (0.7219, 0.0, 1),
             "full": (0.79, 0.0, 1)}
    out = results_report._tradi_claims(means)
    assert out == ["- dynamic beats static (Dynamic Full Random vs Static Full Random): does not hold "
                   "(72.19 vs 72.21)."]


def test_retiming_only_some_rows_times_them_next_to_a_fresh_full_reference(tmp_path, monkeypatch):
    import _common
    import memory
    rows = [{"net": "n", "batch": 64, "strategy": s, "budget": b, "step_seconds": t,
             "time_vs_full": r, "overhead_mb": 1.0, "tensor_overhead_mb": 1.0}
            for s, b, t, r in [("full", None, 0.5, 1.0), ("tradi", 27946, 0.25, 0.5),
                               ("dynamic_det_rgn", 27946, None, None)]]
    monkeypatch.setattr(_common, "RESULTS", str(tmp_path))
    with open(tmp_path / "memory.json", "w") as f:
        json.dump({"rows": rows}, f)
    timed = []
    fresh = {"full": 0.8, "dynamic_det_rgn": 0.6, "tradi": 99.0}
    monkeypatch.setattr(memory, "_child_step_seconds",
                        lambda config: timed.append(config["strategy"]) or fresh[config["strategy"]])
    memory.retime({"dynamic_det_rgn"})
    with open(tmp_path / "memory.json") as f:
        out = {r["strategy"]: r for r in json.load(f)["rows"]}
    assert timed == ["full", "dynamic_det_rgn"]  # the row and its own reference, nothing else
    assert out["dynamic_det_rgn"]["time_vs_full"] == pytest.approx(0.6 / 0.8)
    assert out["full"]["step_seconds"] == 0.5 and out["tradi"]["time_vs_full"] == 0.5
    with pytest.raises(ValueError, match="not in"):
        memory.retime({"no_such_strategy"})


def _fit_tiny(path, epochs, cell="tiny", verify=None):
    """A small compiled model (with BatchNorm statistics and a momentum optimizer on a cosine
    schedule over 3 epochs) trained by fit_resumable on fixed, unshuffled data."""
    import keras
    import numpy as np
    import tensorflow as tf

    import resumable

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, 3 * 4), momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history, seconds = resumable.fit_resumable(model, ds, epochs, path, {"id": cell}, verify=verify,
                                               shuffle=False, verbose=0)
    return model, history, seconds


def test_an_interrupted_fit_resumes_exactly_where_it_stopped(tmp_path):
    import numpy as np

    straight, h_straight, _ = _fit_tiny(str(tmp_path / "a.npz"), 3)
    path = str(tmp_path / "b.npz")
    _fit_tiny(path, 1)  # stopped after its first epoch's checkpoint
    resumed, h_resumed, seconds = _fit_tiny(path, 3)
    # weights, BatchNorm statistics, the step counter (so the schedule) and momentum carried over:
    # dropping any of them changes the result
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(resumed.optimizer.iterations) == 12
    assert len(h_resumed["loss"]) == 3
    np.testing.assert_allclose(h_straight["loss"], h_resumed["loss"], rtol=1e-5)
    assert seconds > 0
    # a finished checkpoint trains nothing more
    again, _, _ = _fit_tiny(path, 3)
    for a, b in zip(resumed.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_cell_is_refused(tmp_path):
    path = str(tmp_path / "c.npz")
    _fit_tiny(path, 1, cell="one")
    with pytest.raises(ValueError, match="not .*two.*delete it"):
        _fit_tiny(path, 3, cell="two")


def test_a_restored_model_that_fails_verification_is_not_trained(tmp_path):
    path = str(tmp_path / "d.npz")
    _fit_tiny(path, 1)
    seen = []

    def reject(model):
        seen.append(int(model.optimizer.iterations))
        raise RuntimeError("other masks")

    with pytest.raises(RuntimeError, match="other masks"):
        _fit_tiny(path, 3, verify=reject)
    assert seen == [4]  # called once, on the restored state, before any further step
    _fit_tiny(str(tmp_path / "fresh.npz"), 1, verify=reject)  # nothing to verify without a checkpoint


def test_committing_a_cell_also_commits_the_removal_of_its_checkpoint(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    monkeypatch.setattr(sweep, "ROOT", str(tmp_path))
    monkeypatch.setattr(sweep, "results_dir", lambda smoke: str(tmp_path / "results"))
    cells = sweep.px_cells(True, False)[:2]
    partial = sweep.partial_path(cells[0])  # carried over from another machine: committed
    os.makedirs(os.path.dirname(partial))
    with open(partial, "wb") as f:
        f.write(b"checkpoint")
    git("add", partial)
    git("commit", "-q", "-m", "partial")
    real_run = subprocess.run

    def run(args, **kwargs):
        if args[:2] == [sys.executable, sweep.__file__]:  # the cell: write its JSON, drop its checkpoint
            cell = json.loads(args[3])
            os.makedirs(os.path.dirname(sweep.cell_path(cell)), exist_ok=True)
            with open(sweep.cell_path(cell), "w") as f:
                json.dump({"cell": cell}, f)
            if os.path.exists(sweep.partial_path(cell)):
                os.remove(sweep.partial_path(cell))
            return subprocess.CompletedProcess(args, 0)
        return real_run(args, **kwargs)

    monkeypatch.setattr(sweep.subprocess, "run", run)
    assert sweep.run_cells(cells, commit=True) == 2
    assert git("status", "--porcelain") == ""  # nothing left uncommitted, the deletion included
    tracked = git("ls-files").split()
    assert os.path.relpath(partial, tmp_path) not in tracked
    assert sorted(tracked) == sorted(os.path.relpath(sweep.cell_path(c), tmp_path) for c in cells)
    assert git("log", "--format=%s").splitlines()[:2] == [
        f"Sweep cell px/{sweep.cell_id(c)}" for c in reversed(cells)]
