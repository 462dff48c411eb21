"""A scripted run's outputs: --out checked first, written together at the end, nothing lost."""

import json
import sys

import pytest

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


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
