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
    # A library's site: PXPruner first on its page, constructor signatures, typed parameters,
    # guides, formulas typeset offline, and no pointer back to the README.
    assert pruning.index('id="tf_tradyx.pruning.PXPruner"') < pruning.index(
        'id="tf_tradyx.pruning.GraSPPruner"'
    )
    assert (
        '<span class="n">exact_data_term</span><span class="o">=</span>' in pruning
    )  # a signature
    assert "described in the README" not in pruning
    assert '<span title="int">int</span> | None</code>' in pruning  # a Type column entry
    for guide in (
        "pruning_at_init",
        "fine_tuning_under_budget",
        "choosing_a_budget",
        "command_line",
    ):
        assert (site / "guides" / guide / "index.html").exists(), guide
    methods = (site / "METHODS" / "index.html").read_text()
    assert 'class="arithmatex"' in methods and "katex.min.js" in methods
    assert (site / "javascripts" / "katex" / "katex.min.js").exists()


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
