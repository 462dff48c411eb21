"""The API reference site builds from the docstrings with warnings as errors (`make docs`)."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.testing_utils import ROOT

pytestmark = pytest.mark.slow  # a subprocess


def test_the_docs_site_builds_strictly_and_documents_the_api(tmp_path):
    mkdocs = os.path.join(os.path.dirname(sys.executable), "mkdocs")
    if not os.path.exists(mkdocs):
        mkdocs = shutil.which("mkdocs")
    assert mkdocs, "mkdocs is not installed: pip install 'tf_tradyx[docs]'"
    site = tmp_path / "site"
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = (site / "api" / "sparse_update" / "index.html").read_text()
    for name in ("wrap", "TraDy", "ChannelResampler", "LayerRanking", "cost_table"):
        assert f"tf_tradyx.sparse_update.{name}" in page, name
    pruning = (site / "api" / "pruning" / "index.html").read_text()
    assert "tf_tradyx.pruning.PXPruner" in pruning and "exact_data_term" in pruning
    assert (site / "METHODS" / "index.html").exists()


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
