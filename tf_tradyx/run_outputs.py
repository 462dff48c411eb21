"""The output folder of one scripted run: checked before any work, committed in one step at the end.

Why: a run that takes hours must not fail at the end because `--out` names a file, and a run that
dies (a full disk, Ctrl-C, SIGKILL) must not leave a truncated `report.json`, or the new run's plot
beside the old run's report. `--out` is also often a folder that holds other things, some of them
named by the run's own flags (`--layers_from=out/ranking.json`): it stays a plain folder of plain
files, and a run touches only the output names it announces.

How (the design choice): outputs are written into a hidden staging folder `out/.tf_tradyx-run-*/`.
The commit point is one atomic rename of that folder to `out/.tf_tradyx-commit-*/`, once its files
and a journal (names to write, names to remove) are on disk. Before it, the previous run's outputs
are untouched; after it, the run is committed, and the commit is finished by moving files: every
output of the previous run is removed first, then the new ones are renamed in, so a kill at any
moment leaves files of one run only (some of the old or some of the new, never a mix), and the
next `RunOutputs` on the folder rolls the committed run forward to the whole new set. Alternatives
rejected: swapping the whole `--out` folder would move the user's other files and fails for
`--out=.` or a mount point; per-name symlinks into a swapped run folder make the outputs links,
which break on `mv` and enter git as links.

Outputs of an earlier run that this run does not write are removed at the commit, except a file a
flag names (`inputs`): the run read it, so it stays, and a run that would overwrite one is refused.
A run in progress holds an `flock` on a file in its staging folder; staging folders whose lock no
process holds belong to killed runs and are removed, as are older versions' `.partial` files.
Commits, roll-forwards and clean-ups in one folder are serialized by an `flock` on the folder.

    with RunOutputs(flags.out, names=["report.json", "density.png"]) as out:
        ...                                            # hours of work
        out.write_json("report.json", result)
        figure.savefig(out.path("density.png"))        # any writer: write to out.path(name)
"""

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
import time

try:
    import fcntl
except ImportError:  # Windows: no flock; see _owner_alive and _folder_lock
    fcntl = None

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_STALE_SECONDS = 24 * 3600  # without flock, a staging folder this old is taken for dead

_STAGING = ".tf_tradyx-run-"
_COMMITTED = ".tf_tradyx-commit-"
_RUN_LOCK = ".lock"
_JOURNAL = ".journal.json"
# Staging files of versions before the one-step commit: .report.4242.partial.json
_OLD_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.\d+\.partial(?P<ext>\.[^.]*)?$")


