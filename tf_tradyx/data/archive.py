"""Extract an image-dataset archive (`.tar.gz`, `.tgz`, `.tar`, `.zip`) once into a cache, safely.

Why: archives such as `cifar10-jpeg.tar.gz` hold tens of thousands of small files; reading them from a
directory is fast, re-extracting them every run is not. An archive is also untrusted input, so:

- Nothing is written outside the extraction folder, whatever the Python patch level (`tarfile`'s
  `filter="data"` could be bypassed before 3.11.13 and 3.12.11, CVE-2025-4517): members are read,
  never extracted by `tarfile`/`zipfile`; an image dataset needs only folders and regular files, so
  any link, device, FIFO or other member refuses the whole archive, and every destination is
  resolved (realpath) inside the extraction folder before it is opened, never following a link.
- Only image files are written (other and hidden members are skipped unread), and the bytes written
  are capped relative to the archive's size (`max_extracted_bytes`), so a small archive cannot fill
  the disk.
- A cache is whole or absent. Extraction runs under a lock file (`fcntl.flock`: the kernel releases
  it when its process dies, whatever the PID namespace or host sharing the volume), into a fresh
  hidden folder renamed into place only when complete, with a manifest of every file and its size.
  A cache is reused only when its manifest matches the files on disk; otherwise it is extracted
  again. Partial folders whose lock no process holds are removed.
"""

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
import warnings
import zipfile
import zlib

try:
    import fcntl
except ImportError:  # Windows: no flock; extractions there are not serialized between processes
    fcntl = None

# Flags that do not exist everywhere (O_NOFOLLOW and O_CLOEXEC are POSIX).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

DEFAULT_CACHE_ENV = "TF_TRADYX_CACHE"
# What keras.utils.image_dataset_from_directory reads (and tf.io.decode_image decodes).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# Default cap on the bytes an extraction writes: this many times the archive's size, and at least
# MIN_EXTRACTED_BYTES. JPEG and PNG do not compress further, so a dataset archive expands by about
# 1x; gzip can reach 1000x on crafted data. Each file and folder is also charged _ENTRY bytes (a tar
# header's size), so that a flood of empty files counts too.
MAX_EXPANSION = 20
MIN_EXTRACTED_BYTES = 64 << 20
_ENTRY = 512
MANIFEST = ".tf_tradyx-manifest.json"
_MANIFEST_FORMAT = 2
STALE_SECONDS = 24 * 3600  # a partial folder of an older version (no lock) this old is dead
_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


class ArchiveError(ValueError):
    """An archive that cannot be trusted or read (bad checksum, truncated, links, too large).

    Raised by `extract`, and so by `from_folder` and `train_test` given an archive, before
    anything is written to the cache. A subclass of `ValueError`.

    Examples:
      >>> import tarfile, tempfile
      >>> tmp = tempfile.TemporaryDirectory()
      >>> archive = os.path.join(tmp.name, "data.tar.gz")
      >>> with tarfile.open(archive, "w:gz") as tar:
      ...     tar.add(tmp.name, arcname="data", recursive=False)
      >>> tx.data.extract(archive, sha256="0" * 64, cache_dir=tmp.name)
      Traceback (most recent call last):
      ...
      tf_tradyx.data.archive.ArchiveError: Archive '...' has sha256 ..., expected 000...
      >>> tmp.cleanup()
    """


def cache_root(cache_dir=None):
    """The cache directory: `cache_dir`, else $TF_TRADYX_CACHE, else ~/.cache/tf_tradyx."""
    root = (
        cache_dir
        or os.environ.get(DEFAULT_CACHE_ENV)
        or os.path.join(os.path.expanduser("~"), ".cache", "tf_tradyx")
    )
    os.makedirs(root, exist_ok=True)
    return root


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_key(path):
    """Identity of an archive file: its absolute path, size and modification time."""
    st = os.stat(path)
    ident = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()
    return hashlib.sha256(ident).hexdigest()[:16]


