"""The example scripts run as a user runs them (tiny settings), offline."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_tradyx as tx
from tests.testing_utils import ROOT

pytestmark = pytest.mark.slow  # every test runs a script in a subprocess


def test_prune_at_init_script_end_to_end(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "examples", "prune_at_init.py"),
        "--dataset=cifar10_sample",
        "--model=resnet20",
        "--method=px",
        "--sparsity=0.8",
        "--rounds=3",
        "--epochs=1",
        "--max_train=256",
        "--batch_size=64",
        f"--out={out}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "px" and report["model"] == "resnet20"
    assert abs(report["density"] - 0.2) < 1e-5
    assert 0.0 <= report["test_accuracy"] <= 1.0
    kept = report["report"]["totals"]["kept"]
    # After training, the stripped model has no more nonzero kernel weights than were kept.
    assert report["nonzero_kernel_weights_after_training"] <= kept
    assert report["nonzero_kernel_weights_after_training"] > 0.99 * kept
    assert (out / "density.png").exists()


def test_prune_at_init_script_rejects_bad_sparsity(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "examples", "prune_at_init.py"),
        "--dataset=cifar10_sample",
        "--sparsity=1.2",
        "--epochs=1",
        f"--out={tmp_path}",
    ]
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode != 0
    assert "--sparsity must be in [0, 1)" in result.stderr


def _finetune(tmp_path, *flags):
    out = tmp_path / "ft"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "examples", "finetune_under_budget.py"),
        "--dataset=cifar10_sample",
        "--model=mbv2-w0.35",
        "--max_train=128",
        "--max_test=64",
        "--batch_size=32",
        "--epochs=2",
        f"--out={out}",
        *flags,
    ]
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return result, out


def test_finetune_under_budget_script_tradi(tmp_path):
    result, out = _finetune(tmp_path, "--budget=109KiB", "--strategy=tradi", "--rank_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["budget_units"] == 27904  # 109 KiB of float32
    units = res["history"]["sparse_update/units"]
    assert len(units) == 2 and all(0 < u <= 27904 for u in units)
    assert res["efficiency"]["activation_sparsity"] > 0.95
    ranking = json.loads((out / "ranking.json").read_text())
    assert set(res["layers"]) <= set(ranking["rgn"]) and len(ranking["rgn"]) == 51
    assert 0.0 <= res["test_accuracy"] <= 1.0


def test_finetune_keeps_the_ranking_its_flag_names_inside_out(tmp_path):
    # tf-tradyx-finetune --layers_from=D/ranking.json --out=D once removed ranking.json.
    model = tx.models.load_pretrained("mbv2-w0.35", num_classes=10, input_size=128)
    names = tx.sparse_update.cost_table(model).names
    out = tmp_path / "ft"
    out.mkdir()
    ranking = out / "ranking.json"
    tx.sparse_update.LayerRanking({n: float(i + 1) for i, n in enumerate(names)}).save(ranking)
    before = ranking.read_bytes()
    result, _ = _finetune(tmp_path, "--strategy=tradi", "--epochs=1", f"--layers_from={ranking}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ranking.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["ranking.json", "results.json"]


def test_finetune_under_budget_script_su_uses_paper_scheme_and_rejects_bad_budget(tmp_path):
    result, out = _finetune(tmp_path, "--strategy=su", "--epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["efficiency"]["units"] == 28282
    result, _ = _finetune(tmp_path, "--budget=12 parsecs")
    assert result.returncode != 0 and "--budget must be positive memory units" in result.stderr


def test_prune_then_finetune_script(tmp_path):
    out = tmp_path / "ptf"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "examples", "prune_then_finetune.py"),
        "--dataset=cifar10_sample",
        "--sparsity=0.5",
        "--rounds=2",
        "--epochs=1",
        "--budget=27946",
        f"--out={out}",
    ]
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["sparsity_after_finetuning"] - 0.5) < 0.01  # pruned weights stayed 0
    assert 0 < summary["units_used"] <= 27946
    assert summary["units_unpruned_weights"] == summary["units_used"]  # count_pruned=False
    assert summary["units_all_weights"] >= summary["units_used"]
    assert os.path.exists(summary["model_file"])
    assert "accuracy after TraDy" in result.stdout and "(1 epoch," in result.stdout


def _script(name, *args, timeout=600):
    cmd = [sys.executable, os.path.join(ROOT, "examples", name), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.parametrize(
    "script", ["prune_at_init.py", "finetune_under_budget.py", "prune_then_finetune.py"]
)
def test_a_bad_value_found_once_running_is_one_line_and_leaves_no_folder(tmp_path, script):
    out = tmp_path / "out"
    result = _script(script, f"--data_dir={tmp_path / 'missing'}", f"--out={out}")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: ") and "does not exist" in last, last
    assert not out.exists()


@pytest.mark.parametrize(
    "script,flag,message",
    [
        ("prune_at_init.py", "--lr=-1", "--lr must be > 0"),
        ("prune_at_init.py", "--batch_size=0", "--batch_size must be >= 1"),
        ("prune_at_init.py", "--rounds=0", "--rounds must be >= 1"),
        ("finetune_under_budget.py", "--budget=lots", "--budget must be positive memory units"),
        ("finetune_under_budget.py", "--coverage=1.5", "--coverage must lie in (0, 1]"),
        ("finetune_under_budget.py", "--epochs=0", "--epochs must be >= 1"),
        ("prune_then_finetune.py", "--epochs=0", "--epochs must be >= 1"),
        ("prune_then_finetune.py", "--budget=-5", "--budget must be positive memory units"),
    ],
)
def test_every_flag_is_checked_before_any_work(tmp_path, script, flag, message):
    result = _script(script, flag, f"--out={tmp_path / 'out'}")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # nothing was started


def test_out_naming_a_file_fails_at_once_and_the_file_survives(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("precious")
    result = _script("prune_at_init.py", "--epochs=1", f"--out={target}")
    assert result.returncode != 0 and "is a file" in result.stderr
    assert target.read_text() == "precious"


def test_prune_at_init_builds_the_network_for_grayscale_28px_folders(tmp_path):
    for split, per_class in (("train", 6), ("test", 2)):
        for cls in ("zero", "one"):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((28, 28, 1), 20 * i + (100 if cls == "one" else 0), np.uint8)
                tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(pixels))
    out = tmp_path / "run"
    result = _script(
        "prune_at_init.py",
        f"--data_dir={tmp_path / 'data'}",
        "--method=snip",
        "--sparsity=0.5",
        "--prune_per_class=2",
        "--epochs=1",
        "--batch_size=4",
        "--noplot",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    # from_folder reads RGB, as Keras image_dataset_from_directory does by default.
    assert report["image_shape"] == [28, 28, 3] and report["method"] == "snip"
    assert report["sparsity"] == 0.5
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]  # no staged leftovers


def test_console_scripts_are_installed_and_run_from_any_directory(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    for command, flag in (
        ("tf-tradyx-prune", "--sparsity"),
        ("tf-tradyx-finetune", "--budget"),
        ("tf-tradyx-prune-finetune", "--layers_from"),
    ):
        path = os.path.join(bin_dir, command)
        assert os.path.exists(path), f"{command} is not installed next to {sys.executable}"
        result = subprocess.run(
            [path, "--helpshort"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert result.returncode == 0 and flag in result.stdout, result.stderr[-2000:]
    listing = subprocess.run(
        [sys.executable, "-m", "tf_tradyx"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert listing.returncode == 0 and "tf-tradyx-prune-finetune" in listing.stdout


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