def _fsync(path, directory=False):
    try:
        fd = os.open(path, (os.O_RDONLY if directory else os.O_RDWR) | _CLOEXEC)
    except OSError:
        if directory:  # folders cannot be opened on Windows; their entries are durable there
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _folder_lock(folder):
    """Serializes commits, roll-forwards and clean-ups in `folder`: an `flock` on the folder itself
    (nothing left behind) or, where the filesystem refuses that (NFS), on a hidden lock file.
    Without flock (Windows) runs sharing one --out are not serialized."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY | _CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        lock_file = os.path.join(folder, ".tf_tradyx.lock")
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            raise
    try:
        yield
    finally:
        os.close(fd)


def _owner_alive(run_dir):
    """Whether the process that made a staging folder still runs: it holds the folder's lock.
    Without flock (Windows), a staging folder is taken for dead only after a day."""
    lock = os.path.join(run_dir, _RUN_LOCK)
    if fcntl is None:
        with contextlib.suppress(OSError):
            return time.time() - os.path.getmtime(lock) < _STALE_SECONDS
        return False
    try:
        fd = os.open(lock, os.O_RDWR | _CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _finish(folder, committed):
    """Completes a commit: removes the previous outputs, then moves the new ones in. Idempotent,
    so a commit killed half-way is finished by running this again."""
    try:
        with open(os.path.join(committed, _JOURNAL)) as f:
            journal = json.load(f)
    except (OSError, ValueError):  # not committed after all (the journal comes first)
        shutil.rmtree(committed, ignore_errors=True)
        return
    pending = [n for n in journal["write"] if os.path.lexists(os.path.join(committed, n))]
    for name in pending + journal["remove"]:
        target = os.path.join(folder, name)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                os.unlink(target)
    for name in pending:
        os.rename(os.path.join(committed, name), os.path.join(folder, name))
    _fsync(folder, directory=True)
    shutil.rmtree(committed, ignore_errors=True)


def _recover(folder, names):
    """Under the folder lock: finishes commits of killed runs (oldest first), removes staging
    folders of killed runs and older versions' partial files of these output names."""
    committed = []
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if entry.startswith((_STAGING, _COMMITTED)) and os.path.isdir(path):
            if _owner_alive(path):
                continue
            if entry.startswith(_COMMITTED):
                committed.append(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
            continue
        old = _OLD_PARTIAL.match(entry)
        if old and f"{old['stem']}{old['ext'] or ''}" in names and os.path.isfile(path):
            os.unlink(path)
    for path in sorted(committed, key=_journal_time):
        _finish(folder, path)


def _journal_time(committed):
    try:
        with open(os.path.join(committed, _JOURNAL)) as f:
            return json.load(f)["time_ns"]
    except (OSError, ValueError, KeyError):
        return 0


def _missing_parents(folder):
    """The folders, deepest first, that creating `folder` makes: removed again if the run fails."""
    missing, path = [], os.path.abspath(folder)
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


class RunOutputs:
    """Staged outputs of one run in `folder`, committed in one step at the end.

    Args:
      folder: the output folder (`--out`); created if missing, and removed again when a run that
        created it fails before writing anything there.
      names: every file name a run of this kind may write (plain names, no folders).
      inputs: files the run reads, as {flag: path} (or paths): never removed by the commit, and a
        run that would overwrite one is refused.

    Raises:
      ValueError: `folder` is a file or not writable, or an output name is a folder there.
    """

    def __init__(self, folder, names, inputs=None):
        folder = os.fspath(folder)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"--out {folder!r} is a file; give a directory for the run's outputs.")
        self.folder = folder
        self.names = list(names)
        for name in self.names:
            if not name or os.path.basename(name) != name or name.startswith("."):
                raise ValueError(f"Output name {name!r} must be a plain, visible file name.")
        if inputs is not None and not isinstance(inputs, dict):
            inputs = {os.fspath(p): p for p in inputs}
        self._inputs = {}
        for flag, path in (inputs or {}).items():
            ident = _identity(os.fspath(path)) if path else None
            if ident is not None:
                self._inputs[ident] = flag
        self._announced = set()
        self._created = _missing_parents(folder)
        self._lock_fd = None
        self._staging = None
        try:
            os.makedirs(folder, exist_ok=True)
            for name in self.names:
                if os.path.isdir(self.final_path(name)):
                    raise ValueError(
                        f"{self.final_path(name)!r} is a folder where this run writes a file; "
                        "rename it or pass another --out."
                    )
            with _folder_lock(folder):
                _recover(folder, self.names)
                self._staging = tempfile.mkdtemp(prefix=_STAGING, dir=folder)
                self._lock_fd = os.open(
                    os.path.join(self._staging, _RUN_LOCK),
                    os.O_RDWR | os.O_CREAT | _CLOEXEC,
                    0o644,
                )
                if fcntl is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as e:
            self.discard()
            raise ValueError(f"Cannot write into --out {folder!r}: {e.strerror or e}.") from None
        except BaseException:
            self.discard()
            raise

    def _input_flag(self, path):
        return self._inputs.get(_identity(path))

    def path(self, name):
        """Where to write output `name` now; it reaches its final place at `commit`."""
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of this run's outputs {self.names}.")
        if self._staging is None:
            raise ValueError("This run's outputs were already committed or discarded.")
        flag = self._input_flag(self.final_path(name))
        if flag is not None:
            raise ValueError(
                f"{flag} names {self.final_path(name)!r}, which this run would overwrite with its "
                f"own {name}. Pass another --out, or copy the file elsewhere and point {flag} there."
            )
        self._announced.add(name)
        return os.path.join(self._staging, name)

    def final_path(self, name):
        return os.path.join(self.folder, name)

    def write_json(self, name, payload):
        with open(self.path(name), "w") as f:
            json.dump(payload, f, indent=1)
            f.flush()
            os.fsync(f.fileno())

    def commit(self):
        """Puts every written output in place in one step; removes earlier runs' outputs that
        this run does not write, unless a flag names them.

        Raises:
          FileNotFoundError: an output was announced (`path`) but never written.
        """
        for name in sorted(self._announced):
            if not os.path.isfile(os.path.join(self._staging, name)):
                raise FileNotFoundError(f"Output {name!r} was announced but never written.")
        with _folder_lock(self.folder):
            _recover(self.folder, self.names)  # finish killed runs' commits before this one
            write = sorted(self._announced)
            remove = [
                n
                for n in self.names
                if n not in self._announced
                and os.path.lexists(self.final_path(n))
                and self._input_flag(self.final_path(n)) is None
            ]
            for name in write:
                _fsync(os.path.join(self._staging, name))
            journal = {"time_ns": time.time_ns(), "write": write, "remove": remove}
            with open(os.path.join(self._staging, _JOURNAL), "w") as f:
                json.dump(journal, f)
                f.flush()
                os.fsync(f.fileno())
            _fsync(self._staging, directory=True)
            committed = os.path.join(
                self.folder, _COMMITTED + os.path.basename(self._staging)[len(_STAGING) :]
            )
            os.rename(self._staging, committed)  # the commit point
            self._staging = None
            _finish(self.folder, committed)
        self._release()

    def discard(self):
        """Removes the staged files (the previous run's outputs stay as they were), and the
        output folder if this run created it and nothing else is in it."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self._release()
        for path in self._created:  # deepest first
            try:
                os.rmdir(path)
            except OSError:
                break

    def _release(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()
        return False