def cache_paths(path, cache_dir=None):
    """(cache folder, lock file) of the archive at `path`: `<cache>/extracted/<name>-<key>` and
    `<cache>/locks/<name>-<key>.lock`, the key naming this version of the file."""
    base = os.path.basename(path)
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    root = cache_root(cache_dir)
    name = f"{base}-{_cache_key(path)}"
    return os.path.join(root, "extracted", name), os.path.join(root, "locks", f"{name}.lock")


@contextlib.contextmanager
def locked(lock_path, blocking=True):
    """Holds an exclusive `flock` on `lock_path` (created if missing) inside the block, yielding
    whether it was acquired (always True when `blocking`). The kernel drops it with its process."""
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o644)
    try:
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            acquired = True
        except BlockingIOError:
            acquired = False
        yield acquired
    finally:
        os.close(fd)  # releases the lock


def clean_stale_partials(folder, held=None):
    """Removes half-extracted folders that no extraction owns any more: those whose lock file no
    process holds (or whose lock this process holds, for cache name `held`: they are its own dead
    attempts) and, from older versions or without flock (Windows), those untouched for a day."""
    locks = os.path.join(os.path.dirname(folder), "locks")
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if not entry.startswith(".") or "partial" not in entry or not os.path.isdir(path):
            continue
        if ".partial-" in entry and fcntl is not None:
            name = entry[1:].rsplit(".partial-", 1)[0]
            if name == held:
                shutil.rmtree(path, ignore_errors=True)
                continue
            with locked(os.path.join(locks, f"{name}.lock"), blocking=False) as free:
                if free:
                    shutil.rmtree(path, ignore_errors=True)
        elif time.time() - os.path.getmtime(path) > STALE_SECONDS:
            shutil.rmtree(path, ignore_errors=True)


def valid_manifest(folder):
    """The manifest of an extracted folder when every file it lists is on disk, a regular file of
    the listed size; None otherwise (missing, older format, or files lost or truncated)."""
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if manifest.get("format") != _MANIFEST_FORMAT or not isinstance(files, dict):
        return None
    if manifest.get("count") != len(files):
        return None
    for rel, size in files.items():
        try:
            st = os.lstat(os.path.join(folder, rel))
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return None
    return manifest


