"""What a user installs: the sdist (package, assets, metadata; tests left out on purpose) builds a
wheel that carries the assets and the console scripts."""

import subprocess
import sys
import tarfile
import zipfile

import pytest

from tests.testing_utils import ROOT
from tf_tradyx._version import __version__

pytestmark = pytest.mark.slow  # builds in a subprocess


def test_sdist_builds_a_wheel_with_assets_and_console_scripts(tmp_path):
    out = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), ROOT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sdist = next(out.glob("*.tar.gz"))
    wheel = next(out.glob("*.whl"))  # `build` makes the wheel from the sdist
    # Named and stamped with the one version of tf_tradyx/_version.py (setup.cfg reads it).
    assert sdist.name == f"tf_tradyx-{__version__}.tar.gz"
    assert wheel.name.startswith(f"tf_tradyx-{__version__}-")
    names = tarfile.open(sdist).getnames()
    assert any(n.endswith("tf_tradyx/models/assets/mbv2-w0.35.npz") for n in names)
    assert any(n.endswith("CHANGELOG.md") for n in names)
    assert not any("/tests/" in n for n in names)  # left out on purpose (MANIFEST.in says why)
    with zipfile.ZipFile(wheel) as whl:
        files = whl.namelist()
        entry_points = next(n for n in files if n.endswith("entry_points.txt"))
        scripts = whl.read(entry_points).decode()
        metadata = whl.read(next(n for n in files if n.endswith(".dist-info/METADATA"))).decode()
    assert f"\nVersion: {__version__}\n" in metadata
    assert "tf_tradyx/data/assets/cifar10-sample.tar.gz" in files
    assert "tf_tradyx/models/assets/mbv2-w0.35.json" in files
    assert "tf_tradyx/cli/prune_at_init.py" in files and "tf_tradyx/__main__.py" in files
    for command in ("tf-tradyx-prune", "tf-tradyx-finetune", "tf-tradyx-prune-finetune"):
        assert command in scripts


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
