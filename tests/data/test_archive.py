"""Archives extracted once into the cache, checksums verified, and no half cache left behind."""

import os
import subprocess
import sys
import time

import pytest

import tf_tradyx as tx
from tests.testing_utils import SMALL_IMAGE_TREE, make_tar
from tf_tradyx.data import archive


def test_from_folder_archive_extracts_once_and_verifies_checksum(tmp_path):
    arch = tmp_path / "small.tar.gz"
    make_tar(arch, SMALL_IMAGE_TREE)
    cache = tmp_path / "cache"
    digest = archive.sha256_of(arch)
    ds = tx.data.from_folder(str(arch), "test", sha256=digest, cache_dir=str(cache))
    assert [int(y) for _, y in ds] == [0, 1]
    extracted = os.listdir(cache / "extracted")
    assert len(extracted) == 1 and not extracted[0].startswith(".")
    marker = cache / "extracted" / extracted[0] / "marker"
    marker.write_text("reused")  # A second call must reuse, not re-extract.
    tx.data.from_folder(str(arch), "train", sha256=digest, cache_dir=str(cache))
    assert marker.read_text() == "reused"


def test_bad_checksum_raises_and_leaves_no_cache(tmp_path):
    arch = tmp_path / "small.tar.gz"
    make_tar(arch, SMALL_IMAGE_TREE)
    cache = tmp_path / "cache"
    with pytest.raises(archive.ArchiveError, match="sha256"):
        tx.data.from_folder(str(arch), "train", sha256="0" * 64, cache_dir=str(cache))
    assert not (cache / "extracted").exists() or not os.listdir(cache / "extracted")


def test_truncated_archive_raises_and_leaves_no_half_cache(tmp_path):
    arch = tmp_path / "small.tar.gz"
    make_tar(arch, {f"train/c{i}/{j}.png": os.urandom(4000) for i in range(3) for j in range(20)})
    data = arch.read_bytes()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(archive.ArchiveError, match="truncated"):
        tx.data.from_folder(str(broken), "train", cache_dir=str(cache))
    assert os.listdir(cache / "extracted") == []  # The partial folder was removed.


def test_not_an_archive(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"this is not a tar file at all" * 10)
    with pytest.raises(archive.ArchiveError):
        tx.data.from_folder(str(bogus), "train")


def test_archive_cache_is_shared_with_and_without_checksum(tmp_path):
    arch = tmp_path / "small.tar.gz"
    make_tar(arch, SMALL_IMAGE_TREE)
    cache = tmp_path / "cache"
    tx.data.from_folder(str(arch), "train", cache_dir=str(cache))
    tx.data.from_folder(str(arch), "train", sha256=archive.sha256_of(arch), cache_dir=str(cache))
    assert len(os.listdir(cache / "extracted")) == 1
    with pytest.raises(archive.ArchiveError, match="sha256"):
        tx.data.from_folder(str(arch), "train", sha256="1" * 64, cache_dir=str(cache))


def test_a_killed_extraction_leaves_no_partial_folder_behind(tmp_path):
    arch = tmp_path / "small.tar.gz"
    make_tar(arch, SMALL_IMAGE_TREE)
    folder = tmp_path / "cache" / "extracted"
    folder.mkdir(parents=True)
    # A SIGKILLed extraction: its process is gone. A live one (this process) must be kept, and an
    # old-style folder without a pid is removed only once it is a day old.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = folder / f".small-partial-{child.pid}-abc123"
    live = folder / f".small-partial-{os.getpid()}-def456"
    old, recent = folder / ".small-partial-xyz789", folder / ".small-partial-uvw000"
    for d in (dead, live, old, recent):
        (d / "train").mkdir(parents=True)
    day_ago = time.time() - archive.STALE_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    tx.data.from_folder(str(arch), "test", cache_dir=str(tmp_path / "cache"))
    left = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    assert left == sorted([live.name, recent.name])


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