def _write_manifest(folder, manifest):
    tmp = os.path.join(folder, f"{MANIFEST}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, MANIFEST))


def extract(path, sha256=None, cache_dir=None, *, max_extracted_bytes=None):
    """Returns a directory holding the image files and folders of the archive at `path`.

    The first call verifies `sha256` (if given) and extracts; later calls reuse the cache after
    checking its manifest (every file present with its size), and extract again when it fails.

    Args:
      path: a `.tar.gz`, `.tgz`, `.tar` (also bz2/xz) or `.zip` file.
      sha256: optional hex checksum of the archive, verified before it is used.
      cache_dir: where to extract (default $TF_TRADYX_CACHE or ~/.cache/tf_tradyx).
      max_extracted_bytes: refuse the archive when extracting it would write more bytes than this
        (each file and folder counted 512 bytes more than its size). Default: `MAX_EXPANSION` times the archive's
        size, at least `MIN_EXTRACTED_BYTES`. Raise it for an archive you trust that compresses
        very well (uncompressed BMPs, say).

    Returns:
      str: the cache folder (under `<cache>/extracted/`).

    Raises:
      FileNotFoundError: `path` is not a file.
      ArchiveError: a wrong checksum, an unreadable archive, a member that is a link, device or
        FIFO or that would land outside the folder, or more bytes than `max_extracted_bytes`.

    Examples:
      >>> import tempfile
      >>> import tensorflow as tf
      >>> tmp = tempfile.TemporaryDirectory()
      >>> for split in ("train", "test"):
      ...     for label, name in enumerate(["cat", "dog"]):
      ...         os.makedirs(os.path.join(tmp.name, split, name))
      ...         for i in range(2):
      ...             png = tf.io.encode_png(np.full((8, 8, 3), 100 * label + i, np.uint8))
      ...             tf.io.write_file(os.path.join(tmp.name, split, name, f"{i}.png"), png)
      >>> import tarfile
      >>> archive = os.path.join(tmp.name, "pets.tar.gz")
      >>> with tarfile.open(archive, "w:gz") as tar:
      ...     tar.add(os.path.join(tmp.name, "train"), arcname="pets/train")
      >>> folder = tx.data.extract(archive, cache_dir=os.path.join(tmp.name, "cache"))
      >>> sorted(os.listdir(os.path.join(folder, "pets", "train", "dog")))
      ['0.png', '1.png']
      >>> tx.data.extract(archive, cache_dir=os.path.join(tmp.name, "cache")) == folder  # cached
      True
      >>> tmp.cleanup()
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Archive {path!r} does not exist. Pass the path of a .tar.gz or .zip in the "
            "class-folder layout root/<split>/<class>/*.jpg, or a directory with that layout."
        )
    final, lock = cache_paths(path, cache_dir)
    want = sha256.lower() if sha256 is not None else None
    manifest = valid_manifest(final)  # a complete cache needs no lock: it only ever appears whole
    if manifest is not None and (want is None or manifest.get("sha256") == want):
        return final
    with locked(lock):
        manifest = valid_manifest(final)  # another process may have finished while we waited
        if manifest is not None and (want is None or manifest.get("sha256") == want):
            return final
        actual = sha256_of(path) if want is not None else None
        if actual != want:
            raise ArchiveError(
                f"Archive {path!r} has sha256 {actual}, expected {sha256}. The file is corrupt or "
                "a different version: download or copy it again."
            )
        if manifest is not None:  # Extracted earlier without a checksum; now verified.
            _write_manifest(final, {**manifest, "sha256": actual})
            return final
        folder, name = os.path.split(final)
        os.makedirs(folder, exist_ok=True)
        clean_stale_partials(folder, held=name)
        if os.path.lexists(final):  # incomplete, damaged, or written by an older version
            aside = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=folder)
            os.rename(final, os.path.join(aside, "old"))
            shutil.rmtree(aside, ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=folder)
        try:
            manifest = _extract_into(path, tmp, max_extracted_bytes)
            st = os.stat(path)
            manifest.update(archive_bytes=st.st_size, archive_mtime_ns=st.st_mtime_ns)
            manifest["sha256"] = actual
            _write_manifest(tmp, manifest)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _refuse(path, member, what, detail=""):
    raise ArchiveError(
        f"Archive {path!r} holds {what} {member!r}{detail}. An image dataset needs only folders "
        "and image files, and links, devices or names leading out of the folder can write "
        "outside the cache (CVE-2025-4517) or hang a reader, so the archive is refused whole. "
        "Re-create it from the image files themselves (tar --dereference follows links)."
    )


_TAR_KINDS = (
    (tarfile.TarInfo.issym, "a symbolic link"),
    (tarfile.TarInfo.islnk, "a hard link"),
    (tarfile.TarInfo.ischr, "a character device"),
    (tarfile.TarInfo.isblk, "a block device"),
    (tarfile.TarInfo.isfifo, "a FIFO"),
)


def _tar_members(path, tar):
    """Yields (name, is_dir, declared size, opener) per member; refuses anything else."""
    for info in tar:
        if info.isreg():
            yield info.name, False, info.size, (lambda info=info: tar.extractfile(info))
        elif info.isdir():
            yield info.name, True, 0, None
        else:
            what = next(
                (w for test, w in _TAR_KINDS if test(info)), f"a member of type {info.type!r}"
            )
            _refuse(path, info.name, what, f" -> {info.linkname!r}" if info.linkname else "")


_ZIP_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _zip_members(path, archive):
    for info in archive.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            _refuse(path, info.filename, _ZIP_KINDS.get(kind, f"a member of file type {kind:o}"))
        if info.flag_bits & 0x1:
            raise ArchiveError(
                f"Archive {path!r} holds an encrypted member {info.filename!r}; "
                "decrypt the archive first."
            )
        if info.is_dir() or kind == stat.S_IFDIR:
            yield info.filename, True, 0, None
        else:
            yield info.filename, False, info.file_size, (lambda info=info: archive.open(info))


def _parts(path, name):
    """The path components of member `name` inside the extraction folder; refuses absolute names
    and names with '..'. Backslashes count as separators, as Windows tools write them."""
    if "\0" in name:
        _refuse(path, name, "a name with a NUL byte")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        _refuse(path, name, "an absolute name")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        _refuse(path, name, "a name leading outside the folder")
    return parts


def _extract_into(path, dest, max_extracted_bytes):
    """Writes the image members of the archive into `dest`; returns the manifest's file list."""
    size = os.path.getsize(path)
    cap = max_extracted_bytes or max(MAX_EXPANSION * size, MIN_EXTRACTED_BYTES)
    with open(path, "rb") as f:
        is_zip = f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    try:
        with contextlib.ExitStack() as stack:
            if is_zip:
                members = _zip_members(path, stack.enter_context(zipfile.ZipFile(path)))
            else:
                members = _tar_members(path, stack.enter_context(tarfile.open(path, "r:*")))
            return _write_members(path, dest, members, cap, size)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        if isinstance(e, ArchiveError):
            raise
        raise ArchiveError(
            f"Could not extract {path!r} ({type(e).__name__}: {e}). The archive is truncated or "
            "not a .tar.gz/.zip; copy it again (and pass sha256= to verify it)."
        ) from e


def _write_members(path, dest, members, cap, archive_size):
    root = os.path.realpath(dest)
    checked = {root}  # folders known to resolve inside root
    files, used, skipped = {}, 0, []

    def charge(nbytes, member):
        nonlocal used
        used += nbytes + _ENTRY
        if used > cap:
            raise ArchiveError(
                f"Extracting {path!r} would write more than max_extracted_bytes={cap:,} bytes "
                f"(reached at member {member!r}), {cap / max(archive_size, 1):.0f}x the archive's "
                f"{archive_size:,} bytes: a decompression bomb, or images that compress unusually "
                "well. If you trust the archive, pass a larger max_extracted_bytes= (from_folder "
                "and extract take it)."
            )

    def folder_for(parts, member):
        folder = os.path.join(root, *parts)
        if folder not in checked:
            os.makedirs(folder, mode=0o755, exist_ok=True)
            real = os.path.realpath(folder)
            if real != folder or not real.startswith(root + os.sep):
                _refuse(path, member, "a name leading outside the folder")
            checked.add(folder)
            charge(0, member)
        return folder

    for name, is_dir, declared, opener in members:
        parts = _parts(path, name)
        if not parts or any(p.startswith(".") for p in parts):
            continue  # the root itself, or hidden entries (._x.jpg from macOS), never read
        if is_dir:
            folder_for(parts, name)
            continue
        if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            skipped.append(name)
            continue
        charge(declared, name)
        target = os.path.join(folder_for(parts[:-1], name), parts[-1])
        rel = "/".join(parts)
        if rel in files:  # a later copy of a member wins, as with tar
            os.unlink(target)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        written = 0
        with opener() as src, os.fdopen(os.open(target, flags, 0o644), "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                written += len(block)
                if written > declared:  # more than the header said (sparse files): count it
                    charge(min(len(block), written - declared) - _ENTRY, name)
                out.write(block)
        files[rel] = written
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} member(s) of {path!r} that are not images "
            f"({', '.join(map(repr, skipped[:5]))}{', ...' if len(skipped) > 5 else ''}): only "
            f"{', '.join(IMAGE_EXTENSIONS)} files are extracted.",
            stacklevel=4,
        )
    return {
        "format": _MANIFEST_FORMAT,
        "count": len(files),
        "files": files,
        "skipped": len(skipped),
    }
