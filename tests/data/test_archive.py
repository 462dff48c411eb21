"""Archives extracted once into the cache, checksums verified, and no half cache left behind;
hostile archives (links, devices, escaping names, bombs) refused before they write anything."""

import io
import os
import stat
import subprocess
import sys
import tarfile
import time
import zipfile

import pytest

import tf_tradyx as tx
from tests.testing_utils import SMALL_IMAGE_TREE, make_tar, png_bytes
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
    # A partial folder is alive while its extraction holds the archive's lock file (a kernel lock,
    # released when the process dies, whatever its PID namespace or host); dead ones are removed.
    arch, other = tmp_path / "small.tar.gz", tmp_path / "other.tar.gz"
    make_tar(arch, SMALL_IMAGE_TREE)
    make_tar(other, SMALL_IMAGE_TREE)
    cache = str(tmp_path / "cache")
    final, _ = archive.cache_paths(str(arch), cache)
    other_final, other_lock = archive.cache_paths(str(other), cache)
    folder = os.path.dirname(final)
    os.makedirs(folder)
    dead = os.path.join(folder, f".{os.path.basename(final)}.partial-abc123")
    live = os.path.join(folder, f".{os.path.basename(other_final)}.partial-def456")
    # Folders named by older versions (with or without a pid): removed only once a day old.
    old, recent = (os.path.join(folder, n) for n in (".small-partial-1-xyz789", ".small-partial-2"))
    for d in (dead, live, old, recent):
        os.makedirs(os.path.join(d, "train"))
    day_ago = time.time() - archive.STALE_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    with archive.locked(other_lock):  # another extraction, still running
        tx.data.from_folder(str(arch), "test", cache_dir=cache)
    left = sorted(n for n in os.listdir(folder) if n.startswith("."))
    assert left == sorted(os.path.basename(p) for p in (live, recent))


# ----- hostile archives (issue 33, items 1, 2 and 4) -----


def _tar(path, members, mode="w:gz"):
    """members: (name, kind, payload): kind "file" (payload bytes), "dir", "sym"/"hard" (payload:
    the link target), "fifo", "chr"."""
    kinds = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chr": tarfile.CHRTYPE,
    }
    with tarfile.open(path, mode) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            if kind == "chr":
                info.devmajor, info.devminor = 1, 3
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.mode = 0o755 if kind == "dir" else 0o644
                tar.addfile(info)


GOOD = [("top/train/a/0.png", "file", png_bytes(4, 4, 10))]


@pytest.mark.parametrize(
    "member,message",
    [
        (("top/train/a/1.png", "sym", "0.png"), "symbolic link"),
        (("top/train/a/1.png", "sym", "/etc/passwd"), "symbolic link"),
        (("top/train/a/1.png", "hard", "top/train/a/0.png"), "hard link"),
        (("top/train/a/1.png", "fifo", None), "FIFO"),
        (("top/train/a/1.png", "chr", None), "device"),
        (("top/../../escaped.png", "file", b"x"), "outside"),
        (("/tmp/tf_tradyx_absolute_escape.png", "file", b"x"), "absolute"),
    ],
)
def test_links_devices_fifos_and_escaping_names_are_refused(tmp_path, member, message):
    arch = tmp_path / "hostile.tar.gz"
    _tar(arch, GOOD + [member])
    cache = tmp_path / "cache"
    with pytest.raises(archive.ArchiveError, match=message):
        tx.data.from_folder(str(arch), "train", cache_dir=str(cache))
    assert os.listdir(cache / "extracted") == []  # nothing kept, not even a partial folder
    assert not (tmp_path / "escaped.png").exists()
    assert not os.path.exists("/tmp/tf_tradyx_absolute_escape.png")


def test_cve_2025_4517_archive_writes_nothing_outside_the_cache(tmp_path):
    # The published attack on tarfile's filter="data" (CPython's test_realpath_limit_attack): long
    # directory names and chained symlinks push os.path.realpath past PATH_MAX so that it stops
    # resolving, and a hard link through them reaches a file outside the destination. The
    # component length is fitted to the partial folder the extraction used before the fix.
    cache = tmp_path / "cache"
    extracted = cache / "extracted"
    extracted.mkdir(parents=True)
    flag = extracted / "flag"
    flag.write_text("untouched")
    dest_len = len(str(extracted / f".poc-partial-{os.getpid()}-")) + 8 + 1
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf(str(tmp_path), "PC_PATH_MAX") - dest_len) // (len(steps) + 1))
    members, path = [], ""
    for step in steps:
        members.append((os.path.join(path, component), "dir", None))
        members.append((os.path.join(path, step), "sym", component))
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append((linkpath, "sym", os.path.join(*[".."] * len(steps))))
    members.append(("escape", "sym", os.path.join(linkpath, "..")))
    members.append(("flaglink", "hard", os.path.join("escape", "flag")))
    members.append(("flaglink", "file", b"overwrite"))
    members.append(("escape/newfile", "file", b"new"))
    arch = tmp_path / "poc.tar"
    _tar(arch, members, mode="w")
    with pytest.raises(archive.ArchiveError, match="link"):
        archive.extract(str(arch), cache_dir=str(cache))
    assert flag.read_text() == "untouched"
    assert sorted(os.listdir(extracted)) == ["flag"]


