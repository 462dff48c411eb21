"""A scripted run's outputs: --out checked first, written together at the end, nothing lost."""

import json
import os
import subprocess
import sys

import pytest

from tf_tradyx import run_outputs
from tf_tradyx.run_outputs import RunOutputs


def test_a_failed_run_keeps_the_previous_outputs_and_leaves_no_partial_file(tmp_path):
    with RunOutputs(tmp_path, ["report.json", "plot.png"]) as out:
        out.write_json("report.json", {"run": 1})

        with open(out.path("plot.png"), "wb") as f:
            f.write(b"png1")
    with pytest.raises(RuntimeError, match="disk full"):
        with RunOutputs(tmp_path, ["report.json", "plot.png"]) as out:
            out.write_json("report.json", {"run": 2})
            raise RuntimeError("disk full")
    assert json.loads((tmp_path / "report.json").read_text()) == {"run": 1}
    assert (tmp_path / "plot.png").read_bytes() == b"png1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "report.json"]


def test_a_new_run_replaces_all_outputs_of_the_previous_one(tmp_path):
    (tmp_path / "plot.png").write_bytes(b"old plot")
    (tmp_path / "notes.txt").write_text("the user's own file")
    with RunOutputs(tmp_path, ["report.json", "plot.png"]) as out:
        out.write_json("report.json", {"run": 2})  # this run draws no plot
    assert not (tmp_path / "plot.png").exists()  # no old plot beside the new report
    assert (tmp_path / "notes.txt").read_text() == "the user's own file"


def test_out_is_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        RunOutputs(tmp_path / "file", ["report.json"])
    with pytest.raises(ValueError, match="not one of this run's outputs"):
        RunOutputs(tmp_path / "new", ["report.json"]).path("other.json")
    with pytest.raises(FileNotFoundError, match="never written"):
        with RunOutputs(tmp_path / "new", ["report.json"]) as out:
            out.path("report.json")


# ----- issue 33, items 5 and 6: inputs kept, one commit step, no leftovers -----

NAMES = ["report.json", "plot.png", "model.keras"]


def _run(folder, tag, names=NAMES, **kwargs):
    with RunOutputs(folder, names, **kwargs) as out:
        for name in names:
            with open(out.path(name), "wb") as f:
                f.write(f"{name} of run {tag}".encode())


def _state(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_a_file_a_flag_names_is_never_deleted(tmp_path):
    _run(tmp_path, 1, ["ranking.json", "results.json"])
    ranking = tmp_path / "ranking.json"
    before = ranking.read_bytes()
    # tf-tradyx-finetune --layers_from=D/ranking.json --out=D: this run writes no ranking.json
    with RunOutputs(
        tmp_path, ["ranking.json", "results.json"], inputs={"--layers_from": str(ranking)}
    ) as out:
        out.write_json("results.json", {"run": 2})
    assert ranking.read_bytes() == before
    with pytest.raises(ValueError, match=r"--layers_from.*ranking\.json.*another --out"):
        with RunOutputs(
            tmp_path, ["ranking.json", "results.json"], inputs={"--layers_from": str(ranking)}
        ) as out:
            out.path("ranking.json")
    assert ranking.read_bytes() == before


_KILLED_DURING_COMMIT = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("run_outputs", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
folder, kill_at = sys.argv[2], int(sys.argv[3])
out = module.RunOutputs(folder, ["report.json", "plot.png", "model.keras"])
for name in ("report.json", "plot.png", "model.keras"):
    with open(out.path(name), "wb") as f:
        f.write(f"{name} of run 2".encode())
calls = [0]
def killing(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
for name in ("replace", "rename", "remove", "unlink", "rmdir", "link", "symlink"):
    setattr(os, name, killing(getattr(os, name)))
out.commit()
print("committed")
"""


def test_a_run_killed_during_its_commit_never_mixes_two_runs(tmp_path):
    old_run, new_run = tmp_path / "old", tmp_path / "new"
    _run(old_run, 1)
    _run(new_run, 2)
    old, new = _state(old_run), _state(new_run)
    for kill_at in range(1, 40):
        folder = tmp_path / f"kill{kill_at}"
        _run(folder, 1)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _KILLED_DURING_COMMIT,
                run_outputs.__file__,
                folder,
                str(kill_at),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        state = _state(folder)
        # Whatever the moment of the kill: the files present all come from one run...
        assert all(state[n] == old[n] for n in state) or all(state[n] == new[n] for n in state), (
            kill_at,
            state,
        )
        RunOutputs(folder, NAMES).discard()  # ...and the next run finds one whole run
        assert _state(folder) in (old, new), (kill_at, _state(folder))
        assert sorted(os.listdir(folder)) == sorted(_state(folder))  # no hidden leftovers
        if "committed" in result.stdout:
            assert _state(folder) == new
            break
    else:
        pytest.fail("the commit never completed")


def test_partial_files_of_killed_runs_are_removed_and_live_runs_kept(tmp_path):
    (tmp_path / ".report.4242.partial.json").write_text("{")  # left by versions before 0.2
    (tmp_path / ".plot.4242.partial.png").write_bytes(b"half a plot")
    (tmp_path / "notes.txt").write_text("the user's own file")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_DURING_COMMIT, run_outputs.__file__, tmp_path, "1"],
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -9
    live = RunOutputs(tmp_path, NAMES)  # a run in progress...
    live.write_json("report.json", {"run": "live"})
    RunOutputs(tmp_path, NAMES).discard()  # ...survives the cleanup another run does
    with live:
        pass
    assert json.loads((tmp_path / "report.json").read_text()) == {"run": "live"}
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "report.json"]


def test_a_failed_run_removes_the_out_folder_it_created(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError):
        with RunOutputs(out, NAMES):
            raise RuntimeError("bad --model")
    assert not (tmp_path / "new").exists()


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
