"""Extract a `.tar.gz` archive once into a cache directory, atomically.

Why: archives such as `cifar10-jpeg.tar.gz` hold tens of thousands of small files; reading them from a
directory is fast, re-extracting them every run is not. Extraction goes to a temporary sibling folder
that is renamed into place only when complete, so a crash or a bad archive never leaves a half cache.
"""

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import time

DEFAULT_CACHE_ENV = "TF_TRADYX_CACHE"


class ArchiveError(ValueError):
    """An archive that cannot be trusted or read (bad checksum, truncated, not a tar.gz)."""


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


_PARTIAL = re.compile(r"^\..+-partial-(\d+)-[^-]+$")
STALE_SECONDS = 24 * 3600  # a partial folder without a live owner this old is certainly dead


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_partials(folder):
    """Removes half-extracted folders left by killed extractions: those whose process is gone
    (the name holds its pid) and, from older versions without a pid, those untouched for a day."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not name.startswith(".") or "-partial-" not in name or not os.path.isdir(path):
            continue
        match = _PARTIAL.match(name)
        if match:
            stale = not _alive(int(match.group(1)))
        else:
            stale = time.time() - os.path.getmtime(path) > STALE_SECONDS
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def extract(path, sha256=None, cache_dir=None):
    """Returns a directory holding the extracted contents of the archive at `path`.

    The first call verifies `sha256` (if given) and extracts; later calls reuse the cache.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Archive {path!r} does not exist. Pass the path of a .tar.gz in the class-folder layout "
            "root/<split>/<class>/*.jpg, or a directory with that layout."
        )
    base = os.path.basename(path)
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    root = cache_root(cache_dir)
    final = os.path.join(root, "extracted", f"{base}-{_cache_key(path)}")
    marker = os.path.join(final, ".sha256")
    if os.path.isdir(final):
        if sha256 is None:
            return final
        if os.path.exists(marker):
            with open(marker) as f:
                if f.read().strip() == sha256.lower():
                    return final
    actual = sha256_of(path) if sha256 is not None else None
    if sha256 is not None and actual != sha256.lower():
        raise ArchiveError(
            f"Archive {path!r} has sha256 {actual}, expected {sha256}. The file is corrupt or a "
            "different version: download or copy it again."
        )
    if os.path.isdir(final):  # Extracted earlier without a checksum; now verified.
        with open(marker, "w") as f:
            f.write(actual)
        return final
    os.makedirs(os.path.dirname(final), exist_ok=True)
    clean_stale_partials(os.path.dirname(final))
    tmp = tempfile.mkdtemp(prefix=f".{base}-partial-{os.getpid()}-", dir=os.path.dirname(final))
    try:
        try:
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(tmp, filter="data")
            if actual is not None:
                with open(os.path.join(tmp, ".sha256"), "w") as f:
                    f.write(actual)
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise ArchiveError(
                f"Could not extract {path!r} ({type(e).__name__}: {e}). The archive is truncated or "
                "not a tar.gz; copy it again (and pass sha256= to verify it)."
            ) from e
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):  # Lost no race: a real failure.
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # Another process finished first.
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