def _zip(path, members):
    """members: (name, payload, unix mode or None)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, payload, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.create_system = 3  # Unix: the mode lives in the high 16 bits
                info.external_attr = mode << 16
            z.writestr(info, payload)


def test_zip_archives_are_read_with_the_same_rules(tmp_path):
    arch = tmp_path / "small.zip"
    _zip(arch, [(f"top/{rel}", data, None) for rel, data in sorted(SMALL_IMAGE_TREE.items())])
    ds = tx.data.from_folder(str(arch), "test", cache_dir=str(tmp_path / "cache"))
    assert [int(y) for _, y in ds] == [0, 1]
    good = [("top/train/a/0.png", png_bytes(4, 4, 10), None)]
    for member, message in [
        (("top/train/a/1.png", b"0.png", stat.S_IFLNK | 0o777), "symbolic link"),
        (("top/train/a/1.png", b"", stat.S_IFIFO | 0o644), "FIFO"),
        (("../escaped.png", b"x", None), "outside"),
    ]:
        bad = tmp_path / f"bad{len(message)}.zip"
        _zip(bad, good + [member])
        with pytest.raises(archive.ArchiveError, match=message):
            tx.data.from_folder(str(bad), "train", cache_dir=str(tmp_path / "cache2"))
    assert not (tmp_path / "escaped.png").exists()


def test_only_image_files_are_extracted(tmp_path):
    arch = tmp_path / "mixed.tar.gz"
    _tar(
        arch,
        GOOD
        + [
            ("top/README.txt", "file", b"read me"),
            ("top/train/a/payload.bin", "file", bytes(1 << 20)),
            ("top/train/a/.hidden.png", "file", png_bytes(4, 4, 1)),
        ],
    )
    root = archive.extract(str(arch), cache_dir=str(tmp_path / "cache"))
    found = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
        if not f.startswith(".")
    )
    assert found == ["top/train/a/0.png"]


class _Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_an_archive_that_expands_far_beyond_its_size_is_refused(tmp_path):
    arch = tmp_path / "bomb.tar.gz"
    size = 100 << 20  # 100 MiB of zeros: about 100 KB compressed
    with tarfile.open(arch, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("top/train/a/0.png")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size)))
    assert os.path.getsize(arch) < size // 200
    cache = tmp_path / "cache"
    with pytest.raises(archive.ArchiveError, match="max_extracted_bytes"):
        tx.data.from_folder(str(arch), "train", cache_dir=str(cache))
    assert os.listdir(cache / "extracted") == []
    small = tmp_path / "small.tar.gz"
    make_tar(small, SMALL_IMAGE_TREE)
    with pytest.raises(archive.ArchiveError, match="max_extracted_bytes"):
        archive.extract(str(small), cache_dir=str(cache), max_extracted_bytes=2_000)
    assert os.path.isdir(archive.extract(str(small), cache_dir=str(cache)))


def _files_in(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
        if not f.startswith(".")
    )


def test_a_cache_missing_or_truncating_files_is_extracted_again(tmp_path):
    arch = tmp_path / "small.tar.gz"
    make_tar(arch, SMALL_IMAGE_TREE)
    cache = str(tmp_path / "cache")
    root = archive.extract(str(arch), cache_dir=cache)
    complete = _files_in(root)
    assert len(complete) == len(SMALL_IMAGE_TREE)
    os.remove(os.path.join(root, "top", "train", "b_cls", "0.jpg"))  # half a cache, as after a race
    assert _files_in(archive.extract(str(arch), cache_dir=cache)) == complete
    with open(os.path.join(root, "top", "test", "a_cls", "0.png"), "r+b") as f:
        f.truncate(3)
    files, _, _ = tx.data.folders.list_files(str(arch), "test", cache_dir=cache)
    assert [os.path.getsize(f) for f in files] == [
        len(SMALL_IMAGE_TREE["test/a_cls/0.png"]),
        len(SMALL_IMAGE_TREE["test/b_cls/0.png"]),
    ]


_EXTRACT_AS_IF_IN_ANOTHER_PID_NAMESPACE = """
import os, sys
def invisible(pid, sig):  # every other process looks dead, as from another container or host
    if pid != os.getpid():
        raise ProcessLookupError(pid)
os.kill = invisible
from tf_tradyx.data import folders
files, _, _ = folders.list_files(sys.argv[1], "train", cache_dir=sys.argv[2])
print(len(files))
"""


def test_concurrent_extractions_that_cannot_see_each_other_both_get_every_file(tmp_path):
    arch = tmp_path / "big.tar.gz"
    n = 3000
    make_tar(arch, {f"train/c{i % 3}/{i:05d}.png": png_bytes(2, 2, i % 256) for i in range(n)})
    cache = str(tmp_path / "cache")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-c", _EXTRACT_AS_IF_IN_ANOTHER_PID_NAMESPACE, str(arch), cache]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for (out, err), p in zip(results, procs):
        assert p.returncode == 0, err[-2000:]
        assert out.split()[-1] == str(n)
    (final,) = os.listdir(os.path.join(cache, "extracted"))
    assert len(_files_in(os.path.join(cache, "extracted", final))) == n


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
