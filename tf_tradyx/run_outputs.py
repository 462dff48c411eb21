"""The output folder of one scripted run: checked before any work, written all at once at the end.

A run that takes hours must not fail at the end because `--out` names a file, and a run that dies
(a full disk, Ctrl-C, an error) must not leave a truncated `report.json` or mix its new plot with
the previous run's report. So every output is written to a hidden staging file beside its final
name, and only `commit` (the end of a successful run) renames them into place, each rename atomic;
outputs of an earlier run that this run does not write again are removed then, so the folder holds
one run's outputs together.

    with RunOutputs(flags.out, names=["report.json", "density.png"]) as out:
        ...                                            # hours of work
        out.write_json("report.json", result)
        figure.savefig(out.path("density.png"))        # any writer: write to out.path(name)
"""

import json
import os
import tempfile


class RunOutputs:
    """Staged outputs of one run in `folder`; `names` are every file a run of this kind writes."""

    def __init__(self, folder, names):
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"--out {folder!r} is a file; give a directory for the run's outputs.")
        try:
            os.makedirs(folder, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-", delete=True)
            probe.close()
        except OSError as e:
            raise ValueError(f"Cannot write into --out {folder!r}: {e.strerror or e}.") from None
        self.folder = folder
        self.names = list(names)
        self._staged = {}

    def path(self, name):
        """Where to write output `name` now; it reaches its final place at `commit`."""
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of this run's outputs {self.names}.")
        if name not in self._staged:
            stem, ext = os.path.splitext(name)  # keep the extension: writers infer the format
            self._staged[name] = os.path.join(self.folder, f".{stem}.{os.getpid()}.partial{ext}")
        return self._staged[name]

    def final_path(self, name):
        return os.path.join(self.folder, name)

    def write_json(self, name, payload):
        with open(self.path(name), "w") as f:
            json.dump(payload, f, indent=1)
            f.flush()
            os.fsync(f.fileno())

    def commit(self):
        """Renames every staged output into place; removes earlier runs' outputs not rewritten."""
        for name, staged in self._staged.items():
            if not os.path.exists(staged):
                raise FileNotFoundError(f"Output {name!r} was announced but never written.")
        for name, staged in self._staged.items():
            os.replace(staged, self.final_path(name))
        for name in self.names:
            if name not in self._staged and os.path.exists(self.final_path(name)):
                os.remove(self.final_path(name))
        self._staged = {}

    def discard(self):
        """Removes the staged files; the previous run's outputs stay as they were."""
        for staged in self._staged.values():
            if os.path.exists(staged):
                os.remove(staged)
        self._staged = {}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False
